from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from enrollment.models import Participant
from randomization import selectors, services
from randomization.forms import GenerateForm, ImportForm, PasswordForm, UnblindForm
from trialsite import access
from trialsite.access import Capability
from trialsite.exceptions import TrialRuleError
from trialsite.models import Trial


def _form_error(form, error: TrialRuleError) -> None:
    field = error.field if error.field in form.fields else None
    form.add_error(field, str(error.message))


@login_required
@require_POST
def participant_randomize(request, pk: int):
    participant = access.get_for_user(Participant.objects.all(), request.user, Capability.RANDOMIZE, pk=pk)
    try:
        participant = services.participant_randomize(
            participant=participant, randomized_by=request.user, request=request
        )
    except TrialRuleError as error:
        messages.error(request, str(error.message))
    else:
        messages.success(
            request,
            _("Randomized: %(number)s. The visit plan is ready.") % {"number": participant.randomization_number},
        )
    return redirect("participant-detail", pk=pk)


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
    trial = Trial.objects.filter(sites__in=access.site_ids_with(request.user, Capability.MANAGE_RANDOMIZATION)).first()
    generate_form = GenerateForm(request.POST if request.POST.get("action") == "generate" else None)
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
            if request.POST.get("action") == "import" and import_form.is_valid():
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
            "arms": randomization_list.trial.arms.order_by("order"),
            "may_see_arms": access.can(request.user, Capability.VIEW_ALLOCATION),
            "form": form,
        },
    )
