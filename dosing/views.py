"""Web pages for visits, the pharmacy and supply. Thin: check access, call the service, show
the refusal at its field. Pharmacy pages read kits through blinded selectors only."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from dosing import selectors, services
from dosing.exceptions import KitListInvalid, NoKitAvailable
from dosing.forms import (
    DispenseForm,
    ExcursionForm,
    KitImportForm,
    KitListGenerateForm,
    QuarantineDecisionForm,
    RepeatLabsForm,
    ReturnForm,
    ShipmentForm,
    VisitRecordForm,
)
from dosing.models import Decision, Kit, Shipment
from safety import open_events as safety_open_events
from trialsite import access, tenancy
from trialsite.access import Capability
from trialsite.exceptions import TrialRuleError

MAX_KIT_LIST_BYTES = 2 * 1024 * 1024


def _form_error(form, error: TrialRuleError) -> None:
    field = error.field if error.field in form.fields else None
    form.add_error(field, str(error.message))
    for line in getattr(error, "errors", []):
        form.add_error(field, line)


def _reasons(visit, dose) -> str:
    """The reasons of the latest labs: the last repeat's when the labs were repeated."""
    from dosing.templatetags.dosing import reasons_in_words

    latest = visit.repeat_labs.order_by("recorded_at", "id").last() or dose
    return "; ".join(reasons_in_words(latest, visit.site.trial))


def _announce(request, visit, outcome) -> None:
    """Say what the recorded labs mean, in words: a hold is a warning with what happens next,
    never a green "recorded"."""
    dose = outcome.dose
    if dose is None:
        messages.success(request, _("Visit %(code)s recorded.") % {"code": visit.code})
    elif dose.decision == Decision.HOLD:
        messages.warning(
            request,
            _(
                "Infusion held at %(code)s: %(reasons)s. The daily tablets continue. Repeat labs may be recorded "
                "on this page until the window closes on %(date)s; if they recover, the infusion is given."
            )
            % {
                "code": visit.code,
                "reasons": _reasons(visit, dose),
                "date": date_format(visit.window_end, "SHORT_DATE_FORMAT"),
            },
        )
    elif dose.decision == Decision.STOP:
        messages.error(
            request,
            _(
                "Treatment stopped at %(code)s: %(reasons)s. No infusion or tablets are given from now on; the "
                "remaining dosing visits are cancelled, end-of-treatment and follow-up visits stay planned."
            )
            % {"code": visit.code, "reasons": _reasons(visit, dose)},
        )
    else:
        messages.success(request, _("Visit %(code)s recorded: the infusion is given.") % {"code": visit.code})
    if outcome.no_kit:
        messages.error(request, str(NoKitAvailable().message))


def _review(visit) -> bool:
    """The participant has an ongoing grade 3+ adverse event of special interest: a dose given
    asks for the confirmation (the service decides whether this one does)."""
    return bool(safety_open_events.grade_3_special_interest(safety_open_events.open_events(visit.participant)))


@login_required
def visit_detail(request: HttpRequest, pk: int) -> HttpResponse:
    visit = selectors.visit_for(request.user, pk)
    return _visit_page(request, visit)


def _visit_page(request, visit, repeat_form=None, status=200) -> HttpResponse:
    kits = selectors.kits_blinded(visit.kits.all()).order_by("kit_type")
    dose = getattr(visit, "dose", None)
    may_record = access.can(request.user, Capability.RECORD_VISITS, visit.site_id)
    today = timezone.localdate(timezone=visit.site.zone)
    repeat_open = (
        may_record
        and dose is not None
        and dose.decision == Decision.HOLD
        and visit.actual_date is not None
        and visit.actual_date <= today <= visit.window_end
    )
    return render(
        request,
        "dosing/visit_detail.html",
        {
            "visit": visit,
            "dose": dose,
            "repeats": list(visit.repeat_labs.all()),
            "kits": kits,
            "may_record": may_record,
            "repeat_form": (repeat_form or RepeatLabsForm(initial={"measured_on": today}, review=_review(visit)))
            if repeat_open or repeat_form
            else None,
        },
        status=status,
    )


