"""Writes of the reports app: requesting an export and producing its file.

An export is an `Export` row (audited: who, what, when, blinded or not, from which data
version) and a file under MEDIA_ROOT/exports/. Small tables are produced while the user waits;
listings and the full dataset are produced by a Celery task that claims the row with a
conditional UPDATE, so a retried or duplicated task does nothing."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _

from reports import exports, selectors
from reports.models import Export, ExportFormat, ExportKind, ExportStatus
from reports.selectors import ReportScope
from trialsite.audit import audit_context, seal_after_commit
from trialsite.exceptions import TrialRuleError


class ExportNotAvailable(TrialRuleError):
    default_message = _("This export is not available in that format.")

    def __init__(self, message=None, *, field: str | None = "format"):
        super().__init__(message, field=field)


# Which formats each kind comes in.
FORMATS: dict[str, set[str]] = {
    ExportKind.ENROLLMENT: {ExportFormat.CSV, ExportFormat.XLSX},
    ExportKind.SCREEN_FAILURES: {ExportFormat.CSV, ExportFormat.XLSX},
    ExportKind.ENROLLMENT_BY_MONTH: {ExportFormat.CSV, ExportFormat.XLSX},
    ExportKind.CONSORT: {ExportFormat.CSV, ExportFormat.XLSX},
    ExportKind.SUBJECTS: {ExportFormat.CSV, ExportFormat.XLSX},
    ExportKind.VISITS: {ExportFormat.CSV, ExportFormat.XLSX},
    ExportKind.DATASET: {ExportFormat.XLSX, ExportFormat.ODM},
    ExportKind.REPORT: {ExportFormat.PDF},
    ExportKind.CONSORT_DIAGRAM: {ExportFormat.SVG, ExportFormat.PNG},
    ExportKind.ADVERSE_EVENTS: {ExportFormat.CSV, ExportFormat.XLSX},
    # CSV and the statistical formats come as a zip with the codebook and manifest.
    ExportKind.ANALYSIS: {ExportFormat.CSV, ExportFormat.XLSX, ExportFormat.XPT, ExportFormat.SAV, ExportFormat.DTA},
    ExportKind.ARCHIVE: {ExportFormat.ODM},
}
# Listings grow with the number of participants: always in the background.
BACKGROUND_KINDS = {
    ExportKind.SUBJECTS,
    ExportKind.VISITS,
    ExportKind.DATASET,
    ExportKind.ADVERSE_EVENTS,
    ExportKind.ANALYSIS,
    ExportKind.ARCHIVE,
}
CONTENT_TYPES = {
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ExportFormat.ODM: "application/xml",
    ExportFormat.PDF: "application/pdf",
    ExportFormat.SVG: "image/svg+xml",
    ExportFormat.PNG: "image/png",
}
ZIP_CONTENT_TYPE = "application/zip"


def content_type(export: Export) -> str:
    """An analysis package is a zip in every format but XLSX."""
    if export.kind == ExportKind.ANALYSIS and export.format != ExportFormat.XLSX:
        return ZIP_CONTENT_TYPE
    return CONTENT_TYPES[export.format]


def export_directory() -> Path:
    directory = Path(settings.MEDIA_ROOT) / "exports"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def export_request(*, user, kind: str, format: str, site_id: int | None = None, background: bool = True) -> Export:
    """Record an export for `user` (404 without "export reports" at the site or anywhere).
    In the background the task is queued after commit; otherwise it is produced now."""
    if kind not in FORMATS:
        raise ExportNotAvailable(_("Unknown export."), field="kind")
    if format not in FORMATS[kind]:
        raise ExportNotAvailable()
    scope = selectors.report_scope(user, site_id=site_id)
    if kind == ExportKind.ARCHIVE:
        from reports.archive import require_archivable

        require_archivable(scope)
    with audit_context(actor=user, reason="export requested"):
        export = Export.objects.create(
            requested_by=user,
            kind=kind,
            format=format,
            trial=scope.trial,
            site_id=site_id,
            site_ids=scope.site_ids,
            blinded=not scope.unblinded,
            language=translation.get_language() or settings.LANGUAGE_CODE,
        )
        if background:
            from reports.tasks import run_export

            transaction.on_commit(lambda: run_export.delay(export.pk))
    if not background:
        export_run(export_id=export.pk)
        export.refresh_from_db()
    return export


def exports_requeue() -> list[int]:
    """Hand again to the workers the exports whose message was lost (queued for longer than
    EXPORT_REQUEUE_SECONDS: the broker was down when it was sent) or whose worker died (running
    past the lease). Beat runs this; export_run's claim makes a duplicate delivery harmless."""
    from reports.tasks import run_export

    now = timezone.now()
    stale = Export.objects.filter(
        models.Q(status=ExportStatus.QUEUED, created_at__lt=now - timedelta(seconds=settings.EXPORT_REQUEUE_SECONDS))
        | models.Q(
            status=ExportStatus.RUNNING, started_at__lt=now - timedelta(seconds=settings.EXPORT_CLAIM_LEASE_SECONDS)
        )
    ).values_list("pk", flat=True)
    handed = list(stale)
    for export_id in handed:
        run_export.delay(export_id)
    return handed


