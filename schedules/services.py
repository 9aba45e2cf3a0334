"""The visit schedule as data: a participant's plan is made from the protocol's `[schedule]`
(`visit_plan`, pure) and written at randomization (`visit_schedule_create`); staff add
unscheduled visits on demand (`unscheduled_visit_add`). Every write runs in an audit context.
The codes come from the protocol's patterns; none is written here."""

from __future__ import annotations

import dataclasses
import datetime
import functools

from dateutil.relativedelta import relativedelta
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Max

from enrollment.models import Participant, ParticipantStatus
from schedules.exceptions import UnscheduledVisitDateInvalid, UnscheduledVisitNotPossible, UnscheduledVisitsNotAllowed
from schedules.models import Visit, VisitKind
from schedules.signals import visits_created
from trialsite.audit import audit_context
from trialsite.exceptions import ReasonRequired
from trialsite.protocol_schema import ScheduleSpec, VisitWindow, visit_code


@dataclasses.dataclass(frozen=True)
class PlannedVisit:
    sequence: int
    code: str
    kind: str
    cycle: int | None
    target_date: datetime.date
    window_start: datetime.date
    window_end: datetime.date

    def fields(self) -> dict:
        # Shallow: every value is a date, a string or a number (asdict's deep copy cost more than
        # the rest of making a randomization's 17 visits).
        return dict(vars(self))


def _planned(code, kind, target, rules: VisitWindow, day0, cycle=None) -> dict:
    # No window opens before day 0: nothing of the trial happens before randomization.
    return {
        "code": code,
        "kind": kind,
        "cycle": cycle,
        "target_date": target,
        "window_start": max(target - datetime.timedelta(days=rules.window_before_days), day0),
        "window_end": target + datetime.timedelta(days=rules.window_after_days),
    }


def visit_plan(*, schedule: ScheduleSpec, day0: datetime.date) -> list[PlannedVisit]:
    """The planned visits of a participant randomized on `day0`, in date order.

    - Treatment cycle n: day (n-1) x `interval_days`; cycle 1 is day 0.
    - End of treatment: `days_after_last_cycle` (default one interval) after the last cycle.
    - Follow-up k: k x `interval_months` calendar months after the end-of-treatment target date,
      each counted from it (so from the 31st, the last day of a shorter month, without drifting).
    - Each assessment: every `interval_weeks` from day 0, while treatment lasts (before the
      end-of-treatment visit) or through follow-up (up to the last visit of the plan).
    """
    treatment = schedule.treatment
    kind = VisitKind.DOSING if treatment.dosing else VisitKind.CYCLE
    visits = [
        _planned(
            visit_code(treatment.code, cycle),
            kind,
            day0 + datetime.timedelta(days=(cycle - 1) * treatment.interval_days),
            treatment,
            day0,
            cycle=cycle,
        )
        for cycle in range(1, treatment.cycles + 1)
    ]
    end = schedule.end_of_treatment
    last_cycle = visits[-1]["target_date"]
    end_date = last_cycle + datetime.timedelta(days=end.days_after_last_cycle or treatment.interval_days)
    visits.append(_planned(end.code, VisitKind.END_OF_TREATMENT, end_date, end, day0))
    follow_up = schedule.follow_up
    for number in range(1, follow_up.visits + 1 if follow_up else 1):
        target = end_date + relativedelta(months=number * follow_up.interval_months)
        visits.append(_planned(visit_code(follow_up.code, number), VisitKind.FOLLOW_UP, target, follow_up, day0))
    last_date = visits[-1]["target_date"]
    for assessment in schedule.assessments:
        until = end_date - datetime.timedelta(days=1) if assessment.during == "treatment" else last_date
        number = 1
        while (target := day0 + datetime.timedelta(weeks=number * assessment.interval_weeks)) <= until:
            visits.append(_planned(visit_code(assessment.code, number), VisitKind.ASSESSMENT, target, assessment, day0))
            number += 1
    # Stable: on one date a cycle or the end of treatment comes before an assessment.
    ordered = sorted(visits, key=lambda visit: visit["target_date"])
    return [PlannedVisit(sequence=sequence, **visit) for sequence, visit in enumerate(ordered, start=1)]


