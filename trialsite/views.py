from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from trialsite import access, selectors
from trialsite.access import Capability
from trialsite.models import StaffRole


@login_required
def home(request: HttpRequest) -> HttpResponse:
    staff_roles = (
        StaffRole.objects.filter(user=request.user).select_related("site__trial").order_by("site__code", "role")
    )
    return render(request, "trialsite/home.html", {"staff_roles": staff_roles})


@login_required
def audit_trail(request: HttpRequest) -> HttpResponse:
    """The monitor's reading of the trail: all events at their sites, or one record's history
    (`?table=...&pk=...`) or one participant's (`?subject=...`)."""
    access.require(request.user, Capability.READ_AUDIT)
    table_name = request.GET.get("table") or None
    record_pk = request.GET.get("pk") or None
    subject = request.GET.get("subject") or None
    events = selectors.audit_events_for(
        request.user,
        table_name=table_name,
        record_pk=record_pk,
        subject_id=int(subject) if subject and subject.isdigit() else None,
    )
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "trialsite/audit_trail.html",
        {
            "page": page,
            "events": selectors.redact_for(request.user, page.object_list),
            "table_name": table_name,
            "record_pk": record_pk,
            "subject": subject,
        },
    )
