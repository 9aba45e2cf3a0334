"""Dosing as a new user meets it: a dose for a participant under 50 kg, tablets counted when a
kit is dispensed, and a withdrawn participant's visits that end in a state saying why."""

import datetime
from decimal import Decimal

import pytest
import time_machine

from dosing import services
from dosing.models import DoseRecord, Kit
from dosing.reminders import services as reminder_services
from dosing.reminders.models import Reminder
from enrollment.services import participant_withdraw
from schedules.models import Visit, VisitStatus
from tests import dosing_factories as df
from trialsite.audit import audit_context

DAY0 = datetime.date(2026, 11, 3)
AT_VISIT = datetime.datetime(2026, 11, 3, 4, 0, tzinfo=datetime.UTC)
LABS = {"neutrophils": 3000, "platelets": 200000, "alt_uln": "1", "ast_uln": "1"}


def test_c1_for_47_5_kg_is_recorded_by_the_service_with_190_mg_from_one_200_mg_vial(site, cast):
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    with time_machine.travel(AT_VISIT, tick=False):
        outcome = services.visit_record(
            visit=participant.visits.get(code="C1"),
            actual_date=DAY0,
            recorded_by=cast.coordinator,
            weight_kg=Decimal("47.5"),
            neutrophils=3000,
            platelets=200000,
            alt_uln=Decimal("1"),
            ast_uln=Decimal("1"),
        )
    assert outcome.dose.dose_mg == Decimal("190.0")
    assert outcome.dose.vial_plan == [[200, 1]]
    assert DoseRecord.objects.get(participant=participant).concentrate_ml == Decimal("9.5")


def test_c1_for_47_5_kg_through_the_page_and_the_api_answers_200_with_a_vial_plan(site, cast, client_for, api_for):
    on_page = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    by_api = df.randomized_participant(site, arm_code="PBO", by=cast.coordinator, day0=DAY0)
    with time_machine.travel(AT_VISIT, tick=False):
        page = client_for(cast.coordinator).post(
            f"/visits/{on_page.visits.get(code='C1').pk}/record/",
            {"actual_date": "2026-11-03", "weight_kg": "47.5", **LABS},
            follow=True,
        )
        api = api_for(cast.coordinator).post(
            f"/api/v1/visits/{by_api.visits.get(code='C1').pk}/record/",
            {"actual_date": "2026-11-03", "weight_kg": "47.5", **LABS},
            format="json",
        )
    assert page.status_code == 200
    assert "1 x 200 mg" in page.content.decode()
    assert api.status_code == 200
    dose = api.json()["visit"]["dose"]
    assert (dose["dose_mg"], dose["vial_plan"]) == ("190.0", [[200, 1]])


def test_tablets_dispensed_counts_a_dispensed_kit_before_it_comes_back(site, cast, client_for, api_for):
    participant = df.randomized_participant(site, arm_code="ASA", by=cast.coordinator, day0=DAY0)
    # Stock of every content: a site that cannot serve every content assigns nothing.
    for content in ("active", "placebo"):
        df.make_kit(kit_type="TAB", content=content, site=site)
        df.make_kit(kit_type="INF", content=content, site=site)
    with time_machine.travel(AT_VISIT, tick=False):
        services.visit_record(
            visit=participant.visits.get(code="C1"),
            actual_date=DAY0,
            recorded_by=cast.coordinator,
            weight_kg=Decimal("60"),
            neutrophils=3000,
            platelets=200000,
            alt_uln=Decimal("1"),
            ast_uln=Decimal("1"),
        )
        tablets = Kit.objects.get(participant=participant, kit_type="TAB")
        services.kit_dispense(kit=tablets, label_number=tablets.kit_number, dispensed_by=cast.pharmacist)
        rows = api_for(cast.pharmacist).get("/api/v1/accountability/participants/").json()
        page = client_for(cast.pharmacist).get("/pharmacy/accountability/").content.decode()
    row = next(row for row in rows if row["participant"] == participant.label)
    # 35 tablets handed out; nothing returned yet, so nothing is known about what was taken.
    assert (row["tablets_dispensed"], row["tablets_returned"], row["tablets_taken"]) == (35, 0, 0)
    assert row["adherence"] is None
    assert "<td>35</td>" in page
    assert "only the tablet kits that were returned" in page


