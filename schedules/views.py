"""Pages of the visit schedule. Thin: check access, call the service, show a refusal at its field."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _

from enrollment.models import Participant
from schedules import services
from schedules.forms import UnscheduledVisitForm
from trialsite import access
from trialsite.access import Capability
from trialsite.exceptions import TrialRuleError


@login_required
def unscheduled_visit_add(request: HttpRequest, pk: int) -> HttpResponse:
    participant = access.get_for_user(
        Participant.objects.select_related("site__trial"), request.user, Capability.RECORD_VISITS, pk=pk
    )
    if not participant.site.trial.protocol.schedule.unscheduled.allowed:
        raise Http404("Not found")
    today = timezone.localdate(timezone=participant.site.zone)
    form = UnscheduledVisitForm(request.POST or None, initial={"visit_date": today})
    if request.method == "POST" and form.is_valid():
        try:
            visit = services.unscheduled_visit_add(
                participant=participant,
                visit_date=form.cleaned_data["visit_date"],
                reason=form.cleaned_data["reason"],
                added_by=request.user,
            )
        except TrialRuleError as error:
            form.add_error(error.field if error.field in form.fields else None, str(error.message))
        else:
            messages.success(request, _("Unscheduled visit %(code)s added.") % {"code": visit.code})
            return redirect("visit-detail", pk=visit.pk)
    return render(
        request,
        "schedules/unscheduled_visit_add.html",
        {"participant": participant, "form": form},
        status=400 if form.is_bound else 200,
    )
