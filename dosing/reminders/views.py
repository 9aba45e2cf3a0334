from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from django.views.decorators.http import require_POST

from dosing.reminders import selectors, services
from dosing.reminders.models import Reminder
from enrollment.models import Participant
from trialsite import access
from trialsite.access import Capability

# Rows shown per group on the grouped page; "show all" pages through one group.
GROUP_LIMIT = 10


@login_required
def reminder_list(request):
    """Pending reminders grouped as overdue, this week (at the site) and later, a few of each;
    one group paged with `?group=`; every reminder of one status (history) with `?status=`."""
    access.require(request.user, Capability.VIEW_PARTICIPANTS)
    status = request.GET.get("status") or None
    if status not in Reminder.Status.values:
        status = None
    group = request.GET.get("group") if request.GET.get("group") in selectors.GROUPS else None
    now = timezone.now()
    page = groups = None
    if status is not None:
        page = Paginator(selectors.reminders_for(request.user, status=status), 50).get_page(request.GET.get("page"))
    elif group is not None:
        reminders = selectors.reminder_group(request.user, group, now=now)
        page = Paginator(reminders, 50).get_page(request.GET.get("page"))
    else:
        groups = selectors.reminder_groups(request.user, now=now, limit=GROUP_LIMIT)
        for entry in groups:
            entry["title"] = GROUP_TITLES[entry["key"]]
    return render(
        request,
        "reminders/reminder_list.html",
        {
            "page": page,
            "groups": groups,
            "group": group,
            "group_title": GROUP_TITLES.get(group),
            "status": status,
            "statuses": Reminder.Status.choices,
            "may_opt_out": access.can(request.user, Capability.SCREEN),
        },
    )


GROUP_TITLES = {
    "overdue": _lazy("Overdue: should have gone out"),
    "week": _lazy("This week"),
    "later": _lazy("Later"),
}


@login_required
@require_POST
def participant_opt_out(request, pk: int):
    participant = access.get_for_user(Participant.objects.all(), request.user, Capability.SCREEN, pk=pk)
    cancelled = services.participant_contact_opt_out(
        participant=participant, changed_by=request.user, reason=request.POST.get("reason", "")
    )
    messages.success(
        request,
        _("%(number)s will not be contacted; %(count)d pending reminder(s) cancelled.")
        % {"number": participant.label, "count": cancelled},
    )
    return redirect("reminder-list")