def export_run(*, export_id: int) -> bool:
    """Produce the file of a queued export. Returns False when another run already claimed it
    (a retry or a duplicate delivery), so running it twice changes nothing. A run whose worker
    died (its claim older than EXPORT_CLAIM_LEASE_SECONDS) is taken over."""
    export = Export.objects.select_related("requested_by").filter(pk=export_id).first()
    if export is None:
        return False
    now = timezone.now()
    abandoned = now - timedelta(seconds=settings.EXPORT_CLAIM_LEASE_SECONDS)
    with audit_context(actor=export.requested_by, reason="export started"):
        claimed = (
            Export.objects.filter(pk=export_id)
            .filter(
                models.Q(status=ExportStatus.QUEUED) | models.Q(status=ExportStatus.RUNNING, started_at__lt=abandoned)
            )
            .update(status=ExportStatus.RUNNING, started_at=now, progress=0)
        )
    if not claimed:
        return False
    final = export_directory() / f"{uuid.uuid4().hex}.{export.file_name.rsplit('.', 1)[1]}"
    partial = final.with_suffix(final.suffix + ".part")
    progress = _ProgressOnItsOwnConnection(export)
    try:
        with translation.override(export.language), snapshot():
            # The requester's permissions now, not when they asked: a revoked role exports nothing.
            scope = selectors.report_scope(export.requested_by, site_id=export.site_id, trial=export.trial)
            version = selectors.data_version(scope)
            stamp = exports.make_stamp(scope, export_id=export.pk, version=version)
            rows = produce(export.kind, export.format, scope, stamp, partial, progress=progress.report)
        os.replace(partial, final)
    except Exception as error:
        partial.unlink(missing_ok=True)
        _set(
            export,
            actor=export.requested_by,
            status=ExportStatus.FAILED,
            error=type(error).__name__,
            finished_at=timezone.now(),
        )
        raise
    finally:
        progress.close()
    _set(
        export,
        actor=export.requested_by,
        status=ExportStatus.DONE,
        progress=100,
        row_count=rows,
        data_version=version,
        site_ids=scope.site_ids,
        blinded=not scope.unblinded,
        file_path=str(final.relative_to(Path(settings.MEDIA_ROOT))),
        finished_at=timezone.now(),
    )
    # Data that left the system: the audit trail as it stood is sealed outside the database.
    seal_after_commit(f"export {export.pk}")
    return True


def _set(export: Export, *, actor, **values) -> None:
    with audit_context(actor=actor, reason="export progress"):
        Export.objects.filter(pk=export.pk).update(**values)


