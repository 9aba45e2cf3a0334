import datetime

import pytest
from django.db import IntegrityError

from dosing.services import visit_reschedule
from schedules.models import Visit, VisitKind, VisitStatus
from schedules.services import visit_plan, visit_schedule_create
from tests import factories
from trialsite.audit import audit_context
from trialsite.exceptions import ReasonRequired
from trialsite.models import AuditEvent, Role
from trialsite.protocol_schema import ScheduleSpec

DAY0 = datetime.date(2026, 11, 3)


@pytest.fixture
def coordinator(site):
    return factories.make_user(Role.COORDINATOR, site)


@pytest.fixture
def participant(site, coordinator):
    return factories.make_participant(site, by=coordinator)


def schedule(participant, coordinator) -> list[Visit]:
    with audit_context(actor=coordinator, reason="randomization"):
        visit_schedule_create(participant=participant, day0=DAY0)
    return list(participant.visits.order_by("sequence"))


def test_the_plan_is_12_cycles_28_days_apart_then_end_of_treatment_then_4_follow_ups(participant, coordinator):
    visits = schedule(participant, coordinator)

    assert [v.code for v in visits] == [f"C{n}" for n in range(1, 13)] + ["EOT", "FU1", "FU2", "FU3", "FU4"]
    assert [v.target_date for v in visits[:12]] == [DAY0 + datetime.timedelta(days=28 * n) for n in range(12)]
    assert visits[11].target_date == DAY0 + datetime.timedelta(days=308)
    assert all(v.kind == VisitKind.DOSING for v in visits[:12])
    assert [v.cycle for v in visits[:12]] == list(range(1, 13))
    assert all(v.status == VisitStatus.SCHEDULED for v in visits)
    assert all(v.site_id == participant.site_id for v in visits)


def test_day_0_is_cycle_1_and_its_window_cannot_open_before_randomization(participant, coordinator):
    first = schedule(participant, coordinator)[0]

    assert (first.code, first.target_date) == ("C1", DAY0)
    assert (first.window_start, first.window_end) == (DAY0, DAY0 + datetime.timedelta(days=3))


def test_later_cycles_have_a_window_of_minus_3_plus_3_days(participant, coordinator):
    second = schedule(participant, coordinator)[1]

    assert second.target_date == datetime.date(2026, 12, 1)
    assert (second.window_start, second.window_end) == (datetime.date(2026, 11, 28), datetime.date(2026, 12, 4))


def test_end_of_treatment_is_one_cycle_after_the_last_and_follow_ups_every_3_months(participant, coordinator):
    visits = {v.code: v for v in schedule(participant, coordinator)}

    eot = visits["EOT"]
    assert eot.kind == VisitKind.END_OF_TREATMENT
    assert eot.target_date == DAY0 + datetime.timedelta(days=336) == datetime.date(2027, 10, 5)
    assert (eot.window_start, eot.window_end) == (datetime.date(2027, 10, 2), datetime.date(2027, 10, 8))
    assert [visits[f"FU{n}"].target_date for n in range(1, 5)] == [
        datetime.date(2028, 1, 5),
        datetime.date(2028, 4, 5),
        datetime.date(2028, 7, 5),
        datetime.date(2028, 10, 5),
    ]
    assert visits["FU1"].kind == VisitKind.FOLLOW_UP
    assert (visits["FU1"].window_start, visits["FU1"].window_end) == (
        datetime.date(2028, 1, 2),
        datetime.date(2028, 1, 8),
    )


def schedule_of(**treatment) -> ScheduleSpec:
    """A schedule with the given treatment cycles, 3-day windows and an end of treatment one cycle
    after the last."""
    return ScheduleSpec.model_validate(
        {
            "treatment": {"code": "C{n}", "window_before_days": 3, "window_after_days": 3, **treatment},
            "end_of_treatment": {"code": "EOT", "window_before_days": 3, "window_after_days": 3},
            "follow_up": {
                "code": "FU{n}",
                "visits": 1,
                "interval_months": 3,
                "window_before_days": 3,
                "window_after_days": 3,
            },
        }
    )


def test_follow_ups_from_a_month_end_land_on_the_last_day_of_shorter_months():
    plan = visit_plan(schedule=schedule_of(cycles=1, interval_days=28), day0=datetime.date(2026, 11, 2))
    assert plan[1].target_date == datetime.date(2026, 11, 30)
    assert plan[2].target_date == datetime.date(2027, 2, 28)


def test_the_number_of_cycles_comes_from_the_protocol():
    plan = visit_plan(schedule=schedule_of(cycles=3, interval_days=21), day0=DAY0)
    assert [v.code for v in plan] == ["C1", "C2", "C3", "EOT", "FU1"]
    assert plan[3].target_date == DAY0 + datetime.timedelta(days=63)


def test_creating_the_schedule_is_audited_with_the_callers_reason(participant, coordinator):
    visits = schedule(participant, coordinator)

    created = AuditEvent.objects.get(table_name="dosing_visit", record_pk=str(visits[0].pk))
    assert created.reason == "randomization"
    assert created.actor == coordinator
    assert created.subject_id == participant.pk


def test_a_schedule_cannot_be_created_twice(participant, coordinator):
    schedule(participant, coordinator)

    with pytest.raises(IntegrityError), audit_context(actor=coordinator, reason="again"):
        visit_schedule_create(participant=participant, day0=DAY0)


def test_rescheduling_a_visit_moves_its_window_with_it(participant, coordinator):
    second = schedule(participant, coordinator)[1]

    moved = visit_reschedule(
        visit=second, target_date=datetime.date(2026, 12, 3), rescheduled_by=coordinator, reason="public holiday"
    )

    assert (moved.window_start, moved.window_end) == (datetime.date(2026, 11, 30), datetime.date(2026, 12, 6))
    change = AuditEvent.objects.filter(table_name="dosing_visit", record_pk=str(second.pk)).last()
    assert (change.reason, change.actor) == ("public holiday", coordinator)


def test_rescheduling_needs_a_reason(participant, coordinator):
    second = schedule(participant, coordinator)[1]
    with pytest.raises(ReasonRequired):
        visit_reschedule(visit=second, target_date=datetime.date(2026, 12, 3), rescheduled_by=coordinator, reason=" ")
