"""The PI's Reports page, its downloads and the export status. Thin: the numbers come from
reports.selectors, the files from reports.services."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.views.decorators.http import require_POST

from reports import charts, selectors, services
from reports.models import Export, ExportFormat, ExportKind, ExportStatus
from trialsite import access
from trialsite.access import Capability
from trialsite.exceptions import TrialRuleError


def site_parameter(value) -> int | None:
    """?site=<id>: one site's report; anything that is not an id is a site that does not exist."""
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Http404("Not found") from None


TABLE_DOWNLOADS = [
    (ExportKind.ENROLLMENT, [ExportFormat.CSV, ExportFormat.XLSX]),
    (ExportKind.SCREEN_FAILURES, [ExportFormat.CSV, ExportFormat.XLSX]),
    (ExportKind.ENROLLMENT_BY_MONTH, [ExportFormat.CSV, ExportFormat.XLSX]),
    (ExportKind.CONSORT, [ExportFormat.CSV, ExportFormat.XLSX]),
    (ExportKind.CONSORT_DIAGRAM, [ExportFormat.SVG, ExportFormat.PNG]),
    (ExportKind.REPORT, [ExportFormat.PDF]),
]
BACKGROUND_DOWNLOADS = [
    (ExportKind.SUBJECTS, [ExportFormat.CSV, ExportFormat.XLSX]),
    (ExportKind.VISITS, [ExportFormat.CSV, ExportFormat.XLSX]),
    (ExportKind.DATASET, [ExportFormat.XLSX, ExportFormat.ODM]),
    (ExportKind.ADVERSE_EVENTS, [ExportFormat.CSV, ExportFormat.XLSX]),
    (
        ExportKind.ANALYSIS,
        [ExportFormat.CSV, ExportFormat.XLSX, ExportFormat.XPT, ExportFormat.SAV, ExportFormat.DTA],
    ),
    # Offered only to someone unblinded at every site, over all sites (reports.archive).
    (ExportKind.ARCHIVE, [ExportFormat.ODM]),
]
# The button of a format where its name alone would not say what the statistician gets.
BUTTON_TEXT = {
    ExportFormat.ODM: "CDISC ODM",
    ExportFormat.XPT: "SAS (XPT)",
    ExportFormat.SAV: "SPSS",
    ExportFormat.DTA: "Stata",
}


@login_required
def reports_home(request: HttpRequest) -> HttpResponse:
    access.require(request.user, Capability.EXPORT_REPORTS)
    site_id = site_parameter(request.GET.get("site"))
    scope = selectors.report_scope(request.user, site_id=site_id)
    report = selectors.enrollment_report(scope)
    flow = selectors.consort_flow(scope, report)
    months = selectors.enrollment_by_month(scope)
    chart = charts.enrollment_chart(months, scope.trial.target_enrollment)
    all_sites = selectors.report_scope(request.user).sites
    # This trial's exports (those from before exports named a trial were made with one trial loaded).
    exports = Export.objects.filter(Q(trial=scope.trial) | Q(trial__isnull=True), requested_by=request.user).order_by(
        "-created_at", "-id"
    )[:20]
    return render(
        request,
        "reports/reports.html",
        {
            "scope": scope,
            "report": report,
            "flow": flow,
            "months": months,
            "all_sites": all_sites,
            "site_id": site_id,
            "chart_svg": mark_safe(render_to_string("reports/enrollment_chart.svg", {"chart": chart})),  # noqa: S308 - our template, autoescaped
            "consort_svg": mark_safe(charts.consort_svg(flow)),  # noqa: S308 - our template, autoescaped
            "exports": exports,
            "columns": selectors.ENROLLMENT_COLUMNS,
            "rows": _enrollment_rows(report),
            "arm_rows": [(arm, report.total_by_arm[arm.code]) for arm in report.arms] if scope.unblinded else [],
            "failure_rows": [
                {
                    "code": reason["code"],
                    "text": reason["text"],
                    "values": [reason["by_site"][one.pk] for one in scope.sites],
                    "total": reason["total"],
                }
                for reason in report.failure_reasons
            ],
            "table_downloads": [(kind, ExportKind(kind).label, formats) for kind, formats in TABLE_DOWNLOADS],
            "background_downloads": [
                (kind, ExportKind(kind).label, [(format, _button_text(kind, format)) for format in formats])
                for kind, formats in BACKGROUND_DOWNLOADS
                if kind != ExportKind.ARCHIVE or (site_id is None and may_archive(scope))
            ],
        },
    )