@pytest.fixture
def withdrawn_mid_treatment(site, cast):
    """Randomized 3 November, C1 recorded, withdrawn on 20 November (before C2's window)."""
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    with time_machine.travel(AT_VISIT, tick=False):
        services.visit_record(
            visit=participant.visits.get(code="C1"),
            actual_date=DAY0,
            recorded_by=cast.coordinator,
            weight_kg=Decimal("60"),
            neutrophils=3000,
            platelets=200000,
            alt_uln=Decimal("1"),
            ast_uln=Decimal("1"),
        )
    with time_machine.travel(datetime.datetime(2026, 11, 20, 4, tzinfo=datetime.UTC), tick=False):
        participant_withdraw(
            participant=participant,
            withdrawn_by=cast.coordinator,
            withdrawn_on=datetime.date(2026, 11, 20),
            reason="moved away",
        )
    return participant


def test_withdrawal_ends_every_open_visit_as_not_done_withdrawn(withdrawn_mid_treatment):
    statuses = dict(withdrawn_mid_treatment.visits.values_list("code", "status"))
    assert statuses.pop("C1") == VisitStatus.COMPLETED
    assert set(statuses.values()) == {VisitStatus.NOT_DONE_WITHDRAWN}
    assert str(VisitStatus.NOT_DONE_WITHDRAWN.label) == "Not done (withdrawn)"
    # Years later nothing has changed them to "missed" or left them "scheduled".
    services.visits_mark_missed(today=datetime.date(2030, 1, 1))
    assert set(withdrawn_mid_treatment.visits.exclude(code="C1").values_list("status", flat=True)) == {
        VisitStatus.NOT_DONE_WITHDRAWN
    }


def test_the_missed_visit_scan_ends_visits_left_scheduled_for_a_withdrawn_participant(site, cast):
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    # As the landed code left them: withdrawn, visits still scheduled (C1's window long closed).
    with time_machine.travel(datetime.datetime(2026, 11, 20, 4, tzinfo=datetime.UTC), tick=False):
        participant_withdraw(
            participant=participant,
            withdrawn_by=cast.coordinator,
            withdrawn_on=datetime.date(2026, 11, 20),
            reason="moved away",
        )
    with audit_context(reason="test: a visit left open by older code"):
        Visit.objects.filter(participant=participant).update(status=VisitStatus.SCHEDULED)
    marked = services.visits_mark_missed(today=datetime.date(2027, 1, 10))
    statuses = dict(participant.visits.values_list("code", "status"))
    # C1 (window closed on 6 November) was missed before the withdrawal; the rest will not happen.
    assert statuses.pop("C1") == VisitStatus.MISSED
    assert set(statuses.values()) == {VisitStatus.NOT_DONE_WITHDRAWN}
    assert marked == 17
    assert services.visits_mark_missed(today=datetime.date(2027, 1, 10)) == 0


def test_no_reminder_is_sent_for_a_withdrawn_participants_visits(withdrawn_mid_treatment):
    reminders = Reminder.objects.filter(participant=withdrawn_mid_treatment, visit__code="C2")
    assert reminders.exists()
    assert set(reminders.values_list("status", flat=True)) == {Reminder.Status.CANCELLED}
    # Even one left scheduled (written before the withdrawal was recorded) is not sent.
    reminder = reminders.first()
    with audit_context(reason="test: a reminder left scheduled"):
        Reminder.objects.filter(pk=reminder.pk).update(status=Reminder.Status.SCHEDULED, status_reason="")
    assert reminder_services.reminder_send(reminder_id=reminder.pk).outcome == "cancelled"


def test_the_database_accepts_the_new_state_and_still_refuses_an_unknown_one(withdrawn_mid_treatment):
    from django.db import IntegrityError, transaction

    visit = withdrawn_mid_treatment.visits.get(code="C2")
    with pytest.raises(IntegrityError), transaction.atomic(), audit_context(reason="test"):
        Visit.objects.filter(pk=visit.pk).update(status="gone")
