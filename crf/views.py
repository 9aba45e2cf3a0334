"""The form pages: thin; `crf.services.form_save` decides."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _

from crf import selectors, services, values
from crf.models import FormRecord
from enrollment.models import Participant
from trialsite import access
from trialsite.access import Capability
from trialsite.exceptions import TrialRuleError


def _participant(user, pk: int) -> Participant:
    return access.get_for_user(
        Participant.objects.select_related("site__trial"), user, Capability.VIEW_PARTICIPANTS, pk=pk
    )


def _form_or_404(participant: Participant, form_code: str, visit_code: str | None):
    try:
        return services.form_spec(participant.site.trial.protocol, form_code, visit_code)
    except services.UnknownForm:
        raise access.Http404("Not found") from None


@login_required
def form_list(request, pk: int):
    participant = _participant(request.user, pk)
    return render(
        request,
        "crf/form_list.html",
        {
            "participant": participant,
            "forms": selectors.participant_forms(participant),
            "may_record": access.can(request.user, Capability.RECORD_VISITS, participant.site_id),
        },
    )


def _entry_page(request, participant, form, visit_code, record):
    may_edit = access.can(request.user, Capability.RECORD_VISITS, participant.site_id)
    errors, posted = {}, None
    if request.method == "POST":
        access.require(request.user, Capability.RECORD_VISITS, participant.site_id)
        unblinded = services.sees_unblinded(request.user, participant.site_id, participant.site.trial.protocol)
        posted = {item.code: request.POST.get(item.code, "") for item in services.items_for(form, unblinded)}
        try:
            result = services.form_save(
                user=request.user,
                values=posted,
                reason=request.POST.get("reason", ""),
                record=record,
                participant=participant,
                form_code=form.code,
                visit_code=visit_code,
            )
        except TrialRuleError as error:
            errors = error.as_dict()
        else:
            for warning in result.warnings:
                messages.warning(request, services.in_language(warning))
            messages.success(request, _("Form saved."))
            if form.kind == "log":
                return redirect(
                    "crf-log-entry", pk=participant.pk, form_code=form.code, sequence=result.record.sequence
                )
            return redirect("crf-visit-form", pk=participant.pk, form_code=form.code, visit_code=visit_code)
    view = selectors.record_view(request.user, participant, form, record)
    for item in view["items"]:
        item.errors = errors.get(item.code, [])
        if posted is not None:
            item.text = posted.get(item.code, "")
    return render(
        request,
        "crf/form_entry.html",
        {
            "participant": participant,
            "form": form,
            "form_name": values.in_language(form.name, form.name_zh),
            "visit_code": visit_code,
            "record": record,
            "view": view,
            "form_errors": errors.get("non_field_errors", []),
            "reason_errors": errors.get("reason", []),
            "may_edit": may_edit,
            "reason": request.POST.get("reason", "") if request.method == "POST" else "",
        },
    )


@login_required
def visit_form(request, pk: int, form_code: str, visit_code: str):
    participant = _participant(request.user, pk)
    form = _form_or_404(participant, form_code, visit_code)
    record = FormRecord.objects.filter(participant=participant, form_code=form.code, visit_code=visit_code).first()
    return _entry_page(request, participant, form, visit_code, record)


@login_required
def log_entry_new(request, pk: int, form_code: str):
    participant = _participant(request.user, pk)
    form = _form_or_404(participant, form_code, None)
    access.require(request.user, Capability.RECORD_VISITS, participant.site_id)
    return _entry_page(request, participant, form, None, None)


@login_required
def log_entry(request, pk: int, form_code: str, sequence: int):
    participant = _participant(request.user, pk)
    form = _form_or_404(participant, form_code, None)
    record = access.get_object_or_404(
        FormRecord.objects.all(), participant=participant, form_code=form.code, visit_code=None, sequence=sequence
    )
    return _entry_page(request, participant, form, None, record)
