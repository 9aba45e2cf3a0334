from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from enrollment.models import Participant
from safety import services
from safety.ctcae import TERMS
from safety.forms import (
    AdverseEventForm,
    EpisodeForm,
    ResolveForm,
    SaeReportForm,
    SaeSignForm,
    SusarAssessForm,
    SusarReportForm,
)
from safety.models import AdverseEvent, SaeReport, SusarAssessment
from trialsite import access
from trialsite.access import Capability
from trialsite.exceptions import TrialRuleError


def _participant(request, pk: int) -> Participant:
    return access.get_for_user(
        Participant.objects.select_related("site__trial"), request.user, Capability.VIEW_PARTICIPANTS, pk=pk
    )


def _show_error(form, error: TrialRuleError) -> None:
    field = error.field if error.field in form.fields else None
    form.add_error(field, str(error.message))


def _details(data: dict, **extra) -> services.AeDetails:
    return services.AeDetails(
        grade=data["grade"],
        onset_date=data["onset_date"],
        serious=data["serious"],
        seriousness=tuple(data["seriousness"]),
        awareness_at=data["awareness_at"],
        relation_infusion=data["relation_infusion"],
        relation_tablets=data["relation_tablets"],
        action_infusion=data["action_infusion"],
        action_tablets=data["action_tablets"],
        outcome=data["outcome"],
        died_on=data.get("died_on"),
        death_cause=data.get("death_cause") or "",
        **extra,
    )


def _term_label(code: str) -> str:
    term = TERMS.get(code)
    if term is None:
        return code
    return term.term_zh if (get_language() or "").startswith("zh") else term.term


@login_required
def adverse_event_list(request, pk: int):
    participant = _participant(request, pk)
    may_record = services.may_record(request.user, participant.site)
    form = AdverseEventForm(request.POST or None)
    if request.method == "POST":
        services.require_record(request.user, participant.site)
        if form.is_valid():
            data = form.cleaned_data
            try:
                event = services.ae_record(
                    participant=participant,
                    recorded_by=request.user,
                    details=_details(data, term=data["term"], term_text=data["term_text"]),
                )
            except TrialRuleError as error:
                _show_error(form, error)
            else:
                messages.success(request, _("Adverse event %(sequence)s recorded.") % {"sequence": event.sequence})
                return redirect("adverse-event-detail", pk=pk, sequence=event.sequence)
    events = AdverseEvent.objects.filter(participant=participant).order_by("sequence", "onset_date", "id")
    rows = [{"event": event, "term": _term_label(event.term)} for event in events]
    return render(
        request,
        "safety/adverse_event_list.html",
        {"participant": participant, "rows": rows, "form": form, "may_record": may_record},
    )


