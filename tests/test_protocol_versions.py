"""Every record of captured trial data says under which protocol version it was captured: a
`protocol_version` key to the loaded `trialsite.ProtocolVersion` in force when the row was made.
After an amendment new rows point at the new version, and rows already made keep theirs."""

import datetime
from decimal import Decimal

import pytest
import time_machine
from django.db import models

from crf import services as crf_services
from crf.models import FormRecord
from dosing import services as dosing_services
from dosing.models import DoseRecord, RepeatLabs
from enrollment import services as enrollment_services
from enrollment.models import Consent, Participant, ProtocolDeviation, Withdrawal
from randomization import services as randomization_services
from randomization.models import Slot
from schedules import services as schedule_services
from schedules.models import Visit, VisitKind
from tests import factories
from trialsite.audit import audited_models, blinded_visible_columns
from trialsite.models import ProtocolVersion
from trialsite.protocol import load_protocol_file

APPS = ("enrollment", "randomization", "schedules", "dosing", "crf", "reminders", "safety")

# Audited models of those apps that are not captured trial data, and why.
NOT_CAPTURED_DATA = {
    # The answers are part of their screening, made and corrected with it: the screening's
    # version is the eligibility rules they were answered against.
    "enrollment.EligibilityAnswer",
    # The person enrolled from a screening (which says its version); their number and status
    # follow from the records below, each with its own version.
    "enrollment.Participant",
    # Randomization lists are made and locked by the statistician before anyone is allocated,
    # with versions of their own; the allocation (Slot) says the protocol version.
    "randomization.RandomizationList",
    # Who broke the blind, when and why: kept under the emergency-unblinding procedure, not data
    # the protocol asks to be captured about the participant.
    "randomization.Unblinding",
    # A printing of sealed code-break sheets: drug-supply paperwork, not participant data.
    "randomization.CodeBreakSheetSet",
    # Drug supply: kits, their lists and shipments exist before and apart from any participant.
    "dosing.Kit",
    "dosing.KitList",
    "dosing.Shipment",
    # Messages planned from the visits, not data captured (the visit says its version).
    "reminders.Reminder",
    # An item's value is part of its form record, which says the version the form was saved under.
    "crf.ItemValue",
    # The SAE clock's e-mails to the investigator and sponsor: messages about an adverse event
    # (which says its version), not data captured about the participant.
    "safety.SaeNotice",
    # The sponsor's causality and expectedness assessment of one serious event, judged against
    # the reference safety information, not the protocol; the event it assesses says its version.
    "safety.SusarAssessment",
}


def _models_of_captured_data():
    walked = [model for model in audited_models() if model._meta.app_label in APPS]
    labels = {model._meta.label for model in walked}
    # A renamed or removed model must leave the allow-list too, or it would hide a new one.
    assert NOT_CAPTURED_DATA <= labels, sorted(NOT_CAPTURED_DATA - labels)
    return [model for model in walked if model._meta.label not in NOT_CAPTURED_DATA]


def test_every_model_of_captured_data_says_its_protocol_version():
    captured = _models_of_captured_data()
    assert {
        "schedules.Visit",
        "randomization.Slot",
        "crf.FormRecord",
        "dosing.RepeatLabs",
        "safety.AdverseEvent",
        "safety.SaeReport",
        "safety.Death",
    } <= {model._meta.label for model in captured}
    for model in captured:
        label = model._meta.label
        field = next((f for f in model._meta.concrete_fields if f.name == "protocol_version"), None)
        assert field is not None, f"{label} holds captured data and says no protocol version"
        assert isinstance(field, models.ForeignKey) and field.related_model is ProtocolVersion, label
        # Rows made before versions were recorded have none; a version in use is never deleted.
        assert field.null, label
        assert field.remote_field.on_delete is models.PROTECT, label
        assert field.remote_field.related_name == "+", label
        # The same version whatever the arm: a blinded reader of the audit trail sees it.
        assert field.column in blinded_visible_columns(model), label


@pytest.fixture(autouse=True)
def _today():
    # Mid-morning in Nantong: screening, randomization and the visit fall on one local day.
    with time_machine.travel(datetime.datetime(2026, 11, 21, 2, tzinfo=datetime.UTC), tick=False):
        yield


@pytest.fixture
def active_list(trial, cast):
    randomization_list = randomization_services.list_generate(
        trial=trial, seed="versions", slots_per_stratum=8, created_by=cast.statistician
    )
    return randomization_services.list_lock(
        randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD
    )


TODAY = datetime.date(2026, 11, 21)
ELIGIBLE = {"IN1": "yes", "IN2": "yes", "EX1": "no", "EX2": "no", "EX3": "no"}


def _randomized(site, cast, number: int) -> Participant:
    screening = enrollment_services.screening_create(
        site=site,
        screened_by=cast.coordinator,
        initials="PV",
        date_of_birth=datetime.date(1970, 5, 5),
        sex="F",
        hospital_record_number=f"PV{number:04d}",
        screening_date=TODAY,
        consent_version="1.0",
        consent_date=TODAY,
        answers=ELIGIBLE,
    )
    participant = Participant.objects.get(screening=screening)
    factories.sign_eligibility(participant, signer=cast.investigator)
    randomization_services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    return Participant.objects.get(pk=participant.pk)


def _conmed(participant, user) -> FormRecord:
    values = {
        "drug_name": "Aspirin",
        "indication": "Pain",
        "drug_class": "nsaid",
        "start_date": "2026-11-01",
        "ongoing": True,
    }
    return crf_services.form_save(user=user, values=values, participant=participant, form_code="conmeds").record


