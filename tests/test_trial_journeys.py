"""Every protocol file in protocols/ runs its whole journey in one database, side by side.

Nothing here names a trial, an arm, a kit type or a visit: the journey reads each protocol and
does what it says (screen by its criteria and factors, randomize by its method, plan its visits,
dose by its dosing section, fill its forms), inside the trial's own address (/t/<NCT id>/)."""

import datetime
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from dosing import services as dosing
from dosing.models import DoseRecord, Kit, Shipment
from enrollment.models import Participant
from randomization import services as randomization
from randomization.models import Slot
from reports import services as report_services
from schedules.models import Visit, VisitKind
from schedules.services import visit_plan
from tests import factories
from trialsite import access, tenancy
from trialsite.access import Capability
from trialsite.models import Role
from trialsite.protocol import load_protocol

PROTOCOLS = sorted((Path(settings.BASE_DIR) / "protocols").glob("*.toml"))
NOW = datetime.datetime(2026, 11, 20, 2, 0, tzinfo=datetime.UTC)
PER_SITE = 3


def _client(user, trial) -> APIClient:
    client = APIClient()
    client.force_login(user)
    client.trial_prefix = f"/t/{trial.nct_id}"
    return client


def _url(client, path: str) -> str:
    return client.trial_prefix + path


def _cast(trial):
    """One user per role at every site of the trial, named after the trial and site."""
    cast = {}
    for site in trial.sites.all():
        for role in Role.values:
            cast[(site.code, role)] = factories.make_user(role, site, username=f"{trial.nct_id}-{site.code}-{role}")
    return cast


def _example(item, visit_date):
    """A valid value for a form item, from its spec alone."""
    if item.type == "integer":
        low, high = item.min if item.min is not None else 0, item.max if item.max is not None else 100
        return int((Decimal(low) + Decimal(high)) / 2)
    if item.type == "decimal":
        low, high = item.min if item.min is not None else 0, item.max if item.max is not None else 100
        return str((Decimal(low) + Decimal(high)) / 2)
    if item.type == "date":
        return visit_date.isoformat()
    if item.type == "yes_no":
        return True
    if item.type == "choice":
        return None  # filled from the code list by the caller
    return "as recorded"


def _fill(protocol, form, visit_date) -> dict:
    values = {}
    for item in form.items:
        value = _example(item, visit_date)
        if item.type == "choice":
            value = protocol.code_list(item.code_list).entries[0].code
        values[item.code] = value
    # Items shown only on a condition: satisfy what the others say, or leave them out.
    for item in form.items:
        if item.show_if is not None and values.get(item.show_if.item) != item.show_if.equals:
            values.pop(item.code)
    return values