@functools.cache
def _visits_insert_statement() -> tuple[str, list]:
    """One INSERT of any number of visits, a typed array per column, written once per process from
    the model's own columns (so it follows every migration)."""
    quote = connection.ops.quote_name
    fields = [field for field in Visit._meta.concrete_fields if not field.primary_key]
    statement = (
        f"INSERT INTO {quote(Visit._meta.db_table)} ({', '.join(quote(field.column) for field in fields)})"
        f" SELECT * FROM unnest({', '.join(f'%s::{field.db_type(connection)}[]' for field in fields)})"
        f" RETURNING {quote(Visit._meta.pk.column)}"
    )
    return statement, fields


def _visits_insert(visits: list[Visit]) -> list[Visit]:
    """What `Visit.objects.bulk_create(visits)` does, in the same one statement, without compiling
    it for every plan: the ORM took longer to compile a randomization's 17-visit INSERT than the
    database took to run it, audit trigger and all (bench/randomize_inprocess_bench.py)."""
    statement, fields = _visits_insert_statement()
    database = connections[DEFAULT_DB_ALIAS]  # not the proxy, which each value below would ask
    columns = [[field.get_db_prep_save(field.pre_save(visit, True), database) for visit in visits] for field in fields]
    with database.cursor() as cursor:
        cursor.execute(statement, columns)
        ids = [row[0] for row in cursor.fetchall()]
    for visit, pk in zip(visits, ids, strict=True):
        visit.pk = pk
        visit._state.adding = False
        visit._state.db = database.alias
    return visits


def visit_schedule_create(
    *, participant: Participant, day0: datetime.date, reminders_after_commit: bool = False
) -> list[Visit]:
    """Create the participant's visit plan from their trial's protocol, in one INSERT.

    Called inside the randomization transaction and its audit context, it adds no savepoint
    of its own (a failure rolls back the caller's whole transaction, which is what the
    randomization wants); called on its own, it is its own transaction, all or nothing.
    Receivers of `visits_created` (the reminders) write in the same transaction, unless
    `reminders_after_commit`: the randomization leaves its plan's reminders to be planned
    after commit (dosing.reminders), as of the participant's randomization time."""
    with transaction.atomic(savepoint=False):
        trial = participant.site.trial
        plan = visit_plan(schedule=trial.protocol.schedule, day0=day0)
        visits = _visits_insert(
            [
                Visit(
                    participant=participant,
                    site_id=participant.site_id,
                    protocol_version_id=trial.current_version_id,
                    **visit.fields(),
                )
                for visit in plan
            ]
        )
        visits_created.send(
            sender=Visit, visits=visits, participant=participant, reminders_after_commit=reminders_after_commit
        )
        return visits


def unscheduled_visit_add(*, participant: Participant, visit_date: datetime.date, added_by, reason: str) -> Visit:
    """Add an unscheduled visit on `visit_date` (its window is that day), numbered after the
    participant's earlier unscheduled visits and placed after the plan. The reason (an adverse
    event, a repeat check) is the audit trail's. Refused when the protocol does not allow
    unscheduled visits or the participant is not randomized and in the trial."""
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired(field="reason")
    with audit_context(actor=added_by, reason=f"unscheduled visit: {reason}"), transaction.atomic():
        # The participant row serialises two additions at once, so each gets its own number.
        participant = (
            Participant.objects.select_for_update(of=("self",)).select_related("site__trial").get(pk=participant.pk)
        )
        rules = participant.site.trial.protocol.schedule.unscheduled
        if not rules.allowed:
            raise UnscheduledVisitsNotAllowed()
        if participant.status != ParticipantStatus.RANDOMIZED:
            raise UnscheduledVisitNotPossible()
        visits = Visit.objects.filter(participant=participant)
        # The first visit's window opens on the randomization day.
        day0 = visits.order_by("sequence").values_list("window_start", flat=True).first()
        if day0 is None:
            raise UnscheduledVisitNotPossible()
        if visit_date < day0:
            raise UnscheduledVisitDateInvalid()
        number = visits.filter(kind=VisitKind.UNSCHEDULED).count() + 1
        visit = Visit.objects.create(
            participant=participant,
            site_id=participant.site_id,
            sequence=visits.aggregate(last=Max("sequence"))["last"] + 1,
            code=visit_code(rules.code, number),
            kind=VisitKind.UNSCHEDULED,
            target_date=visit_date,
            window_start=visit_date,
            window_end=visit_date,
            protocol_version_id=participant.site.trial.current_version_id,
        )
        visits_created.send(sender=Visit, visits=[visit], participant=participant)
        return visit
