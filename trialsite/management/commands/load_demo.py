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
]
# The demo's hospital record numbers start with this; finding one means the demo is loaded.
DEMO_RECORD_PREFIX = "DEMO"
DEMO_PACKAGING_LOT = "DEMO-PL-1"
DEMO_SLOTS_PER_STRATUM = 200
DEMO_KITS_PER_TYPE = 40  # half of each content, per kit type

ALL_GOOD = {"IN1": "yes", "IN2": "yes", "EX1": "no", "EX2": "no", "EX3": "no"}
# (record number, initials, date of birth, sex, answers, what happens next)
DEMO_PATIENTS = [
    ("DEMO0001", "WJ", datetime.date(1968, 4, 12), "M", ALL_GOOD, "eligible"),
    ("DEMO0002", "ZL", datetime.date(1975, 9, 3), "F", ALL_GOOD, "signed"),
    ("DEMO0003", "HM", datetime.date(1962, 1, 27), "M", ALL_GOOD, "randomized"),
    ("DEMO0004", "QY", datetime.date(1959, 11, 8), "F", {**ALL_GOOD, "EX1": "yes"}, "screen failure"),
]
STAGE_WORDS = {
    "eligible": "eligible, waiting for the PI's eligibility signature",
    "signed": "eligible and signed by the PI: ready to randomize",
    "screen failure": "screen failure (EX1 liver disease), not a participant",
}


class Command(BaseCommand):
    help = (
        "Create one demo user per role at the first site and, unless --empty, a demo ready for "
        "the coordinator's day: a locked demo randomization list, kits received at the site and "
        "participants at different stages (development only; running it again adds nothing)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--empty", action="store_true", help="Users only: no list, kits or participants.")

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("Demo users are for development; DEBUG is off.")
        site = Site.objects.select_related("trial").order_by("id").first()
        if site is None:
            raise CommandError("Load a protocol first: manage.py load_protocol")
        users = self._users(site)
        for username, role, _ in DEMO_USERS:
            self.stdout.write(f"  {username:<13} {DEMO_PASSWORD}   {Role(role).label} at {site.code}")
        # Every other loaded trial: the same people hold the same roles at its first site, so the
        # demo shows working in several trials (each at /t/<NCT id>/, chosen at /trials/).
        for other in Trial.objects.exclude(pk=site.trial_id).order_by("nct_id"):
            other_site = other.sites.order_by("code").first()
            if other_site is not None:
                self._users(other_site)
                self.stdout.write(
                    f"  the same logins also work in {other.nct_id} at {other_site.code} (no demo data there)"
                )
        if options["empty"]:
            self.stdout.write("  (--empty: no demo list, kits or participants)")
            return
        from enrollment.models import Screening

        if Screening.objects.filter(site=site, hospital_record_number__startswith=DEMO_RECORD_PREFIX).exists():
            self.stdout.write("  demo data already loaded: nothing added")
            return
        with transaction.atomic():
            self._randomization_list(site, users["statistician"])
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

    def _randomization_list(self, site, statistician) -> None:
        from randomization import services
        from randomization.models import RandomizationList

        active = RandomizationList.objects.filter(trial=site.trial, is_active=True).first()
        if active is not None:
            self.stdout.write(f"  randomization list v{active.version} is already locked: kept")
            return
        seed = f"DEMO-ONLY-{secrets.token_hex(8)}"
        created = services.list_generate(
            trial=site.trial,
            seed=seed,
            slots_per_stratum=DEMO_SLOTS_PER_STRATUM,
            created_by=statistician,
            reason="" if not RandomizationList.objects.filter(trial=site.trial).exists() else "Demo list",
        )
        services.list_lock(randomization_list=created, locked_by=statistician, password=DEMO_PASSWORD)
        self.stdout.write(
            f"  randomization list v{created.version} generated and locked from seed {seed}: "
            "a DEMO seed, printed here for the demo only; never use it (or this list) for a real trial"
        )

    def _kits(self, site, supply, pharmacist) -> None:
        from dosing import services
        from dosing.models import Kit, KitStatus

        if Kit.objects.filter(site=site, status=KitStatus.AT_SITE).exists():
            self.stdout.write("  kits are already at the site: none added")
            return
        contents = services.kit_contents_by_type(site.trial)
        expiry = timezone.localdate() + datetime.timedelta(days=730)
        lots = {
            (kit_type, content): (f"DEMO-{kit_type}-{content[:3].upper()}", expiry)
            for kit_type, kit_contents in contents.items()
            for content in kit_contents
        }
        if not Kit.objects.filter(packaging_lot=DEMO_PACKAGING_LOT).exists():
            services.kit_list_generate(
                trial=site.trial,
                packaging_lot=DEMO_PACKAGING_LOT,
                kits_per_type=DEMO_KITS_PER_TYPE,
                lots=lots,
                created_by=supply,
            )
        per_content = site.trial.protocol.kits.resupply_target
        shipment = services.shipment_create(
            site=site, per_content={kit_type: per_content for kit_type in sorted(contents)}, shipped_by=supply
        )
        services.shipment_receive(shipment=shipment, received_by=pharmacist)
        self.stdout.write(
            f"  kit list {DEMO_PACKAGING_LOT} generated; {per_content} kits of each content of "
            f"{', '.join(sorted(contents))} shipped to {site.code} and received"
        )

    def _participants(self, site, users) -> None:
        from dosing import services as dosing_services
        from enrollment import services as enrollment_services
        from randomization import services as randomization_services

        today = timezone.localdate(timezone=site.zone)
        coordinator, investigator = users["coordinator"], users["investigator"]
        for record_number, initials, born, sex, answers, stage in DEMO_PATIENTS:
            screening = enrollment_services.screening_create(
                site=site,
                screened_by=coordinator,
                initials=initials,
                date_of_birth=born,
                sex=sex,
                hospital_record_number=record_number,
                screening_date=today,
                consent_version="2.1",
                consent_date=today,
                answers=answers,
            )
            participant = getattr(screening, "participant", None)
            if stage in ("signed", "randomized"):
                enrollment_services.eligibility_sign(
                    participant=participant, signer=investigator, password=DEMO_PASSWORD
                )
            if stage == "randomized":
                participant = randomization_services.participant_randomize(
                    participant=participant, randomized_by=coordinator
                )
                c1 = participant.visits.order_by("sequence").first()
                outcome = dosing_services.visit_record(
                    visit=c1,
                    actual_date=today,
                    recorded_by=coordinator,
                    weight_kg=Decimal("61.5"),
                    neutrophils=3800,
                    platelets=215000,
                    alt_uln=Decimal("0.8"),
                    ast_uln=Decimal("0.7"),
                )
                kits = ", ".join(kit.kit_number for kit in outcome.kits)
                self.stdout.write(
                    f"  {participant.randomization_number}: randomized, {c1.code} recorded, kits {kits} assigned"
                )
            else:
                label = participant.screening_number if participant else record_number
                self.stdout.write(f"  {label}: {STAGE_WORDS[stage]}")
