from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters

from enrollment.models import Participant
from randomization import codebreak, methods, selectors, services
from randomization.forms import GenerateForm, ImportForm, PasswordForm, SealedSheetOpenedForm, UnblindForm
from trialsite import access, tenancy
from trialsite.access import Capability
from trialsite.exceptions import TrialRuleError


def _form_error(form, error: TrialRuleError) -> None:
    field = error.field if error.field in form.fields else None
    form.add_error(field, str(error.message))


@login_required
def participant_randomize(request, pk: int):
    """GET shows what the allocation will rest on (never anything arm-related); POST confirms."""
    participant = access.get_for_user(
        Participant.objects.select_related("screening", "site__trial", "eligibility_signature__signer"),
        request.user,
        Capability.RANDOMIZE,
        pk=pk,
    )
    errors: dict[str, str] = {}
    if request.method == "POST":
        try:
            participant = services.participant_randomize(
                participant=participant, randomized_by=request.user, request=request
            )
        except TrialRuleError as error:
            errors[error.field or "non_field_errors"] = str(error.message)
        else:
            messages.success(
                request,
                _("Randomized: %(number)s. The visit plan is ready.") % {"number": participant.randomization_number},
            )
            return redirect("participant-detail", pk=pk)
    elif participant.randomization_number:
        return redirect("participant-detail", pk=pk)
    return render(
        request,
        "randomization/confirm.html",
        {"participant": participant, "basis": selectors.randomization_basis(participant), "errors": errors},
        status=400 if errors else 200,
    )


@sensitive_post_parameters("password", "token")
@login_required
def participant_unblind(request, pk: int):
    participant = access.get_for_user(Participant.objects.all(), request.user, Capability.EMERGENCY_UNBLIND, pk=pk)
    form = UnblindForm(request.POST or None)
    arm = None
    if request.method == "POST" and form.is_valid():
        try:
            arm = services.participant_unblind(
                participant=participant,
                unblinded_by=request.user,
                password=form.cleaned_data["password"],
                reason=form.cleaned_data["reason"],
                request=request,
            )
        except TrialRuleError as error:
            _form_error(form, error)
    return render(request, "randomization/unblind.html", {"participant": participant, "form": form, "arm": arm})


@login_required
def list_index(request):
    access.require(request.user, Capability.MANAGE_RANDOMIZATION)
    trial = tenancy.trial_for(request.user)
    pre_generates_slots = trial is None or methods.method_for(trial).pre_generates_slots
    generate_form = GenerateForm(
        request.POST if request.POST.get("action") == "generate" else None, pre_generates_slots=pre_generates_slots
    )
    import_form = ImportForm(
        request.POST if request.POST.get("action") == "import" else None,
        request.FILES if request.POST.get("action") == "import" else None,
    )
    if request.method == "POST":
        try:
            if request.POST.get("action") == "generate" and generate_form.is_valid():
                created = services.list_generate(trial=trial, created_by=request.user, **generate_form.cleaned_data)
                messages.success(request, _("List version %(version)s generated.") % {"version": created.version})
                return redirect("randomization-list-detail", pk=created.pk)
            if request.POST.get("action") == "import" and pre_generates_slots and import_form.is_valid():
                created = services.list_import(
                    trial=trial,
                    created_by=request.user,
                    csv_text=import_form.cleaned_data["csv_file"],
                    reason=import_form.cleaned_data["reason"],
                )
                messages.success(request, _("List version %(version)s imported.") % {"version": created.version})
                return redirect("randomization-list-detail", pk=created.pk)
        except TrialRuleError as error:
            _form_error(generate_form if request.POST.get("action") == "generate" else import_form, error)
    return render(
        request,
        "randomization/lists.html",
        {
            "lists": selectors.lists_for(request.user),
            "generate_form": generate_form,
            "import_form": import_form,
            "minimization": not pre_generates_slots,
            "may_print_sheets": codebreak.sites_to_print_for(request.user).exists(),
        },
    )


@sensitive_post_parameters("password", "token")
@login_required
def list_detail(request, pk: int):
    randomization_list = access.get_object_or_404(selectors.lists_for(request.user), pk=pk)
    form = PasswordForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.list_lock(
                randomization_list=randomization_list,
                locked_by=request.user,
                password=form.cleaned_data["password"],
                request=request,
            )
            messages.success(request, _("The list is locked; participants are randomized from it."))
            return redirect("randomization-list-detail", pk=pk)
        except TrialRuleError as error:
            _form_error(form, error)
    return render(
        request,
        "randomization/list_detail.html",
        {
            "randomization_list": randomization_list,
            "balance": selectors.balance(randomization_list),
            "minimization": randomization_list.method == randomization_list.Method.MINIMIZATION,
            "margins": selectors.margins(randomization_list),
            "arms": randomization_list.trial.arms.order_by("order"),
            "may_see_arms": access.can(request.user, Capability.VIEW_ALLOCATION),
            "form": form,
        },
    )


@sensitive_post_parameters("password", "token")
@login_required
def code_break_sheets(request):
    """The unblinded statistician prints each site's sealed code-break sheets (a POST: each
    printing is recorded). Anyone else finds nothing here."""
    from django.http import Http404, HttpResponse

    from randomization.models import CodeBreakSheetSet

    sites = codebreak.sites_to_print_for(request.user)
    if not sites:
        raise Http404("Not found")
    error = None
    if request.method == "POST":
        site = access.get_object_or_404(sites, pk=request.POST.get("site") or 0)
        try:
            content = codebreak.sheets_generate(
                site=site, generated_by=request.user, password=request.POST.get("password", ""), request=request
            )
        except TrialRuleError as refusal:
            error = str(refusal.message)
        else:
            response = HttpResponse(content, content_type="application/pdf")
            response["Content-Disposition"] = f'attachment; filename="code-break-sheets-{site.code}.pdf"'
            response["Cache-Control"] = "no-store"
            return response
    printings = CodeBreakSheetSet.objects.filter(site__in=sites).select_related(
        "site", "generated_by", "randomization_list"
    )
    return render(
        request,
        "randomization/code_break_sheets.html",
        {"sites": sites, "printings": printings[:50], "error": error},
        status=400 if error else 200,
    )


@sensitive_post_parameters("password", "token")
@login_required
def sealed_sheet_opened(request, pk: int):
    """The PI records afterwards that a participant's sealed code-break sheet was opened."""
    from django.utils import timezone

    participant = access.get_for_user(
        Participant.objects.select_related("site__trial"), request.user, Capability.EMERGENCY_UNBLIND, pk=pk
    )
    # The time typed is the site's clock, as written on the ward.
    with timezone.override(participant.site.zone):
        # No initial sheet number: it must be read off the sheet that was opened.
        form = SealedSheetOpenedForm(request.POST or None)
        valid = request.method == "POST" and form.is_valid()
    if valid:
        try:
            codebreak.sealed_sheet_opening_record(
                participant=participant, recorded_by=request.user, request=request, **form.cleaned_data
            )
        except TrialRuleError as error:
            _form_error(form, error)
        else:
            messages.success(request, _("The opening of the sealed sheet is recorded and the sponsor notified."))
            return redirect("participant-detail", pk=pk)
    return render(request, "randomization/sealed_sheet_opened.html", {"participant": participant, "form": form})
