"""Writes of visits, doses and kits. Every function is atomic and runs inside the caller's
`audit_context` (or opens one), so each change is attributed and reasoned in the audit trail."""

from __future__ import annotations

import datetime

from dateutil.relativedelta import relativedelta
from django.db import transaction

from dosing.exceptions import VisitNotOpen
from dosing.models import Visit, VisitKind, VisitStatus
from enrollment.models import Participant


def visit_plan(*, visits_rules: dict, day0: datetime.date) -> list[dict]:
    """The planned visits for a participant randomized on `day0`, from the protocol's `[visits]`.

    - Cycle 1 is day 0 (the randomization day). Its window opens on day 0 (no dose can be given
      before randomization) and closes `window_after_days` later.
    - Cycles 2..N: day (n-1) x cycle length, window -before/+after days.
    - End of treatment: one cycle length after the last cycle, same window.
    - Follow-up k: k x interval months after the end-of-treatment target date, same window.
    """
    cycle_length = int(visits_rules["cycle_length_days"])
    before = datetime.timedelta(days=int(visits_rules["window_before_days"]))
    after = datetime.timedelta(days=int(visits_rules["window_after_days"]))
    cycles = int(visits_rules.get("cycles", 12))
    interval_months = int(visits_rules.get("follow_up_interval_months", 3))
    follow_ups = int(visits_rules.get("follow_up_visits", 0))

    plan: list[dict] = []
    for cycle in range(1, cycles + 1):
        target = day0 + datetime.timedelta(days=(cycle - 1) * cycle_length)
        plan.append(
            {
                "code": f"C{cycle}",
                "kind": VisitKind.DOSING,
                "cycle": cycle,
                "target_date": target,
                "window_start": target if cycle == 1 else target - before,
                "window_end": target + after,
            }
        )
    end_of_treatment = day0 + datetime.timedelta(days=cycles * cycle_length)
    plan.append(
        {
            "code": "EOT",
            "kind": VisitKind.END_OF_TREATMENT,
            "cycle": None,
            "target_date": end_of_treatment,
            "window_start": end_of_treatment - before,
            "window_end": end_of_treatment + after,
        }
    )
    for number in range(1, follow_ups + 1):
        target = end_of_treatment + relativedelta(months=number * interval_months)
        plan.append(
            {
                "code": f"FU{number}",
                "kind": VisitKind.FOLLOW_UP,
                "cycle": None,
                "target_date": target,
                "window_start": target - before,
                "window_end": target + after,
            }
        )
    for sequence, visit in enumerate(plan, start=1):
        visit["sequence"] = sequence
    return plan


def visit_schedule_create(*, participant: Participant, day0: datetime.date) -> list[Visit]:
    """Create the participant's visit plan. Called inside the randomization transaction and its
    audit context; the savepoint here keeps the plan all-or-nothing when called on its own.
    Hook for reminders: rows for the new visits belong in the same transaction."""
    with transaction.atomic():
        plan = visit_plan(visits_rules=participant.site.trial.visits, day0=day0)
        return Visit.objects.bulk_create(
            [Visit(participant=participant, site_id=participant.site_id, **visit) for visit in plan]
        )


def visit_reschedule(*, visit: Visit, target_date: datetime.date) -> Visit:
    """Move one scheduled visit to a new target date, keeping the width of its window. Must run
    inside an audit context with a reason (the target date is a clinical value)."""
    with transaction.atomic():
        visit = Visit.objects.select_for_update().get(pk=visit.pk)
        if visit.status != VisitStatus.SCHEDULED:
            raise VisitNotOpen(field="target_date")
        shift = target_date - visit.target_date
        visit.target_date = target_date
        visit.window_start += shift
        visit.window_end += shift
        visit.save(update_fields=["target_date", "window_start", "window_end"])
        return visit