@login_required
def adverse_event_detail(request, pk: int, sequence: int):
    participant = _participant(request, pk)
    first = AdverseEvent.objects.filter(participant=participant, sequence=sequence, follows__isnull=True).first()
    if first is None:
        raise Http404
    action = request.POST.get("action") if request.method == "POST" else None
    grade_form = EpisodeForm(request.POST if action == "grade" else None, prefix="grade")
    resolve_form = ResolveForm(request.POST if action == "resolve" else None, prefix="resolve")
    report_form = SaeReportForm(request.POST if action == "report" else None, prefix="report")
    sign_form = SaeSignForm(request.POST if action == "sign" else None, prefix="sign")
    assess_form = SusarAssessForm(request.POST if action == "assess" else None, prefix="assess")
    susar_report_form = SusarReportForm(request.POST if action == "susar_report" else None, prefix="susar")
    if request.method == "POST":
        if action in ("assess", "susar_report"):
            access.require(request.user, Capability.ASSESS_SAE, participant.site_id)
        elif action == "sign":
            access.require(request.user, Capability.SIGN_ELIGIBILITY, participant.site_id)
        else:
            services.require_record(request.user, participant.site)
        try:
            if action == "grade" and grade_form.is_valid():
                services.ae_grade_change(
                    event=first, recorded_by=request.user, details=_details(grade_form.cleaned_data)
                )
                messages.success(request, _("Grade change recorded."))
                return redirect("adverse-event-detail", pk=pk, sequence=sequence)
            if action == "resolve" and resolve_form.is_valid():
                services.ae_resolve(event=first, recorded_by=request.user, **resolve_form.cleaned_data)
                messages.success(request, _("Adverse event resolved."))
                return redirect("adverse-event-detail", pk=pk, sequence=sequence)
            if action == "report" and report_form.is_valid():
                services.sae_report_write(event=first, written_by=request.user, **report_form.cleaned_data)
                messages.success(request, _("SAE report saved."))
                return redirect("adverse-event-detail", pk=pk, sequence=sequence)
            if action == "sign" and sign_form.is_valid():
                report = SaeReport.objects.filter(adverse_event=first).order_by("-version").first()
                if report is None:
                    raise Http404
                services.sae_report_sign(
                    report=report, signer=request.user, password=sign_form.cleaned_data["password"], request=request
                )
                messages.success(request, _("SAE report signed."))
                return redirect("adverse-event-detail", pk=pk, sequence=sequence)
            if action == "assess" and assess_form.is_valid():
                services.sae_assess(event=first, assessed_by=request.user, **assess_form.cleaned_data)
                messages.success(request, _("Assessment saved."))
                return redirect("adverse-event-detail", pk=pk, sequence=sequence)
            if action == "susar_report" and susar_report_form.is_valid():
                assessment = SusarAssessment.objects.filter(adverse_event=first).first()
                if assessment is None:
                    raise Http404
                services.susar_report_done(
                    assessment=assessment,
                    reported_by=request.user,
                    reference=susar_report_form.cleaned_data["report_reference"],
                )
                messages.success(request, _("Expedited report recorded."))
                return redirect("adverse-event-detail", pk=pk, sequence=sequence)
        except TrialRuleError as error:
            form = {
                "grade": grade_form,
                "resolve": resolve_form,
                "report": report_form,
                "sign": sign_form,
                "assess": assess_form,
                "susar_report": susar_report_form,
            }.get(action)
            if form is None:
                raise
            _show_error(form, error)
    episodes = AdverseEvent.objects.filter(participant=participant, sequence=sequence).order_by("onset_date", "id")
    serious = services.first_serious(first)
    reports = SaeReport.objects.filter(adverse_event=first).select_related("signature__signer").order_by("version")
    may_assess = serious is not None and services.may_assess(request.user, participant.site)
    assessment = SusarAssessment.objects.filter(adverse_event=first).first() if may_assess else None
    return render(
        request,
        "safety/adverse_event_detail.html",
        {
            "participant": participant,
            "first": first,
            "term": _term_label(first.term),
            "episodes": episodes,
            "current": services.current_episode(first),
            "serious": serious,
            "reports": reports,
            "grade_form": grade_form,
            "resolve_form": resolve_form,
            "report_form": report_form,
            "sign_form": sign_form,
            "may_record": services.may_record(request.user, participant.site),
            "may_sign": services.is_investigator(request.user, participant.site),
            "may_assess": may_assess,
            "assessment": assessment,
            "susar_status": services.susar_status(assessment) if may_assess else None,
            "assess_form": assess_form,
            "susar_report_form": susar_report_form,
        },
    )


@login_required
def susar_list(request):
    """The sponsor safety officer's work list: serious events to assess and SUSARs with their deadline."""
    access.require(request.user, Capability.ASSESS_SAE)
    rows = services.susar_rows(request.user)
    for row in rows:
        row["term"] = _term_label(row["event"].term)
    return render(request, "safety/susar_list.html", {"rows": rows})


def _report_page(request, scope):
    from safety import report_pdf, selectors

    report = selectors.safety_report(scope)
    closed = scope.closed
    groups = [*report.arms, report.total] if closed else [report.total]
    context = {
        "report": report,
        "closed": closed,
        "title": report_pdf.report_title(closed),
        "mark": report_pdf.report_mark(closed),
        "summary": report_pdf.summary_rows(report) if closed else None,
        "term_tables": [(group.label, report_pdf.term_rows(group)) for group in groups],
        "event_tables": [(group.label, report_pdf.event_table(group)) for group in (report.arms if closed else groups)],
        "pdf_url": "safety-closed-report-pdf" if closed else "safety-report-pdf",
    }
    return render(request, "safety/report.html", context)


def _report_pdf(scope):
    from django.http import HttpResponse

    from safety import report_pdf, selectors

    body = report_pdf.write_pdf(selectors.safety_report(scope))
    name = "closed-safety-report" if scope.closed else "open-safety-report"
    response = HttpResponse(body, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{scope.trial.nct_id}-{name}.pdf"'
    # A closed report must not sit in a shared cache.
    response["Cache-Control"] = "no-store"
    return response


@login_required
def safety_report(request):
    from safety import selectors

    return _report_page(request, selectors.open_scope(request.user))


@login_required
def safety_report_pdf(request):
    from safety import selectors

    return _report_pdf(selectors.open_scope(request.user))


@login_required
def closed_safety_report(request):
    from safety import selectors

    return _report_page(request, selectors.closed_scope(request.user))


@login_required
def closed_safety_report_pdf(request):
    from safety import selectors

    return _report_pdf(selectors.closed_scope(request.user))