@login_required
@require_POST
def visit_repeat_labs(request: HttpRequest, pk: int) -> HttpResponse:
    visit = selectors.visit_for(request.user, pk, Capability.RECORD_VISITS)
    form = RepeatLabsForm(request.POST, review=_review(visit))
    if form.is_valid():
        try:
            outcome = services.visit_repeat_labs(visit=visit, recorded_by=request.user, **form.cleaned_data)
        except TrialRuleError as error:
            _form_error(form, error)
        else:
            _announce(request, visit, outcome)
            return redirect("visit-detail", pk=visit.pk)
    return _visit_page(request, visit, repeat_form=form, status=400)


@login_required
def visit_record(request: HttpRequest, pk: int) -> HttpResponse:
    visit = selectors.visit_for(request.user, pk, Capability.RECORD_VISITS)
    # The weight and labs already entered on the forms the dose reads: shown, and not asked again.
    on_forms = selectors.dose_inputs_on_forms(visit) if visit.is_dosing else {}
    # The participant's open adverse events, read before dosing; grade 3+ of special interest asks
    # for the confirmation (the service refuses a dose given without it).
    open_events = list(safety_open_events.open_events(visit.participant)) if visit.is_dosing else []
    review = bool(safety_open_events.grade_3_special_interest(open_events))
    form = VisitRecordForm(request.POST or None, dosing=visit.is_dosing, on_forms=on_forms, review=review)
    if request.method == "POST" and form.is_valid():
        try:
            outcome = services.visit_record(visit=visit, recorded_by=request.user, **form.cleaned_data)
        except TrialRuleError as error:
            _form_error(form, error)
        else:
            _announce(request, visit, outcome)
            return redirect("visit-detail", pk=visit.pk)
    events = [{"event": event, "term": safety_open_events.term_label(event.term)} for event in open_events]
    return render(request, "dosing/visit_record.html", {"visit": visit, "form": form, "open_events": events})


@login_required
def pharmacy(request: HttpRequest) -> HttpResponse:
    access.require(request.user, Capability.DISPENSE)
    return _pharmacy_page(request)


def _pharmacy_page(request, *, refused_kit=None, typed: str = "", errors=(), status: int = 200) -> HttpResponse:
    """The pharmacy page; after a refused dispense, the kit's row keeps what was typed and shows
    the refusal at its field (a banner as well when the row is on another page)."""
    queue = selectors.pharmacy_queue(
        request.user,
        dispense_page=request.GET.get("dispense_page"),
        return_page=request.GET.get("return_page"),
    )
    for kit in queue.to_dispense:
        # Set on every row, not only the refused one: the template asks each row, and a missing
        # attribute costs Django's lookup a dir() of the kit, twice per row.
        kit.typed_label, kit.dispense_errors = "", []
    _row_urls(queue.to_dispense, dispense_url="kit-dispense", excursion_url="kit-excursion")
    _row_urls(queue.awaiting_return, return_url="kit-return")
    _row_urls(queue.awaiting_kits, assign_url="visit-assign-kits")
    if refused_kit is not None:
        shown = False
        for kit in queue.to_dispense:
            if kit.pk == refused_kit.pk:
                kit.typed_label, kit.dispense_errors, shown = typed, list(errors), True
        if not shown:
            for error in errors:
                messages.error(request, f"{refused_kit.kit_number}: {error}")
    return render(
        request,
        "dosing/pharmacy.html",
        {
            "queue": queue,
            "dispense_form": DispenseForm(),
            "return_form": ReturnForm(),
            "excursion_form": ExcursionForm(),
        },
        status=status,
    )


# A primary key no row has, reversed once per page and replaced by each row's.
_ROW_PK = 2147483647


