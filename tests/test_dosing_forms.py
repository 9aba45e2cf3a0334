"""The dose reads its weight and pre-dose labs from the case report forms the protocol names
(`dosing.infusion.weight_item`, `dosing.safety.labs_form`): entered there first, or typed at the
dosing visit and saved there, audited item by item."""

import copy
import datetime
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from django.conf import settings

from crf import selectors as crf_selectors
from crf import services as crf
from crf.models import FormRecord
from dosing import services
from dosing.exceptions import DoseInputInvalid, DosingValueRequired
from dosing.models import Decision, DoseRecord
from dosing.selectors import dose_input_items
from schedules.models import VisitKind, VisitStatus
from tests import dosing_factories as df
from tests import factories
from trialsite.models import AuditEvent, Role
from trialsite.protocol import load_protocol
from trialsite.protocol_schema import ProtocolError, parse_protocol

DAY0 = datetime.date(2026, 11, 3)
AT_C1 = datetime.datetime(2026, 11, 3, 4, 0, tzinfo=datetime.UTC)
AT_C2 = AT_C1 + datetime.timedelta(days=28)
GOOD_LABS = {"neutrophils": 3000, "platelets": 200000, "alt_uln": Decimal("1"), "ast_uln": Decimal("1")}
PROTOCOLS = Path(settings.BASE_DIR) / "protocols"


@pytest.fixture
def participant(site, cast):
    return df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)


def forms_read_by_the_dose(trial):
    """(weight form, weight item, labs form), as this trial's protocol names them."""
    weight_form, weight_item = dose_input_items(trial.protocol)["weight_kg"]
    return weight_form, weight_item, dose_input_items(trial.protocol)["neutrophils"][0]


def enter_on_forms(participant, user, visit_code, *, weight=None, labs=None, reason=None):
    weight_form, weight_item, labs_form = forms_read_by_the_dose(participant.site.trial)
    if weight is not None:
        crf.form_save(
            user=user,
            participant=participant,
            form_code=weight_form,
            visit_code=visit_code,
            values={weight_item: weight},
            reason=reason,
        )
    if labs is not None:
        crf.form_save(
            user=user, participant=participant, form_code=labs_form, visit_code=visit_code, values=labs, reason=reason
        )


def test_the_dose_is_computed_from_values_entered_on_the_forms_first(participant, cast):
    with time_machine.travel(AT_C1, tick=False):
        enter_on_forms(participant, cast.coordinator, "C1", weight="47.5", labs=GOOD_LABS)
        outcome = services.visit_record(
            visit=participant.visits.get(code="C1"), actual_date=DAY0, recorded_by=cast.coordinator
        )
    dose = outcome.dose
    assert (dose.dose_mg, dose.vial_plan, dose.decision) == (Decimal("190.0"), [[200, 1]], Decision.GIVE)
    assert (dose.weight_kg, dose.neutrophils, dose.platelets, dose.alt_uln) == (Decimal("47.5"), 3000, 200000, 1)
    assert outcome.visit.weight_kg == Decimal("47.5")


def test_values_given_at_the_dosing_visit_land_on_the_forms_audited_item_by_item(participant, cast):
    weight_form, weight_item, labs_form = forms_read_by_the_dose(participant.site.trial)
    with time_machine.travel(AT_C1, tick=False):
        services.visit_record(
            visit=participant.visits.get(code="C1"),
            actual_date=DAY0,
            recorded_by=cast.coordinator,
            weight_kg=Decimal("60.0"),
            **GOOD_LABS,
        )
    assert crf_selectors.value(participant, weight_form, "C1", weight_item) == Decimal("60")
    assert crf_selectors.value(participant, labs_form, "C1", "platelets") == 200000
    assert crf_selectors.value(participant, labs_form, "C1", "ast_uln") == Decimal("1")
    inserted = AuditEvent.objects.filter(table_name="crf_itemvalue", action="INSERT", subject_id=participant.pk)
    assert sorted(event.new_values["item_code"] for event in inserted) == sorted([weight_item, *GOOD_LABS])
    assert {event.actor_id for event in inserted} == {cast.coordinator.pk}
    # A second record of the same values would change nothing on the forms.
    assert not AuditEvent.objects.filter(table_name="crf_itemvalue", action="UPDATE").exists()