def _journey(trial) -> dict:
    """Screen, randomize, plan, supply, dose, dispense and fill forms for PER_SITE participants
    at every site of `trial`, through its own address. Returns what happened, for the checks."""
    protocol = trial.protocol
    cast = _cast(trial)
    first_site = trial.sites.order_by("code").first()
    statistician = cast[(first_site.code, Role.STATISTICIAN)]
    supply = cast[(first_site.code, Role.SUPPLY_MANAGER)]
    token = tenancy.activate(trial)
    try:
        randomization_list = randomization.list_generate(
            trial=trial, seed=f"journey-{trial.nct_id}", slots_per_stratum=40, created_by=statistician
        )
        randomization.list_lock(
            randomization_list=randomization_list, locked_by=statistician, password=factories.PASSWORD
        )
        contents = dosing.kit_contents_by_type(trial)
        if protocol.kit_types:
            lots = {
                (kit_type, content): (f"LOT-{kit_type}-{content}", datetime.date(2028, 6, 30))
                for kit_type, kinds in contents.items()
                for content in kinds
            }
            dosing.kit_list_generate(
                trial=trial, packaging_lot="PL-JOURNEY", kits_per_type=60, lots=lots, created_by=supply
            )
            for site in trial.sites.all():
                shipment = dosing.shipment_create(site=site, per_content=dict.fromkeys(contents, 8), shipped_by=supply)
                dosing.shipment_receive(shipment=shipment, received_by=cast[(site.code, Role.PHARMACIST)])
    finally:
        tenancy.deactivate(token)

    participants = []
    for site in trial.sites.order_by("code"):
        coordinator = _client(cast[(site.code, Role.COORDINATOR)], trial)
        for number in range(PER_SITE):
            answers = {c.code: "yes" if c.kind == "inclusion" else "no" for c in protocol.eligibility.criteria}
            stratification = {
                factor.code: factor.levels[number % len(factor.levels)] for factor in protocol.randomization.factors
            }
            answer = coordinator.post(
                _url(coordinator, "/api/v1/screenings/"),
                {
                    "initials": "JR",
                    "date_of_birth": "1970-05-05",
                    "sex": "F" if number % 2 else "M",
                    "hospital_record_number": f"{site.code}-J{number}",
                    "screening_date": "2026-11-19",
                    "consent_version": "1.0",
                    "consent_date": "2026-11-19",
                    "answers": answers,
                    "stratification": stratification,
                },
                format="json",
            )
            assert answer.status_code == 201, answer.content
            participant = Participant.objects.get(screening_id=answer.json()["id"])
            if protocol.randomization.require_eligibility_signature:
                factories.sign_eligibility(participant, signer=cast[(site.code, Role.INVESTIGATOR)])
            randomized = coordinator.post(_url(coordinator, f"/api/v1/participants/{participant.pk}/randomize/"))
            assert randomized.status_code == 200, randomized.content
            assert randomized.json()["visits"] == participant.visits.count() > 0
            participants.append(Participant.objects.get(pk=participant.pk))

    for participant in participants:
        site = participant.site
        coordinator = _client(cast[(site.code, Role.COORDINATOR)], trial)
        pharmacist = _client(cast[(site.code, Role.PHARMACIST)], trial)
        day0 = timezone.localtime(participant.randomized_at, site.zone).date()
        planned = [visit.code for visit in visit_plan(schedule=protocol.schedule, day0=day0)]
        assert list(participant.visits.order_by("sequence").values_list("code", flat=True)) == planned
        first = participant.visits.filter(kind=VisitKind.DOSING).order_by("sequence").first()
        record = {"actual_date": first.target_date.isoformat()}
        if protocol.dosing.infusion is not None:
            record |= {
                "weight_kg": "60.0",
                "neutrophils": 3000,
                "platelets": 200000,
                "alt_uln": "1.0",
                "ast_uln": "1.0",
            }
        recorded = coordinator.post(_url(coordinator, f"/api/v1/visits/{first.pk}/record/"), record, format="json")
        assert recorded.status_code == 200, recorded.content
        if protocol.dosing.infusion is not None:
            # The dose says which protocol version's rule and gates decided it.
            assert DoseRecord.objects.get(visit=first).protocol_version_id == trial.current_version_id
        assert participant.screening.protocol_version_id == trial.current_version_id
        arm = Slot.objects.get(participant=participant).arm
        kits = list(Kit.objects.filter(visit=first))
        assert sorted(kit.kit_type for kit in kits) == sorted(arm.kit_contents)
        assert all(kit.content == arm.kit_contents[kit.kit_type] for kit in kits)
        for kit in kits:
            dispensed = pharmacist.post(
                _url(pharmacist, f"/api/v1/kits/{kit.pk}/dispense/"), {"label_number": kit.kit_number}, format="json"
            )
            assert dispensed.status_code == 200, dispensed.content
        for form in protocol.forms:
            values = _fill(protocol, form, first.target_date)
            if form.kind == "log":
                saved = coordinator.post(
                    _url(coordinator, f"/api/v1/participants/{participant.pk}/logs/{form.code}/"),
                    {"values": values},
                    format="json",
                )
                assert saved.status_code == 201, saved.content
            else:
                carried_by = [visit for visit in participant.visits.order_by("sequence") if form.carried_at(visit.code)]
                assert carried_by, f"{form.code} is carried by no planned visit"
                saved = coordinator.put(
                    _url(
                        coordinator,
                        f"/api/v1/participants/{participant.pk}/forms/{form.code}/{carried_by[0].code}/",
                    ),
                    # The weight and labs typed at the dosing visit are on the forms the dose reads:
                    # a different value replaces them, with a reason.
                    {"values": values, "reason": "measured again"},
                    format="json",
                )
                assert saved.status_code == 200, saved.content
            assert saved.json()["status"] == "complete", saved.content
    return {"cast": cast, "participants": participants}


@pytest.fixture
def trials(db):
    assert len(PROTOCOLS) >= 2, "the journeys need two protocols unlike each other"
    return [load_protocol(path) for path in PROTOCOLS]


def test_every_protocol_runs_its_whole_journey_side_by_side(trials):
    with time_machine.travel(NOW, tick=False):
        journeys = {trial.pk: _journey(trial) for trial in trials}
    for trial in trials:
        journey = journeys[trial.pk]
        participants = journey["participants"]
        assert len(participants) == PER_SITE * trial.sites.count()
        assert {participant.site.trial_id for participant in participants} == {trial.pk}
        # Codes are per trial: each numbers its own from 1.
        assert Participant.objects.filter(site__trial=trial, randomization_number__isnull=False).count() == len(
            participants
        )
        # Minimization or blocks, every allocation follows the protocol's arms.
        arm_codes = {arm.code for arm in trial.protocol.arms}
        assert set(Slot.objects.filter(participant__in=participants).values_list("arm__code", flat=True)) <= arm_codes
        assert not Shipment.objects.filter(site__trial=trial).exclude(kits__trial=trial).exists()


