"""How a withdrawn or deceased participant's visit plan ends. Called by the withdrawal service
(enrollment) and the death record (safety) in their own transaction and audit context, and by
the daily missed-visit scan for anything a withdrawal left over, so no visit of a participant who
left the trial stays "scheduled" with its window long closed."""

from __future__ import annotations

from django.db.models import F, Q
from django.utils.translation import gettext_noop

from dosing.reminders.models import Reminder
from schedules.models import Visit, VisitStatus


def visits_end_for_withdrawal(*, participant_ids=None) -> int:
    """Close the still-open visits of withdrawn participants (all of them, or those given).

    A visit whose window closed before the withdrawal date was missed while the participant was
    still in the trial; every other scheduled visit will not happen: "Not done (withdrawn)".
    A visit marked missed whose window had not closed by the withdrawal date (the withdrawal was
    recorded late) was not missed either. Their scheduled reminders are cancelled with the
    reason. Must run inside the caller's audit context. Returns the visits changed."""
    withdrawn_on = F("participant__withdrawal__withdrawn_on")
    visits = Visit.objects.filter(participant__withdrawal__isnull=False)
    if participant_ids is not None:
        visits = visits.filter(participant_id__in=list(participant_ids))
    missed = visits.filter(status=VisitStatus.SCHEDULED, window_end__lt=withdrawn_on).update(status=VisitStatus.MISSED)
    not_done = visits.filter(
        Q(status=VisitStatus.SCHEDULED) | Q(status=VisitStatus.MISSED, window_end__gte=withdrawn_on)
    ).update(status=VisitStatus.NOT_DONE_WITHDRAWN)
    reminders = Reminder.objects.filter(status=Reminder.Status.SCHEDULED, participant__withdrawal__isnull=False)
    if participant_ids is not None:
        reminders = reminders.filter(participant_id__in=list(participant_ids))
    reminders.update(status=Reminder.Status.CANCELLED, status_reason=gettext_noop("participant withdrew"))
    return missed + not_done


def visits_end_for_death(*, participant_id: int, died_on) -> int:
    """Close the still-open visits of a participant who died on `died_on`, as a withdrawal does:
    a visit whose window closed before the death was missed; every other open one will not
    happen, "Not done (participant died)". Their scheduled reminders are cancelled. Must run
    inside the caller's audit context. Returns the visits changed."""
    visits = Visit.objects.filter(participant_id=participant_id)
    missed = visits.filter(status=VisitStatus.SCHEDULED, window_end__lt=died_on).update(status=VisitStatus.MISSED)
    not_done = visits.filter(
        Q(status=VisitStatus.SCHEDULED) | Q(status=VisitStatus.MISSED, window_end__gte=died_on)
    ).update(status=VisitStatus.NOT_DONE_DIED)
    Reminder.objects.filter(status=Reminder.Status.SCHEDULED, participant_id=participant_id).update(
        status=Reminder.Status.CANCELLED, status_reason=gettext_noop("participant died")
    )
    # A kit assigned at the day's dosing visit and not yet handed out is never given: back to stock.
    from dosing.services import kits_release_assigned  # dosing.services imports this module

    kits_release_assigned(participant_id=participant_id)
    return missed + not_done
