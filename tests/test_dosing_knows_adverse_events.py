"""Dosing knows (issue 18): the dosing visit shows the participant's open adverse events, and an
ongoing grade 3+ event of special interest asks the coordinator to confirm the investigator's
review before a dose is given; the confirmation is the audit reason of the visit and dose."""

import datetime
import re
from decimal import Decimal

import pytest
import time_machine

from dosing import services
from dosing.models import DoseRecord
from safety import services as safety_services
from safety.open_events import open_events
from schedules.models import Visit, VisitStatus
from tests import dosing_factories as df
from trialsite.exceptions import TrialRuleError
from trialsite.models import AuditEvent

pytestmark = pytest.mark.django_db

DAY0 = datetime.date(2026, 11, 3)
AT_VISIT = datetime.datetime(2026, 11, 3, 4, 0, tzinfo=datetime.UTC)
LABS = {"weight_kg": "60", "neutrophils": 3000, "platelets": 200000, "alt_uln": "1", "ast_uln": "1"}
REVEALING = re.compile(r"\b(active|placebo|tocilizumab|aspirin|TOC|ASA|COMBO|PBO)\b", re.IGNORECASE)


@pytest.fixture
def participant(site, cast):
    return df.randomized_participant(site, arm_code="COMBO", by=cast.coordinator, day0=DAY0)


@pytest.fixture
def visit(participant):
    return participant.visits.get(code="C1")


def event(participant, cast, **fields):
    values = {"term": "epistaxis", "grade": 3, "onset_date": DAY0}
    values.update(fields)
    with time_machine.travel(AT_VISIT, tick=False):
        return safety_services.ae_record(
            participant=participant, recorded_by=cast.coordinator, details=safety_services.AeDetails(**values)
        )


def record(visit, cast, **extra):
    with time_machine.travel(AT_VISIT, tick=False):
        return services.visit_record(
            visit=visit,
            actual_date=DAY0,
            recorded_by=cast.coordinator,
            weight_kg=Decimal("60"),
            neutrophils=3000,
            platelets=200000,
            alt_uln=Decimal("1"),
            ast_uln=Decimal("1"),
            **extra,
        )


def assert_not_recorded(visit):
    assert Visit.objects.get(pk=visit.pk).status == VisitStatus.SCHEDULED
    assert not DoseRecord.objects.filter(visit=visit).exists()