def _row_urls(rows, **names) -> None:
    """Give each row its form addresses (attribute -> URL name taking the row's pk) and its pk as
    text for the element ids: {% url %} per row, and an integer localized per use, were a large
    share of rendering a page of a hundred rows."""
    patterns = {attribute: reverse(name, args=[_ROW_PK]) for attribute, name in names.items()}
    for row in rows:
        row.row_id = str(row.pk)
        for attribute, pattern in patterns.items():
            setattr(row, attribute, pattern.replace(str(_ROW_PK), row.row_id))


def _pharmacy_kit(request, pk) -> Kit:
    return access.get_for_user(
        selectors.kits_blinded(Kit.objects.select_related("site")), request.user, Capability.DISPENSE, pk=pk
    )


def _pharmacy_post(request, pk, form_class, action, success) -> HttpResponse:
    kit = _pharmacy_kit(request, pk)
    form = form_class(request.POST)
    if form.is_valid():
        try:
            action(kit, form.cleaned_data)
        except TrialRuleError as error:
            _form_error(form, error)
        else:
            messages.success(request, success % {"number": kit.kit_number})
            return redirect("pharmacy")
    for errors in form.errors.values():
        for error in errors:
            messages.error(request, f"{kit.kit_number}: {error}")
    return redirect("pharmacy")


@login_required
@require_POST
def kit_dispense(request: HttpRequest, pk: int) -> HttpResponse:
    kit = _pharmacy_kit(request, pk)
    form = DispenseForm(request.POST)
    if form.is_valid():
        try:
            services.kit_dispense(kit=kit, label_number=form.cleaned_data["label_number"], dispensed_by=request.user)
        except TrialRuleError as error:
            _form_error(form, error)
        else:
            messages.success(request, _("Kit %(number)s dispensed.") % {"number": kit.kit_number})
            return redirect("pharmacy")
    errors = [str(error) for field_errors in form.errors.values() for error in field_errors]
    return _pharmacy_page(
        request, refused_kit=kit, typed=request.POST.get("label_number", "")[:40], errors=errors, status=400
    )


@login_required
@require_POST
def kit_return(request: HttpRequest, pk: int) -> HttpResponse:
    return _pharmacy_post(
        request,
        pk,
        ReturnForm,
        lambda kit, data: services.kit_return(kit=kit, returned_by=request.user, **data),
        _("Return of kit %(number)s recorded."),
    )


@login_required
@require_POST
def kit_excursion(request: HttpRequest, pk: int) -> HttpResponse:
    return _pharmacy_post(
        request,
        pk,
        ExcursionForm,
        lambda kit, data: services.kit_report_excursion(
            kit=kit, reported_by=request.user, description=data["description"]
        ),
        _("Kit %(number)s quarantined."),
    )


@login_required
@require_POST
def visit_assign_kits(request: HttpRequest, pk: int) -> HttpResponse:
    visit = selectors.visit_for(request.user, pk, Capability.DISPENSE)
    try:
        services.kits_assign(visit=visit, assigned_by=request.user)
    except TrialRuleError as error:
        messages.error(request, str(error.message))
    else:
        messages.success(request, _("Kits assigned for visit %(code)s.") % {"code": visit.code})
    return redirect("pharmacy")


@login_required
@require_POST
def shipment_receive(request: HttpRequest, pk: int) -> HttpResponse:
    shipment = access.get_for_user(Shipment.objects.all(), request.user, Capability.DISPENSE, pk=pk)
    try:
        services.shipment_receive(shipment=shipment, received_by=request.user)
    except TrialRuleError as error:
        messages.error(request, str(error.message))
    else:
        messages.success(request, _("Shipment %(number)s received.") % {"number": shipment.pk})
    return redirect("pharmacy")


