from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters

from enrollment import selectors, services
from enrollment.forms import RescreenForm, ScreeningForm, SignForm, WithdrawForm
from enrollment.models import Outcome, Participant, ParticipantStatus, Screening
from trialsite import access
from trialsite.access import Capability
from trialsite.exceptions import TrialRuleError


def _show(form, error: TrialRuleError) -> None:
    form.add_error(error.field if error.field in form.fields else None, str(error.message))


@login_required
def screening_new(request):
    sites = list(access.sites_for(request.user, Capability.SCREEN).select_related("trial").order_by("code"))
    if not sites:
        access.require(request.user, Capability.SCREEN)
    # A coordinator at several sites of the trial says where the patient is screened.
    chosen = request.POST.get("site") or request.GET.get("site")
    site = next((candidate for candidate in sites if candidate.code == chosen), sites[0])
    form = ScreeningForm(request.POST or None, trial=site.trial, sites=sites)
    if request.method == "POST" and form.is_valid():
        try:
            screening = services.screening_create(
                site=site,
                screened_by=request.user,
                consent_version=form.cleaned_data["consent_version"],
                consent_date=form.cleaned_data["consent_date"],
                answers=form.answers(),
                stratification=form.stratification(),
                request=request,
                **form.identifiers(),
            )
        except TrialRuleError as error:
            _show(form, error)
        else:
            return redirect("screening-detail", pk=screening.pk)
    return render(request, "enrollment/screening_form.html", {"form": form, "site": site, "sites": sites})


def _next_step(user, participant) -> dict | None:
    """The one thing to do next for an eligible, enrolled participant, as a primary button."""
    if participant is None or participant.status != ParticipantStatus.ENROLLED:
        return None
    if participant.screening.outcome != Outcome.ELIGIBLE:
        return None
    from randomization.services import signature_required

    detail = reverse("participant-detail", args=[participant.pk])
    if not participant.eligibility_signature_id and signature_required(participant.site.trial):
        if access.can(user, Capability.SIGN_ELIGIBILITY, participant.site_id):
            return {"label": _("Next: sign off eligibility"), "url": detail + "#sign"}
        return {
            "label": _("Next: eligibility sign-off by the principal investigator"),
            "url": detail,
            "note": _(
                "The protocol requires the PI's signature before randomization. The participant is on the PI's "
                '"Waiting for my signature" list.'
            ),
        }
    if access.can(user, Capability.RANDOMIZE, participant.site_id):
        return {
            "label": _("Next: randomize %(number)s") % {"number": participant.label},
            "url": reverse("participant-randomize", args=[participant.pk]),
        }
    return None


@login_required
def screening_log(request):
    access.require(request.user, Capability.VIEW_PARTICIPANTS)
    outcome = request.GET.get("outcome") if request.GET.get("outcome") in Outcome.values else None
    page = Paginator(selectors.screenings_for(request.user, outcome=outcome), 50).get_page(request.GET.get("page"))
    return render(
        request, "enrollment/screening_log.html", {"page": page, "outcome": outcome, "outcomes": Outcome.choices}
    )


@sensitive_post_parameters("password", "token")
@login_required
def screening_detail(request, pk: int):
    screening = access.get_for_user(
        Screening.objects.select_related("site__trial"), request.user, Capability.VIEW_PARTICIPANTS, pk=pk
    )
    may_edit = access.can(request.user, Capability.SCREEN, screening.site_id)
    consent = screening.consents.first()
    answers = dict(screening.answers.values_list("criterion_code", "answer"))
    initial = {
        "initials": screening.initials,
        "date_of_birth": screening.date_of_birth,
        "sex": screening.sex,
        "hospital_record_number": screening.hospital_record_number,
        "screening_date": screening.screening_date,
        "consent_version": consent.version if consent else "",
        "consent_date": consent.signed_on if consent else None,
        **{f"stratification_{code}": level for code, level in screening.stratification.items()},
        **{f"answer_{code}": answer for code, answer in answers.items()},
    }
    form = RescreenForm(request.POST or None, trial=screening.site.trial, initial=initial)
    participant = getattr(screening, "participant", None)
    if request.method == "POST":
        if not may_edit:
            access.require(request.user, Capability.SCREEN, screening.site_id)
        if form.is_valid():
            try:
                services.screening_update(
                    screening=screening,
                    changed_by=request.user,
                    reason=form.cleaned_data["reason"],
                    answers=form.answers(),
                    consent_date=form.cleaned_data["consent_date"],
                    consent_version=form.cleaned_data["consent_version"],
                    stratification=form.stratification(),
                    **form.identifiers(),
                )
            except TrialRuleError as error:
                _show(form, error)
            else:
                messages.success(request, _("Screening updated."))
                return redirect("screening-detail", pk=pk)
    return render(
        request,
        "enrollment/screening_detail.html",
        {
            "screening": screening,
            "form": form,
            "may_edit": may_edit,
            "show_record_number": may_edit,
            "participant": participant,
            "next_step": _next_step(request.user, participant),
        },
    )


@login_required
def participant_list(request):
    access.require(request.user, Capability.VIEW_PARTICIPANTS)
    search = (request.GET.get("q") or "").strip() or None
    status = request.GET.get("status") if request.GET.get("status") in ParticipantStatus.values else None
    page = Paginator(selectors.participants_for(request.user, search=search, status=status), 50).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "enrollment/participant_list.html",
        {
            "page": page,
            "search": search or "",
            "status": status,
            "statuses": ParticipantStatus.choices,
        },
    )


@login_required
def signature_queue(request):
    access.require(request.user, Capability.SIGN_ELIGIBILITY)
    return render(
        request, "enrollment/signature_queue.html", {"participants": selectors.awaiting_signature(request.user)}
    )


@sensitive_post_parameters("password", "token")
@login_required
def participant_detail(request, pk: int):
    participant = access.get_for_user(
        Participant.objects.select_related("screening", "site__trial", "withdrawal", "eligibility_signature__signer"),
        request.user,
        Capability.VIEW_PARTICIPANTS,
        pk=pk,
    )
    sign_form = SignForm(request.POST if request.POST.get("action") == "sign" else None)
    withdraw_form = WithdrawForm(request.POST if request.POST.get("action") == "withdraw" else None)
    if request.method == "POST":
        action = request.POST.get("action")
        capability = Capability.SIGN_ELIGIBILITY if action == "sign" else Capability.SCREEN
        access.require(request.user, capability, participant.site_id)
        try:
            if action == "sign" and sign_form.is_valid():
                services.eligibility_sign(
                    participant=participant,
                    signer=request.user,
                    password=sign_form.cleaned_data["password"],
                    request=request,
                )
                messages.success(request, _("Eligibility signed off."))
                return redirect("participant-detail", pk=pk)
            if action == "withdraw" and withdraw_form.is_valid():
                services.participant_withdraw(
                    participant=participant, withdrawn_by=request.user, **withdraw_form.cleaned_data
                )
                messages.success(request, _("The participant has withdrawn."))
                return redirect("participant-detail", pk=pk)
        except TrialRuleError as error:
            _show(sign_form if action == "sign" else withdraw_form, error)
    return render(
        request,
        "enrollment/participant_detail.html",
        {
            "participant": participant,
            "sign_form": sign_form,
            "withdraw_form": withdraw_form,
            "meaning": services.signature_meaning(participant),
            "may_sign": access.can(request.user, Capability.SIGN_ELIGIBILITY, participant.site_id),
            "may_withdraw": access.can(request.user, Capability.SCREEN, participant.site_id),
            "deviations": participant.deviations.all(),
        },
    )
