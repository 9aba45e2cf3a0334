from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters

from trialsite import access, selectors, tenancy
from trialsite.access import Capability
from trialsite.models import StaffRole


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The day's start in the trial the address names (or the user's only trial); someone
    working in several trials who named none chooses one first."""
    trial = tenancy.current_trial()
    if trial is None and len(tenancy.trial_ids_of(request.user)) > 1:
        return trials(request)
    staff_roles = (
        StaffRole.objects.filter(user=request.user).select_related("site__trial").order_by("site__code", "role")
    )
    if trial is not None:
        staff_roles = staff_roles.filter(site__trial=trial)
    from trialsite import readiness

    return render(
        request,
        "trialsite/home.html",
        {"staff_roles": staff_roles, "checklists": readiness.checklists_for(request.user, trial=trial)},
    )


@login_required
def trials(request: HttpRequest) -> HttpResponse:
    """The trials the user works in, each with their roles there: where they choose one."""
    by_trial: dict = {}
    for staff_role in (
        StaffRole.objects.filter(user=request.user)
        .select_related("site__trial")
        .order_by("site__trial__nct_id", "site__code", "role")
    ):
        by_trial.setdefault(staff_role.site.trial, []).append(staff_role)
    entries = [
        {"trial": trial, "url": tenancy.trial_url(trial), "staff_roles": staff_roles}
        for trial, staff_roles in by_trial.items()
    ]
    return render(request, "trialsite/trials.html", {"entries": entries})


@login_required
def audit_trail(request: HttpRequest) -> HttpResponse:
    """The monitor's reading of the trail: all events at their sites, or one record's history
    (`?table=...&pk=...`) or one participant's (`?subject=` an id, or a randomization or
    screening number such as NT-0001)."""
    access.require(request.user, Capability.READ_AUDIT)
    tables = selectors.audit_tables_for(request.user)
    table_name = request.GET.get("table") or None
    record_pk = request.GET.get("pk") or None
    subject = request.GET.get("subject") or None
    subject_id = selectors.audit_subject_for(request.user, subject)
    subject_error = table_error = None
    if subject is not None and subject_id is None:
        # Not the whole trail for a filter that could not be read.
        subject_error = _(
            "No participant at your sites has this number. Give a randomization or screening number, "
            "such as NT-0001, or an id, a whole number such as 12."
        )
    if table_name is not None and table_name not in dict(tables):
        table_error = _("Choose a table from the list.")
    events = selectors.audit_events_for(request.user, table_name=table_name, record_pk=record_pk, subject_id=subject_id)
    if subject_error or table_error:
        events = events.none()
    page = Paginator(events.values_list("pk", flat=True), 50).get_page(request.GET.get("page"))
    return render(
        request,
        "trialsite/audit_trail.html",
        {
            "page": page,
            "events": selectors.audit_rows_for(request.user, selectors.audit_events_in(page.object_list)),
            "tables": tables,
            "table_name": table_name,
            "table_error": table_error,
            "record_pk": record_pk,
            "subject": subject,
            "subject_error": subject_error,
            # The database role behind a change is for the people who audit the system: the
            # monitor and the unblinded staff; the others read who did it.
            "show_database_user": access.can(request.user, Capability.RAISE_QUERIES)
            or access.can(request.user, Capability.VIEW_ALLOCATION),
        },
        status=400 if subject_error or table_error else 200,
    )


# --- Two-factor ------------------------------------------------------------------------------


def _next_url(request) -> str:
    from django.utils.http import url_has_allowed_host_and_scheme

    candidate = request.POST.get("next") or request.GET.get("next") or "/"
    return candidate if url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()}) else "/"


@sensitive_post_parameters("password", "token")
@login_required
def two_factor_setup(request: HttpRequest) -> HttpResponse:
    """Enrol an authenticator app (scan, then confirm with a code), or remove it (password)."""
    from django.contrib import messages
    from django.shortcuts import redirect
    from django.utils.translation import gettext as _

    from trialsite import two_factor
    from trialsite.exceptions import TrialRuleError
    from trialsite.forms import TwoFactorRemoveForm, TwoFactorTokenForm

    device = two_factor.confirmed_device(request.user)
    token_form, remove_form = TwoFactorTokenForm(), TwoFactorRemoveForm()
    if request.method == "POST":
        if "remove" in request.POST and device is not None:
            remove_form = TwoFactorRemoveForm(request.POST)
            if remove_form.is_valid():
                try:
                    two_factor.device_remove(request=request, password=remove_form.cleaned_data["password"])
                except TrialRuleError as error:
                    remove_form.add_error(error.field, error.message)
                else:
                    messages.success(request, _("Two-factor authentication is off."))
                    return redirect("two-factor")
        elif device is None:
            token_form = TwoFactorTokenForm(request.POST)
            if token_form.is_valid():
                try:
                    two_factor.enrolment_confirm(request=request, token=token_form.cleaned_data["token"])
                except TrialRuleError as error:
                    token_form.add_error(error.field, error.message)
                else:
                    messages.success(request, _("Two-factor authentication is on."))
                    return redirect(_next_url(request))
    pending = None if device else two_factor.enrolment_start(request.user)
    return render(
        request,
        "trialsite/two_factor_setup.html",
        {
            "device": device,
            "pending": pending,
            "qr_svg": two_factor.qr_svg(pending) if pending else "",
            "secret": _base32(pending) if pending else "",
            "required": two_factor.required_for(request.user),
            "token_form": token_form,
            "remove_form": remove_form,
            "next": _next_url(request),
        },
    )


def _base32(device) -> str:
    import base64

    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[index : index + 4] for index in range(0, len(secret), 4))


@sensitive_post_parameters("password", "token")
@login_required
def two_factor_verify(request: HttpRequest) -> HttpResponse:
    """The second step of a login for a user with an authenticator app."""
    from django.shortcuts import redirect

    from trialsite import two_factor
    from trialsite.exceptions import TrialRuleError
    from trialsite.forms import TwoFactorTokenForm

    if two_factor.is_verified(request.user) or not two_factor.is_enrolled(request):
        return redirect(_next_url(request))
    form = TwoFactorTokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            two_factor.verify(request=request, token=form.cleaned_data["token"])
        except TrialRuleError as error:
            form.add_error(error.field, error.message)
        else:
            return redirect(_next_url(request))
    return render(request, "trialsite/two_factor_verify.html", {"form": form, "next": _next_url(request)})
