from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from dosing.reminders import selectors, services
from dosing.reminders.models import Reminder
from enrollment.models import Participant
from trialsite import access
from trialsite.access import Capability


@login_required
def reminder_list(request):
    access.require(request.user, Capability.VIEW_PARTICIPANTS)
    status = request.GET.get("status") or None
    if status not in Reminder.Status.values:
        status = None
    page = Paginator(selectors.reminders_for(request.user, status=status), 50).get_page(request.GET.get("page"))
    return render(
        request,
        "reminders/reminder_list.html",
        {
            "page": page,
            "status": status,
            "statuses": Reminder.Status.choices,
            "may_opt_out": access.can(request.user, Capability.SCREEN),
        },
    )


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