def test_the_page_lists_the_open_events_in_the_readers_language_above_the_form(participant, visit, cast, client_for):
    event(participant, cast, term="epistaxis", grade=3)
    event(participant, cast, term="fatigue", grade=2)
    resolved = event(participant, cast, term="nausea", grade=1)
    with time_machine.travel(AT_VISIT, tick=False):
        safety_services.ae_resolve(
            event=resolved, recorded_by=cast.coordinator, resolution_date=DAY0, outcome="recovered"
        )
        client = client_for(cast.coordinator)
        html = client.get(f"/visits/{visit.pk}/record/").content.decode()
        chinese = client.get(f"/visits/{visit.pk}/record/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    start = html.index('id="open-adverse-events"')
    listed = html[start : html.index("<form", start)]
    assert "Epistaxis" in listed and "Fatigue" in listed and "special interest" in listed
    assert "Nausea" not in listed
    assert "I have reviewed the open grade 3+ adverse event(s) of special interest" in html
    assert "鼻出血" in chinese and "特别关注" in chinese
    assert not REVEALING.findall(html.replace('class="active"', ""))


@pytest.mark.parametrize("fields", [{"term": "epistaxis", "grade": 2}, {"term": "fatigue", "grade": 3}])
def test_a_grade_2_or_not_special_event_needs_no_confirmation(participant, visit, cast, client_for, fields):
    event(participant, cast, **fields)
    with time_machine.travel(AT_VISIT, tick=False):
        page = client_for(cast.coordinator).get(f"/visits/{visit.pk}/record/").content.decode()
    assert "confirm_open_adverse_events" not in page
    outcome = record(visit, cast)
    assert outcome.dose.decision == "give"


def test_an_ongoing_grade_3_special_event_refuses_the_dose_without_confirmation(participant, visit, cast):
    event(participant, cast)
    with pytest.raises(TrialRuleError) as refused:
        record(visit, cast)
    assert refused.value.field == "confirm_open_adverse_events"
    assert "AE 1: Epistaxis, grade 3" in str(refused.value.message)
    assert_not_recorded(visit)


def test_with_the_confirmation_the_dose_is_given_and_the_confirmation_is_audited(participant, visit, cast):
    event(participant, cast)
    outcome = record(visit, cast, confirm_open_adverse_events=True)
    assert outcome.dose.decision == "give"
    for row in (outcome.dose, outcome.visit):
        audited = AuditEvent.objects.filter(table_name=row._meta.db_table, record_pk=str(row.pk)).latest("id")
        assert "reviewed with the investigator, dosing goes ahead: AE 1 epistaxis grade 3" in audited.reason
        assert audited.actor == cast.coordinator


def test_a_held_dose_needs_no_confirmation(participant, visit, cast):
    event(participant, cast)
    with time_machine.travel(AT_VISIT, tick=False):
        outcome = services.visit_record(
            visit=visit,
            actual_date=DAY0,
            recorded_by=cast.coordinator,
            weight_kg=Decimal("60"),
            neutrophils=500,
            platelets=200000,
            alt_uln=Decimal("1"),
            ast_uln=Decimal("1"),
        )
    assert outcome.dose.decision != "give"


def test_the_page_shows_the_refusal_at_the_checkbox_and_records_with_it(participant, visit, cast, client_for):
    event(participant, cast)
    client = client_for(cast.coordinator)
    url = f"/visits/{visit.pk}/record/"
    with time_machine.travel(AT_VISIT, tick=False):
        refused = client.post(url, {"actual_date": "2026-11-03", **LABS})
    assert refused.status_code == 200
    errors = refused.context["form"].errors["confirm_open_adverse_events"]
    assert "AE 1: Epistaxis, grade 3" in errors[0]
    assert "field-error" in refused.content.decode()
    assert_not_recorded(visit)
    with time_machine.travel(AT_VISIT, tick=False):
        confirmed = client.post(url, {"actual_date": "2026-11-03", **LABS, "confirm_open_adverse_events": "on"})
    assert confirmed.status_code == 302
    assert DoseRecord.objects.get(visit=visit).decision == "give"


def test_the_api_answers_400_at_the_field_and_records_with_it(participant, visit, cast, api_for):
    event(participant, cast)
    api = api_for(cast.coordinator)
    url = f"/api/v1/visits/{visit.pk}/record/"
    with time_machine.travel(AT_VISIT, tick=False):
        refused = api.post(url, {"actual_date": "2026-11-03", **LABS}, format="json")
    assert refused.status_code == 400
    assert "AE 1: Epistaxis, grade 3" in refused.json()["confirm_open_adverse_events"][0]
    assert_not_recorded(visit)
    with time_machine.travel(AT_VISIT, tick=False):
        given = api.post(url, {"actual_date": "2026-11-03", **LABS, "confirm_open_adverse_events": True}, format="json")
    assert given.status_code == 200
    assert given.json()["visit"]["dose"]["decision"] == "give"


def test_a_resolved_event_no_longer_counts(participant, visit, cast):
    ae = event(participant, cast)
    with time_machine.travel(AT_VISIT, tick=False):
        safety_services.ae_resolve(event=ae, recorded_by=cast.coordinator, resolution_date=DAY0, outcome="recovered")
    assert list(open_events(participant)) == []
    assert record(visit, cast).dose.decision == "give"


def test_a_grade_change_down_to_2_no_longer_counts(participant, visit, cast):
    ae = event(participant, cast)
    with time_machine.travel(AT_VISIT, tick=False):
        lower = safety_services.ae_grade_change(
            event=ae, recorded_by=cast.coordinator, details=safety_services.AeDetails(grade=2, onset_date=DAY0)
        )
    assert list(open_events(participant)) == [lower]
    assert record(visit, cast).dose.decision == "give"


def test_a_grade_change_up_to_3_counts_at_its_current_grade(participant, visit, cast):
    ae = event(participant, cast, grade=2)
    with time_machine.travel(AT_VISIT, tick=False):
        worse = safety_services.ae_grade_change(
            event=ae, recorded_by=cast.coordinator, details=safety_services.AeDetails(grade=3, onset_date=DAY0)
        )
    assert list(open_events(participant)) == [worse]
    with pytest.raises(TrialRuleError):
        record(visit, cast)


def test_repeat_labs_that_turn_a_hold_into_a_dose_ask_the_same_confirmation(participant, visit, cast, client_for):
    event(participant, cast)
    with time_machine.travel(AT_VISIT, tick=False):
        held = services.visit_record(
            visit=visit,
            actual_date=DAY0,
            recorded_by=cast.coordinator,
            weight_kg=Decimal("60"),
            neutrophils=3000,
            platelets=90000,
            alt_uln=Decimal("1"),
            ast_uln=Decimal("1"),
        )
    assert held.dose.decision == "hold"
    recovered = {
        "measured_on": "2026-11-05",
        "neutrophils": "3000",
        "platelets": "150000",
        "alt_uln": "1",
        "ast_uln": "1",
    }
    client = client_for(cast.coordinator)
    url = f"/visits/{visit.pk}/repeat-labs/"
    with time_machine.travel(datetime.datetime(2026, 11, 5, 4, tzinfo=datetime.UTC), tick=False):
        page = client.get(f"/visits/{visit.pk}/").content.decode()
        refused = client.post(url, recovered)
        confirmed = client.post(url, {**recovered, "confirm_open_adverse_events": "on"})
    assert "I have reviewed the open grade 3+ adverse event(s) of special interest" in page
    assert refused.status_code == 400
    assert "AE 1: Epistaxis, grade 3" in refused.context["repeat_form"].errors["confirm_open_adverse_events"][0]
    assert confirmed.status_code == 302
    dose = DoseRecord.objects.get(visit=visit)
    assert dose.decision == "give"
    audited = AuditEvent.objects.filter(table_name=dose._meta.db_table, record_pk=str(dose.pk)).latest("id")
    assert audited.reason.startswith("repeat labs after a held infusion; open grade 3+ adverse event(s)")