def test_each_user_sees_only_their_own_trial(trials):
    with time_machine.travel(NOW, tick=False):
        journeys = {trial.pk: _journey(trial) for trial in trials}
    first, second = trials[0], trials[1]
    coordinator = next(user for (site, role), user in journeys[first.pk]["cast"].items() if role == Role.COORDINATOR)
    client = APIClient()
    client.force_login(coordinator)
    mine = client.get(f"/t/{first.nct_id}/api/v1/participants/")
    assert mine.status_code == 200
    listed = mine.json()["results"] if isinstance(mine.json(), dict) else mine.json()
    theirs = {participant.pk for participant in journeys[second.pk]["participants"]}
    assert listed and not {row["id"] for row in listed} & theirs
    assert client.get(f"/t/{second.nct_id}/api/v1/participants/").status_code == 404
    other = journeys[second.pk]["participants"][0]
    assert client.get(f"/t/{first.nct_id}/participants/{other.pk}/").status_code == 404


def test_each_coordinator_sees_only_their_own_site_of_their_own_trial(trials):
    """Inside a trial with several sites, a coordinator lists, opens and reaches through the API
    only their own site's participants; the list of trials shows only the trial they work in."""
    with time_machine.travel(NOW, tick=False):
        journeys = {trial.pk: _journey(trial) for trial in trials}
    several = [trial for trial in trials if trial.sites.count() > 1]
    assert several, "the journeys need a trial with more than one site"
    for trial in trials:
        participants = journeys[trial.pk]["participants"]
        for site in trial.sites.all():
            user = journeys[trial.pk]["cast"][(site.code, Role.COORDINATOR)]
            client = _client(user, trial)
            answer = client.get(_url(client, "/api/v1/participants/"))
            assert answer.status_code == 200
            body = answer.json()
            listed = {row["id"] for row in (body["results"] if isinstance(body, dict) else body)}
            assert listed == {participant.pk for participant in participants if participant.site_id == site.pk}
            for other in participants:
                if other.site_id == site.pk:
                    continue
                assert client.get(_url(client, f"/participants/{other.pk}/")).status_code == 404
                assert client.get(_url(client, f"/api/v1/participants/{other.pk}/")).status_code == 404
            chooser = client.get("/trials/")
            assert chooser.status_code == 200
            assert f"/t/{trial.nct_id}/" in chooser.content.decode()
            for other_trial in trials:
                if other_trial.pk != trial.pk:
                    assert f"/t/{other_trial.nct_id}/" not in chooser.content.decode()


def test_the_arm_is_visible_exactly_where_the_protocol_is_open_label(trials):
    for trial in trials:
        site = trial.sites.order_by("code").first()
        coordinator = factories.make_user(Role.COORDINATOR, site, username=f"arm-{trial.nct_id}")
        assert access.can(coordinator, Capability.VIEW_ALLOCATION, site) is (not trial.protocol.blinded)
        # An open-label trial's staff need no second factor to see arms; a blinded trial's
        # unblinded roles still do.
        assert access.is_unblinded(coordinator) is False


def test_an_export_of_one_trial_holds_only_its_participants(trials):
    with time_machine.travel(NOW, tick=False):
        journeys = {trial.pk: _journey(trial) for trial in trials}
    for trial in trials:
        investigator = next(
            user for (site, role), user in journeys[trial.pk]["cast"].items() if role == Role.INVESTIGATOR
        )
        token = tenancy.activate(trial)
        try:
            export = report_services.export_request(user=investigator, kind="subjects", format="csv", background=False)
        finally:
            tenancy.deactivate(token)
        export.refresh_from_db()
        assert export.trial_id == trial.pk
        assert export.status == "done"
        rows = (Path(settings.MEDIA_ROOT) / export.file_path).read_text(encoding="utf-8")
        # The investigator reports on their own site.
        site_ids = access.site_ids_with(investigator, Capability.EXPORT_REPORTS)
        mine = [p for p in journeys[trial.pk]["participants"] if p.site_id in site_ids]
        assert mine
        others = [p for other in trials if other.pk != trial.pk for p in journeys[other.pk]["participants"]]
        assert all(participant.randomization_number in rows for participant in mine)
        # Numbers are per site, so another trial's may look alike; those that differ are absent.
        numbers = {participant.randomization_number for participant in mine}
        assert not [
            p.randomization_number
            for p in others
            if p.randomization_number not in numbers and p.randomization_number in rows
        ]


def test_visits_only_plan_what_the_schedule_says(trials):
    day0 = datetime.date(2026, 1, 31)
    for trial in trials:
        schedule = trial.protocol.schedule
        plan = visit_plan(schedule=schedule, day0=day0)
        codes = [visit.code for visit in plan]
        assert len(codes) == len(set(codes))
        assert sum(1 for visit in plan if visit.kind == VisitKind.DOSING) == schedule.treatment.cycles
        assert Visit.objects.filter(site__trial=trial).count() == 0