def test_a_form_value_changed_with_a_reason_changes_the_next_dose_decision(participant, cast):
    with time_machine.travel(AT_C1, tick=False):
        services.visit_record(
            visit=participant.visits.get(code="C1"),
            actual_date=DAY0,
            recorded_by=cast.coordinator,
            weight_kg=Decimal("60"),
            **GOOD_LABS,
        )
    with time_machine.travel(AT_C2, tick=False):
        enter_on_forms(participant, cast.coordinator, "C2", weight="60", labs=GOOD_LABS)
        # The lab report was misread: the neutrophils are in the hold range of a later dose.
        with pytest.raises(crf.FormInvalid):
            enter_on_forms(participant, cast.coordinator, "C2", labs={"neutrophils": 800})
        enter_on_forms(participant, cast.coordinator, "C2", labs={"neutrophils": 800}, reason="Lab report re-read")
        outcome = services.visit_record(
            visit=participant.visits.get(code="C2"), actual_date=AT_C2.date(), recorded_by=cast.coordinator
        )
    assert (outcome.dose.decision, outcome.dose.neutrophils) == (Decision.HOLD, 800)
    assert AuditEvent.objects.filter(
        table_name="crf_itemvalue", action="UPDATE", reason="Lab report re-read", subject_id=participant.pk
    ).exists()


def test_a_different_value_typed_at_the_dosing_visit_replaces_the_forms_with_a_recorded_reason(participant, cast):
    weight_form, weight_item, _labs_form = forms_read_by_the_dose(participant.site.trial)
    with time_machine.travel(AT_C1, tick=False):
        enter_on_forms(participant, cast.coordinator, "C1", weight="58", labs=GOOD_LABS)
        outcome = services.visit_record(
            visit=participant.visits.get(code="C1"),
            actual_date=DAY0,
            recorded_by=cast.coordinator,
            weight_kg=Decimal("62.5"),
        )
    assert outcome.dose.weight_kg == Decimal("62.5") and outcome.dose.dose_mg == Decimal("250.0")
    assert crf_selectors.value(participant, weight_form, "C1", weight_item) == Decimal("62.5")
    (update,) = AuditEvent.objects.filter(table_name="crf_itemvalue", action="UPDATE", subject_id=participant.pk)
    assert update.reason == f"{services.DOSING_VISIT_ENTRY} C1"
    assert (update.old_values["value"], update.new_values["value"]) == ("58", "62.5")


@pytest.mark.parametrize(
    ("on_forms", "given", "field"),
    [
        ({}, {}, "weight_kg"),
        ({"weight": "60"}, {}, "neutrophils"),
        ({"weight": "60"}, {"neutrophils": 3000, "platelets": 200000, "alt_uln": Decimal("1")}, "ast_uln"),
        ({"labs": GOOD_LABS}, {}, "weight_kg"),
    ],
)
def test_values_on_neither_the_forms_nor_the_visit_are_refused_at_their_field(
    participant, cast, on_forms, given, field
):
    visit = participant.visits.get(code="C1")
    with time_machine.travel(AT_C1, tick=False):
        enter_on_forms(participant, cast.coordinator, "C1", **on_forms)
        with pytest.raises(DosingValueRequired) as refused:
            services.visit_record(visit=visit, actual_date=DAY0, recorded_by=cast.coordinator, **given)
    assert refused.value.field == field
    visit.refresh_from_db()
    assert visit.status == VisitStatus.SCHEDULED and not DoseRecord.objects.filter(visit=visit).exists()


def test_a_weight_the_form_refuses_is_refused_at_the_weight_and_nothing_is_saved(participant, cast):
    visit = participant.visits.get(code="C1")
    with time_machine.travel(AT_C1, tick=False):
        with pytest.raises(DoseInputInvalid) as refused:
            # Within the dosing bounds (above 0 kg) but below the vital signs form's range.
            services.visit_record(
                visit=visit, actual_date=DAY0, recorded_by=cast.coordinator, weight_kg=Decimal("15"), **GOOD_LABS
            )
    assert refused.value.field == "weight_kg"
    assert not FormRecord.objects.filter(participant=participant).exists()
    visit.refresh_from_db()
    assert visit.status == VisitStatus.SCHEDULED