@contextmanager
def snapshot():
    """One REPEATABLE READ transaction around an export's reads: every dataset, table and the
    data version come from the same moment, so a death or randomization committed meanwhile is
    in all of them or in none. Inside a caller's transaction (a small export made in a request,
    a test), that transaction is the snapshot already."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            # The listings' queries cost enough on paper for PostgreSQL to JIT-compile them, which
            # took 1.1 s of every 1.3 s block of 10,000 subjects (bench/export_bench.py).
            cursor.execute("SET LOCAL jit = off")
        yield


class _ProgressOnItsOwnConnection:
    """Progress is written on a second connection, committed at once, so the page shows it
    while the export's snapshot transaction is still reading."""

    def __init__(self, export: Export):
        self.export_id = export.pk
        self.side = None

    def report(self, percent: int) -> None:
        if self.side is None:
            self.side = connections.create_connection(DEFAULT_DB_ALIAS)
        with self.side.cursor() as cursor:
            cursor.execute(
                "UPDATE reports_export SET progress = %s WHERE id = %s AND progress < %s",
                [percent, self.export_id, percent],
            )

    def close(self) -> None:
        if self.side is not None:
            self.side.close()


def produce(kind: str, format: str, scope: ReportScope, stamp: exports.Stamp, path: Path, *, progress=None) -> int:
    """Write one export file; returns the number of rows (subjects for ODM)."""
    if kind == ExportKind.ANALYSIS:
        return write_analysis_package(format, scope, stamp, path, progress=progress)
    if kind == ExportKind.ARCHIVE:
        from reports.archive import write_archive

        with open(path, "w", encoding="utf-8") as stream:
            return write_archive(scope, stream, stamp, progress)
    if format == ExportFormat.CSV:
        with open(path, "w", encoding="utf-8", newline="") as stream:
            return exports.write_csv(exports.tables_for(kind, scope), stream, stamp, progress)
    if format == ExportFormat.XLSX:
        return exports.write_xlsx(exports.tables_for(kind, scope), path, stamp, progress)
    if format == ExportFormat.ODM:
        with open(path, "w", encoding="utf-8") as stream:
            return exports.write_odm(scope, stream, stamp, progress)
    if format == ExportFormat.PDF:
        from reports import pdf

        return pdf.write_pdf(scope, path, stamp)
    if format in (ExportFormat.SVG, ExportFormat.PNG):
        from reports import charts

        flow = selectors.consort_flow(scope)
        if format == ExportFormat.SVG:
            path.write_text(charts.consort_svg(flow, stamp=stamp), encoding="utf-8")
        else:
            charts.consort_png(flow, path, stamp=stamp)
        return 1
    raise ExportNotAvailable()


def analysis_package(scope: ReportScope, stamp: exports.Stamp):
    """The package of every dataset for `scope` (blinded unless the scope may see arms),
    stamped as the export row is: its id, requester, time, data version, sites and blinding."""
    import dataclasses

    from datasets.build import build_package

    package = build_package(scope, export_id=stamp.export_id)
    package.manifest = dataclasses.replace(
        package.manifest,
        trial=stamp.trial,
        export_id=stamp.export_id,
        exported_by=stamp.exported_by,
        exported_at=stamp.exported_at,
        data_version=stamp.data_version,
        blinded=stamp.blinded,
        site_codes=stamp.site_codes,
    )
    return package


def write_analysis_package(format: str, scope: ReportScope, stamp: exports.Stamp, path: Path, *, progress=None) -> int:
    """The analysis package in one format; returns the number of rows over all datasets."""
    from datasets import writers

    package = analysis_package(scope, stamp)

    def datasets_done(done: int, total: int) -> None:
        if progress is not None:
            progress(min(99, done * 100 // max(total, 1)))

    if format == ExportFormat.CSV:
        return writers.write_csv_zip(package, path, progress=datasets_done)
    if format == ExportFormat.XLSX:
        return writers.write_xlsx(package, path, progress=datasets_done)
    if format in (ExportFormat.XPT, ExportFormat.SAV, ExportFormat.DTA):
        return writers.write_stats_zip(package, path, format, progress=datasets_done)
    raise ExportNotAvailable()


def export_file(export: Export) -> Path:
    return Path(settings.MEDIA_ROOT) / export.file_path
