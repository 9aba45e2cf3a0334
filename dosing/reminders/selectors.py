from django.db.models import QuerySet

from dosing.reminders.models import Reminder
from trialsite import access
from trialsite.access import Capability


def reminders_for(user, *, status: str | None = None, participant_id: int | None = None) -> QuerySet[Reminder]:
    reminders = access.scope(Reminder.objects.all(), user, Capability.VIEW_PARTICIPANTS)
    if status:
        reminders = reminders.filter(status=status)
    if participant_id is not None:
        reminders = reminders.filter(participant_id=participant_id)
    return reminders.select_related("participant", "visit", "site").order_by("due_at", "id")