def test_the_page_shows_what_the_forms_hold_and_records_the_visit_without_retyping(participant, cast, client_for):
    visit = participant.visits.get(code="C1")
    with time_machine.travel(AT_C1, tick=False):
        enter_on_forms(participant, cast.coordinator, "C1", weight="47.5", labs=GOOD_LABS)
        client = client_for(cast.coordinator)
        page = client.get(f"/visits/{visit.pk}/record/").content.decode()
        assert 'value="47.5"' in page and 'value="200000"' in page
        response = client.post(f"/visits/{visit.pk}/record/", {"actual_date": "2026-11-03"})
    assert response.status_code == 302, response.content.decode()
    assert DoseRecord.objects.get(visit=visit).dose_mg == Decimal("190.0")


def test_the_api_records_the_visit_without_the_values_the_forms_hold(participant, cast, api_for):
    visit = participant.visits.get(code="C1")
    with time_machine.travel(AT_C1, tick=False):
        enter_on_forms(participant, cast.coordinator, "C1", weight="47.5", labs=GOOD_LABS)
        response = api_for(cast.coordinator).post(
            f"/api/v1/visits/{visit.pk}/record/", {"actual_date": "2026-11-03"}, format="json"
        )
    assert response.status_code == 200, response.content
    assert response.json()["visit"]["dose"]["dose_mg"] == "190.0"


def test_a_trial_without_infusion_records_its_dosing_visits_as_before(db):
    trial = load_protocol(PROTOCOLS / "NCT09000001.toml")
    assert trial.protocol.dosing.infusion is None and dose_input_items(trial.protocol) == {}
    site = trial.sites.order_by("code").first()
    coordinator = factories.make_user(Role.COORDINATOR, site, username="no-infusion-coordinator")
    participant = df.randomized_participant(site, arm_code="OBS", by=coordinator, day0=DAY0)
    visit = participant.visits.filter(kind=VisitKind.DOSING).order_by("sequence").first()
    with time_machine.travel(AT_C1, tick=False):
        outcome = services.visit_record(visit=visit, actual_date=DAY0, recorded_by=coordinator)
    assert outcome.visit.status == VisitStatus.COMPLETED and outcome.dose is None and outcome.kits == []
    assert not FormRecord.objects.filter(participant=participant).exists()


def _file(name: str) -> dict:
    with (PROTOCOLS / name).open("rb") as file:
        return tomllib.load(file)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            lambda d: d["dosing"]["infusion"].update(weight_item="vitals.mass"),
            "dosing.infusion.weight_item: form vitals has no item mass",
        ),
        (
            lambda d: d["dosing"]["infusion"].update(weight_item="vitals"),
            "dosing.infusion.weight_item: vitals must be form.item (vitals.weight)",
        ),
        (
            lambda d: d["dosing"]["safety"].update(labs_form="conmeds"),
            "dosing.safety.labs_form: conmeds is not a visit form of [[forms]]",
        ),
        (
            lambda d: next(f for f in d["forms"] if f["code"] == "vitals").update(visits=["C1"]),
            "dosing.infusion.weight_item: form vitals is not carried at the dosing visits"
            " C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12",
        ),
        (
            lambda d: next(f for f in d["forms"] if f["code"] == "predose_labs")["items"][3].update(
                type="text", min=None, max=None, unit=None, unit_zh=None
            ),
            "dosing.safety.labs_form: item predose_labs.ast_uln must be an integer or decimal item",
        ),
    ],
)
def test_the_protocol_names_forms_that_exist_hold_numbers_and_are_carried_at_the_dosing_visits(change, error):
    document = copy.deepcopy(_file("NCT06442709.toml"))
    change(document)
    for form in document["forms"]:
        for item in form["items"]:
            for key in [key for key, value in item.items() if value is None]:
                del item[key]
    with pytest.raises(ProtocolError) as refused:
        parse_protocol(document)
    assert error in refused.value.errors