@login_required
def accountability(request: HttpRequest) -> HttpResponse:
    if not (access.can(request.user, Capability.DISPENSE) or access.can(request.user, Capability.MANAGE_SUPPLY)):
        raise Http404("Not found")
    kits = list(selectors.kit_accountability(request.user))
    for kit in kits:
        kit.adherence = selectors.kit_adherence(kit)
    return render(
        request,
        "dosing/accountability.html",
        {"kits": kits, "participants": selectors.participant_accountability(request.user)},
    )


@login_required
def supply(request: HttpRequest) -> HttpResponse:
    selectors.require_supply(request.user)
    sites = selectors.supply_sites(request.user).select_related("trial")
    trial = tenancy.trial_for(request.user)
    import_form = KitImportForm()
    ship_form = ShipmentForm(sites=sites, trial=trial)
    generate_form = KitListGenerateForm(trial=trial)
    action = request.POST.get("action") if request.method == "POST" else None
    if action == "import":
        import_form = KitImportForm(request.POST, request.FILES)
        if import_form.is_valid():
            upload = import_form.cleaned_data["file"]
            try:
                if upload.size > MAX_KIT_LIST_BYTES:
                    raise KitListInvalid([_("The file is larger than 2 MB.")])
                try:
                    text = upload.read().decode("utf-8")
                except UnicodeDecodeError:
                    raise KitListInvalid([_("The file is not UTF-8 text.")]) from None
                kits = services.kits_import(csv_text=text, imported_by=request.user, trial=trial)
            except TrialRuleError as error:
                _form_error(import_form, error)
            else:
                messages.success(request, _("%(count)s kits imported into the depot.") % {"count": len(kits)})
                return redirect("supply")
    elif action == "generate":
        generate_form = KitListGenerateForm(request.POST, trial=trial)
        if generate_form.is_valid():
            try:
                kit_list = services.kit_list_generate(
                    trial=trial,
                    packaging_lot=generate_form.cleaned_data["packaging_lot"],
                    kits_per_type=generate_form.cleaned_data["kits_per_type"],
                    seed=generate_form.cleaned_data["seed"],
                    lots=generate_form.lots(),
                    created_by=request.user,
                )
            except TrialRuleError as error:
                _form_error(generate_form, error)
            else:
                messages.success(
                    request,
                    _("%(count)s kits generated into the depot (list SHA-256 %(sha)s).")
                    % {"count": kit_list.kit_count, "sha": kit_list.sha256},
                )
                return redirect("supply")
    elif action == "ship":
        ship_form = ShipmentForm(request.POST, sites=sites, trial=trial)
        if ship_form.is_valid():
            try:
                shipment = services.shipment_create(
                    site=ship_form.cleaned_data["site"], per_content=ship_form.per_content(), shipped_by=request.user
                )
            except TrialRuleError as error:
                _form_error(ship_form, error)
            else:
                messages.success(request, _("Shipment %(number)s sent.") % {"number": shipment.pk})
                return redirect("supply")
    return render(
        request,
        "dosing/supply.html",
        {
            "stock": selectors.stock_by_site(request.user),
            "depot": selectors.depot_stock(trial),
            "quarantined": selectors.quarantined_kits(request.user),
            "import_form": import_form,
            "generate_form": generate_form,
            "ship_form": ship_form,
            "decision_form": QuarantineDecisionForm(),
        },
    )


@login_required
@require_POST
def kit_quarantine_decision(request: HttpRequest, pk: int, decision: str) -> HttpResponse:
    selectors.require_supply(request.user)
    kit = access.get_for_user(Kit.objects.all(), request.user, Capability.MANAGE_SUPPLY, pk=pk)
    form = QuarantineDecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Give a reason."))
        return redirect("supply")
    try:
        if decision == "release":
            services.kit_release(kit=kit, released_by=request.user, reason=form.cleaned_data["reason"])
        else:
            services.kit_destroy(kit=kit, destroyed_by=request.user, reason=form.cleaned_data["reason"])
    except TrialRuleError as error:
        messages.error(request, str(error.message))
    else:
        messages.success(request, _("Kit %(number)s updated.") % {"number": kit.kit_number})
    return redirect("supply")