def _withdraw(participant, user) -> Withdrawal:
    return enrollment_services.participant_withdraw(
        participant=participant, withdrawn_by=user, withdrawn_on=TODAY, reason="moved away"
    )


def _versions(participant) -> dict[str, set]:
    """The version of every row of captured data the participant has, by kind."""
    found = {
        "screening": {participant.screening.protocol_version_id},
        "consent": set(Consent.objects.filter(screening_id=participant.pk).values_list("protocol_version", flat=True)),
        "slot": set(Slot.objects.filter(participant=participant).values_list("protocol_version", flat=True)),
        "visit": set(Visit.objects.filter(participant=participant).values_list("protocol_version", flat=True)),
        "dose": set(DoseRecord.objects.filter(participant=participant).values_list("protocol_version", flat=True)),
        "repeat_labs": set(
            RepeatLabs.objects.filter(participant=participant).values_list("protocol_version", flat=True)
        ),
        "form": set(FormRecord.objects.filter(participant=participant).values_list("protocol_version", flat=True)),
        "deviation": set(
            ProtocolDeviation.objects.filter(participant=participant).values_list("protocol_version", flat=True)
        ),
        "withdrawal": set(
            Withdrawal.objects.filter(participant=participant).values_list("protocol_version", flat=True)
        ),
    }
    return {kind: versions for kind, versions in found.items() if versions}


def test_each_record_points_at_the_version_in_force_and_keeps_it_after_an_amendment(
    trial, site, cast, active_list, settings, tmp_path
):
    first = trial.current_version
    assert first is not None

    # Under version 1.0: a participant through screening, randomization, a held first dose and
    # its repeat labs, a form, an unscheduled visit and a screening correction (a deviation);
    # another one screened, randomized and withdrawn.
    dosed = _randomized(site, cast, 1)
    visit = dosed.visits.filter(kind=VisitKind.DOSING).order_by("sequence").first()
    labs = {"neutrophils": 1500, "platelets": 200000, "alt_uln": Decimal("1.0"), "ast_uln": Decimal("1.0")}
    outcome = dosing_services.visit_record(
        visit=visit, actual_date=TODAY, recorded_by=cast.coordinator, weight_kg=Decimal("60.0"), **labs
    )
    assert outcome.dose.decision == "hold"
    dosing_services.visit_repeat_labs(
        visit=visit, recorded_by=cast.coordinator, measured_on=TODAY, **(labs | {"neutrophils": 3000})
    )
    _conmed(dosed, cast.coordinator)
    schedule_services.unscheduled_visit_add(
        participant=dosed, visit_date=TODAY, added_by=cast.coordinator, reason="adverse event check"
    )
    enrollment_services.screening_update(
        screening=dosed.screening,
        changed_by=cast.coordinator,
        reason="EX1 answered wrongly",
        answers=ELIGIBLE | {"EX1": "yes"},
    )
    withdrawn = _randomized(site, cast, 2)
    _withdraw(withdrawn, cast.coordinator)

    under_first = {participant.pk: _versions(participant) for participant in (dosed, withdrawn)}
    assert set(under_first[dosed.pk]) == {
        "screening",
        "consent",
        "slot",
        "visit",
        "dose",
        "repeat_labs",
        "form",
        "deviation",
    }
    assert set(under_first[withdrawn.pk]) >= {"screening", "consent", "slot", "visit", "withdrawal"}
    for versions in under_first.values():
        assert all(found == {first.pk} for found in versions.values()), versions

    # An amendment: version 2.0 asks for more participants (and names the second site the cast
    # works at, which the file does not: a site dropped from the file would be removed).
    text = settings.PROTOCOL_FILE.read_text()
    replacements = (
        ('protocol_version = "1.0"', 'protocol_version = "2.0"'),
        ("target_enrollment = 100", "target_enrollment = 120"),
        (
            "[[sites]]\n",
            '[[sites]]\ncode = "SH"\nname = "Hospital SH"\ntime_zone = "Asia/Shanghai"\n\n[[sites]]\n',
        ),
    )
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    amended = tmp_path / "amended.toml"
    amended.write_text(text)
    assert load_protocol_file(amended).new_version
    trial.refresh_from_db()
    second = trial.current_version
    assert second.version == "2.0" and second.pk != first.pk

    # New rows, of the participant already in the trial and of one who joins, take 2.0.
    dosed = Participant.objects.get(pk=dosed.pk)
    later_form = _conmed(dosed, cast.coordinator)
    later_visit = schedule_services.unscheduled_visit_add(
        participant=dosed, visit_date=TODAY, added_by=cast.coordinator, reason="second check"
    )
    later_withdrawal = _withdraw(dosed, cast.coordinator)
    assert later_form.protocol_version_id == second.pk
    assert later_visit.protocol_version_id == second.pk
    assert later_withdrawal.protocol_version_id == second.pk
    joined = _randomized(site, cast, 3)
    assert {kind: versions for kind, versions in _versions(joined).items()} == {
        kind: {second.pk} for kind in ("screening", "consent", "slot", "visit")
    }

    # What was captured under 1.0 still says 1.0.
    withdrawn = Participant.objects.get(pk=withdrawn.pk)
    assert _versions(withdrawn) == under_first[withdrawn.pk]
    now = _versions(dosed)
    assert now["form"] == {first.pk, second.pk} and now["visit"] == {first.pk, second.pk}
    assert now["withdrawal"] == {second.pk}
    for kind in ("screening", "consent", "slot", "dose", "repeat_labs", "deviation"):
        assert now[kind] == under_first[dosed.pk][kind] == {first.pk}, kind
    assert (
        Visit.objects.filter(participant=dosed).exclude(pk=later_visit.pk).filter(protocol_version=second).count() == 0
    )
