import datetime
import secrets
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from trialsite.audit import audit_context
from trialsite.models import Role, Site, StaffRole, Trial

# Development logins only: the command refuses to run with DEBUG off.
DEMO_PASSWORD = "demo-password-2026"
DEMO_USERS = [
    ("coordinator", Role.COORDINATOR, "Li Na"),
    ("pharmacist", Role.PHARMACIST, "Wang Fang"),
    ("investigator", Role.INVESTIGATOR, "Bo You"),
    ("monitor", Role.MONITOR, "Zhang Wei"),
    ("statistician", Role.STATISTICIAN, "Chen Jing"),
    ("supply", Role.SUPPLY_MANAGER, "Liu Yang"),
    ("dsmb", Role.DSMB, "Gao Yan"),
    ("safetyofficer", Role.SPONSOR_SAFETY, "Zhou Jie"),
]
# The demo's hospital record numbers start with this; finding one at a trial's site means that
# trial's demo is loaded.
DEMO_RECORD_PREFIX = "DEMO"
DEMO_PACKAGING_LOT = "DEMO-PL-1"
DEMO_SLOTS_PER_STRATUM = 200
DEMO_KITS_PER_TYPE = 40  # half of each content, per kit type
DEMO_CONSENT_VERSION = "2.1"

# (record number, initials, date of birth, sex, what happens next). The answers and the
# stratification come from each trial's protocol; the same record numbers in every trial (they are
# unique per site), so DEMO0002 is the one ready to randomize wherever it is.
DEMO_PATIENTS = [
    ("DEMO0001", "WJ", datetime.date(1968, 4, 12), "M", "eligible"),
    ("DEMO0002", "ZL", datetime.date(1975, 9, 3), "F", "signed"),
    ("DEMO0003", "HM", datetime.date(1962, 1, 27), "M", "randomized"),
    ("DEMO0004", "QY", datetime.date(1959, 11, 8), "F", "screen failure"),
]
STAGE_WORDS = {
    "eligible": "eligible, waiting for the PI's eligibility signature",
    "signed": "eligible and signed by the PI: ready to randomize",
    "unsigned": "eligible: ready to randomize (the protocol asks for no PI signature)",
    "screen failure": "screen failure ({reason}), not a participant",
}


def _in_words(text: str) -> str:
    """A criterion's text inside a sentence: "Liver disease" -> "liver disease", "ECOG ..." kept."""
    return text if text[:2].isupper() else text[:1].lower() + text[1:]