def may_archive(scope) -> bool:
    from reports.archive import ArchiveNotAvailable, require_archivable

    try:
        require_archivable(scope)
    except ArchiveNotAvailable:
        return False
    return True


def _button_text(kind: str, format: str) -> str:
    if kind == ExportKind.ANALYSIS and format == ExportFormat.CSV:
        return gettext("CSV (zip)")
    return BUTTON_TEXT.get(format, format.upper())


def _enrollment_rows(report: selectors.EnrollmentReport) -> list[dict]:
    keys = [key for key, _label in selectors.ENROLLMENT_COLUMNS]
    rows = [
        {
            "label": entry["site"].code,
            "key": entry["site"].code,
            "total": False,
            "values": [(key, entry["counts"][key]) for key in keys],
        }
        for entry in report.sites
    ]
    rows.append(
        {
            "label": gettext("All sites"),
            "key": "all",
            "total": True,
            "values": [(key, report.total[key]) for key in keys],
        }
    )
    return rows


@login_required
def codebook(request: HttpRequest) -> HttpResponse:
    """The analysis package's datasets, variables, labels and codes, as the user would export them."""
    from datasets.codebook import codebook as codebook_of

    access.require(request.user, Capability.EXPORT_REPORTS)
    scope = selectors.report_scope(request.user, site_id=site_parameter(request.GET.get("site")))
    package, datasets = codebook_of(scope)
    return render(
        request, "reports/codebook.html", {"scope": scope, "manifest": package.manifest, "datasets": datasets}
    )


@login_required
@require_POST
def export_create(request: HttpRequest) -> HttpResponse:
    """Small tables come straight back as a file; listings and the dataset are queued."""
    access.require(request.user, Capability.EXPORT_REPORTS)
    kind, format = request.POST.get("kind", ""), request.POST.get("format", "")
    site_id = site_parameter(request.POST.get("site"))
    background = kind in services.BACKGROUND_KINDS
    try:
        export = services.export_request(
            user=request.user, kind=kind, format=format, site_id=site_id, background=background
        )
    except TrialRuleError as error:
        messages.error(request, str(error.message))
        return redirect("reports")
    if background:
        messages.success(
            request, gettext("Your export is being prepared; the download link appears below when it is ready.")
        )
        return redirect("reports")
    return _file_response(export)


@login_required
def export_download(request: HttpRequest, pk: int) -> HttpResponse:
    """Only the requester, still allowed to report on every site the export covers."""
    export = access.get_object_or_404(Export.objects.filter(requested_by=request.user), pk=pk)
    allowed = access.site_ids_with(request.user, Capability.EXPORT_REPORTS)
    if export.status != ExportStatus.DONE or not set(export.site_ids) <= allowed:
        raise Http404("Not found")
    if not export.blinded and not all(
        access.can(request.user, Capability.VIEW_ALLOCATION, site_id) for site_id in export.site_ids
    ):
        raise Http404("Not found")
    return _file_response(export)


def _file_response(export: Export) -> FileResponse:
    path = services.export_file(export)
    if not path.is_file():
        raise Http404("Not found")
    response = FileResponse(
        open(path, "rb"),
        as_attachment=True,
        filename=export.file_name,
        content_type=services.content_type(export),
    )
    response["X-Data-Version"] = str(export.data_version)
    return response
