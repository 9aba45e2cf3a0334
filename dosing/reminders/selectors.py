import datetime
import functools
import operator

from django.db.models import Q, QuerySet

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


# The reminders page's groups: what should have gone out and has not, what goes out before the
# week ends at the site, and the rest. Sent and cancelled reminders are history, read with the
# status filter.
GROUPS = ("overdue", "week", "later")
PENDING = (Reminder.Status.SCHEDULED, Reminder.Status.SENDING, Reminder.Status.FAILED)


def week_ends(user, now: datetime.datetime) -> dict[int, datetime.datetime]:
    """Per site the user sees reminders at: the end of the site's week (Monday 00:00 there)."""
    ends = {}
    for site in access.sites_for(user, Capability.VIEW_PARTICIPANTS).only("pk", "time_zone"):
        today = now.astimezone(site.zone).date()
        monday = today + datetime.timedelta(days=7 - today.weekday())
        ends[site.pk] = datetime.datetime.combine(monday, datetime.time(0, 0), tzinfo=site.zone)
    return ends


def reminder_group(user, group: str, *, now: datetime.datetime, ends=None) -> QuerySet[Reminder]:
    """One group's reminders, by due time, in one query whatever the number of sites."""
    ends = week_ends(user, now) if ends is None else ends
    this_week = functools.reduce(
        operator.or_, (Q(site_id=site_id, due_at__lt=end) for site_id, end in ends.items()), Q(pk__in=[])
    )
    pending = reminders_for(user).filter(status__in=PENDING)
    if group == "overdue":
        return pending.filter(due_at__lte=now)
    if group == "week":
        return pending.filter(this_week, due_at__gt=now)
    return pending.filter(due_at__gt=now).exclude(this_week)


def reminder_groups(user, *, now: datetime.datetime, limit: int) -> list[dict]:
    """The three groups, each its first `limit` reminders and how many there are: two queries
    a group, whatever the number of participants."""
    ends = week_ends(user, now)
    groups = []
    for group in GROUPS:
        reminders = reminder_group(user, group, now=now, ends=ends)
        groups.append({"key": group, "reminders": list(reminders[:limit]), "count": reminders.count()})
    return groups