class Command(BaseCommand):
    help = (
        "Create one demo user per role at the first site of every loaded trial and, unless --empty, "
        "a demo in each trial ready for the coordinator's day, from its protocol alone: a locked demo "
        "randomization list, kits received at the site and participants at different stages "
        "(development only; running it again adds nothing)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--empty", action="store_true", help="Users only: no list, kits or participants.")

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("Demo users are for development; DEBUG is off.")
        site = Site.objects.select_related("trial").order_by("id").first()
        if site is None:
            raise CommandError("Load a protocol first: manage.py load_protocol")
        demo_sites = [(site, self._users(site))]
        for username, role, _ in DEMO_USERS:
            self.stdout.write(f"  {username:<13} {DEMO_PASSWORD}   {Role(role).label} at {site.code}")
        # Every other loaded trial: the same people hold the same roles at its first site, so the
        # demo shows working in several trials (each at /t/<NCT id>/, chosen at /trials/).
        for other in Trial.objects.exclude(pk=site.trial_id).order_by("nct_id"):
            other_site = other.sites.select_related("trial").order_by("code").first()
            if other_site is not None:
                demo_sites.append((other_site, self._users(other_site)))
                self.stdout.write(f"  the same logins also work in {other.nct_id} at {other_site.code}")
        if options["empty"]:
            self.stdout.write("  (--empty: no demo list, kits or participants)")
            return
        for demo_site, users in demo_sites:
            self._demo(demo_site, users)

    def _demo(self, site, users) -> None:
        """One trial's demo at its first site; a trial whose demo is there already is left alone."""
        from enrollment.models import Screening

        trial = site.trial
        self.stdout.write(f"  demo data in {trial.nct_id} at {site.code}:")
        if Screening.objects.filter(site__trial=trial, hospital_record_number__startswith=DEMO_RECORD_PREFIX).exists():
            self.stdout.write("  demo data already loaded: nothing added")
            return
        with transaction.atomic():
            self._randomization_list(trial, users["statistician"])
            self._kits(site, users["supply"], users["pharmacist"])
            self._participants(site, users)

    def _users(self, site) -> dict:
        User = get_user_model()
        users = {}
        with audit_context(reason="Demo users for development"), transaction.atomic():
            for username, role, full_name in DEMO_USERS:
                first_name, last_name = full_name.split(" ", 1)
                user, created = User.objects.get_or_create(
                    username=username,
                    defaults={"first_name": first_name, "last_name": last_name, "email": f"{username}@localhost"},
                )
                if created:
                    user.set_password(DEMO_PASSWORD)
                    user.save()
                StaffRole.objects.get_or_create(user=user, site=site, role=role)
                users[username] = user
        return users

    def _randomization_list(self, trial, statistician) -> None:
        from randomization import methods, services
        from randomization.models import RandomizationList

        active = RandomizationList.objects.filter(trial=trial, is_active=True).first()
        if active is not None:
            self.stdout.write(f"  randomization list v{active.version} is already locked: kept")
            return
        seed = f"DEMO-ONLY-{secrets.token_hex(8)}"
        # Minimization keeps only the seed: each allocation adds its slot when it is made.
        slots = DEMO_SLOTS_PER_STRATUM if methods.method_for(trial).pre_generates_slots else None
        created = services.list_generate(
            trial=trial,
            seed=seed,
            slots_per_stratum=slots,
            created_by=statistician,
            reason="" if not RandomizationList.objects.filter(trial=trial).exists() else "Demo list",
        )
        services.list_lock(randomization_list=created, locked_by=statistician, password=DEMO_PASSWORD)
        self.stdout.write(
            f"  randomization list v{created.version} generated and locked from seed {seed}: "
            "a DEMO seed, printed here for the demo only; never use it (or this list) for a real trial"
        )

    def _kits(self, site, supply, pharmacist) -> None:
        from dosing import services
        from dosing.models import Kit, KitStatus

        trial = site.trial
        contents = services.kit_contents_by_type(trial)
        if not trial.protocol.kit_types or not contents:
            self.stdout.write("  no kit types in the protocol: no kits")
            return
        if Kit.objects.filter(site=site, status=KitStatus.AT_SITE).exists():
            self.stdout.write("  kits are already at the site: none added")
            return
        expiry = timezone.localdate() + datetime.timedelta(days=730)
        lots = {
            (kit_type, content): (f"DEMO-{kit_type}-{content[:3].upper()}", expiry)
            for kit_type, kit_contents in contents.items()
            for content in kit_contents
        }
        if not Kit.objects.filter(trial=trial, packaging_lot=DEMO_PACKAGING_LOT).exists():
            services.kit_list_generate(
                trial=trial,
                packaging_lot=DEMO_PACKAGING_LOT,
                kits_per_type=DEMO_KITS_PER_TYPE,
                lots=lots,
                created_by=supply,
            )
        per_content = trial.protocol.kits.resupply_target
        shipment = services.shipment_create(
            site=site, per_content={kit_type: per_content for kit_type in sorted(contents)}, shipped_by=supply
        )
        services.shipment_receive(shipment=shipment, received_by=pharmacist)
        self.stdout.write(
            f"  kit list {DEMO_PACKAGING_LOT} generated; {per_content} kits of each content of "
            f"{', '.join(sorted(contents))} shipped to {site.code} and received"
        )

    def _participants(self, site, users) -> None:
        from enrollment import services as enrollment_services

        protocol = site.trial.protocol
        today = timezone.localdate(timezone=site.zone)
        coordinator, investigator = users["coordinator"], users["investigator"]
        signature_required = protocol.randomization.require_eligibility_signature
        all_good = {c.code: "yes" if c.kind == "inclusion" else "no" for c in protocol.eligibility.criteria}
        failed_by = next((c for c in protocol.eligibility.criteria if c.kind == "exclusion"), None)
        factors = protocol.randomization.factors
        for number, (record_number, initials, born, sex, stage) in enumerate(DEMO_PATIENTS):
            if stage == "eligible" and not signature_required:
                continue  # nobody waits for a signature the protocol does not ask for
            if stage == "screen failure" and failed_by is None:
                self.stdout.write("  no exclusion criterion in the protocol: no screen failure")
                continue
            answers = {**all_good, failed_by.code: "yes"} if stage == "screen failure" else all_good
            screening = enrollment_services.screening_create(
                site=site,
                screened_by=coordinator,
                initials=initials,
                date_of_birth=self._born(protocol, born, today),
                sex=sex,
                hospital_record_number=record_number,
                screening_date=today,
                consent_version=DEMO_CONSENT_VERSION,
                consent_date=today,
                answers=answers,
                # Every factor's levels in turn, so the strata (or the minimization) have some spread.
                stratification={f.code: f.levels[number % len(f.levels)] for f in factors},
            )
            participant = getattr(screening, "participant", None)
            if stage in ("signed", "randomized") and signature_required:
                enrollment_services.eligibility_sign(
                    participant=participant, signer=investigator, password=DEMO_PASSWORD
                )
            if stage == "randomized":
                self._randomize_and_dose(participant, coordinator, today)
            elif stage == "screen failure":
                reason = f"{failed_by.code} {_in_words(failed_by.text)}"
                self.stdout.write(f"  {record_number}: {STAGE_WORDS[stage].format(reason=reason)}")
            else:
                words = STAGE_WORDS["unsigned" if stage == "signed" and not signature_required else stage]
                self.stdout.write(f"  {participant.screening_number}: {words}")

    @staticmethod
    def _born(protocol, born: datetime.date, today: datetime.date) -> datetime.date:
        """The demo's date of birth when it is within the protocol's ages; otherwise the same day of
        the year at the middle of the range, so the demo patients are eligible by age in any trial."""
        rules = protocol.eligibility
        age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
        if rules.minimum_age_years <= age <= rules.maximum_age_years:
            return born
        middle = (rules.minimum_age_years + rules.maximum_age_years) // 2
        return born.replace(year=today.year - middle - 1, day=min(born.day, 28))

    def _randomize_and_dose(self, participant, coordinator, today) -> None:
        from dosing import services as dosing_services
        from randomization import services as randomization_services
        from schedules.models import VisitKind

        protocol = participant.site.trial.protocol
        participant = randomization_services.participant_randomize(participant=participant, randomized_by=coordinator)
        first_dose = participant.visits.filter(kind=VisitKind.DOSING).order_by("sequence").first()
        if first_dose is None:
            self.stdout.write(f"  {participant.randomization_number}: randomized (no dosing visit in the plan)")
            return
        # The weight and pre-dose labs only where the protocol gives a weight-based infusion.
        measured = {}
        if protocol.dosing.infusion is not None:
            measured = {
                "weight_kg": Decimal("61.5"),
                "neutrophils": 3800,
                "platelets": 215000,
                "alt_uln": Decimal("0.8"),
                "ast_uln": Decimal("0.7"),
            }
        outcome = dosing_services.visit_record(visit=first_dose, actual_date=today, recorded_by=coordinator, **measured)
        kits = ", ".join(kit.kit_number for kit in outcome.kits)
        self.stdout.write(
            f"  {participant.randomization_number}: randomized, {first_dose.code} recorded, "
            + (f"kits {kits} assigned" if kits else "no kits assigned (its arm has none)")
        )
