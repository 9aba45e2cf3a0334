"""Exports: one row per download or background export, so who exported what, when, from which
data version, blinded or not, is in the audit trail."""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils.translation import gettext_lazy as _

from trialsite.audit import Audited


class ExportKind(models.TextChoices):
    ENROLLMENT = "enrollment", _("Enrollment by site")
    SCREEN_FAILURES = "screen_failures", _("Screen failures by reason")
    ENROLLMENT_BY_MONTH = "enrollment_by_month", _("Enrollment by month")
    CONSORT = "consort", _("CONSORT flow")
    SUBJECTS = "subjects", _("Subjects (one row per screening)")
    VISITS = "visits", _("Visits")
    DATASET = "dataset", _("Full dataset")
    REPORT = "report", _("Enrollment report")
    CONSORT_DIAGRAM = "consort_diagram", _("CONSORT diagram")
    ADVERSE_EVENTS = "adverse_events", _("Adverse events")
    # Issue 19: every dataset under stable variable names, with its codebook and manifest.
    ANALYSIS = "analysis", _("Analysis package")
    # The backup of record: the unblinded ODM of the whole trial with every row, reloadable.
    ARCHIVE = "archive", _("Trial archive (ODM, reloadable)")


class ExportFormat(models.TextChoices):
    CSV = "csv", "CSV"
    XLSX = "xlsx", _("Excel (XLSX)")
    ODM = "odm", "CDISC ODM 1.3.2 XML"
    PDF = "pdf", "PDF"
    SVG = "svg", "SVG"
    PNG = "png", "PNG"
    XPT = "xpt", _("SAS transport (XPT v5)")
    SAV = "sav", _("SPSS (.sav)")
    DTA = "dta", _("Stata (.dta)")


class ExportStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    DONE = "done", _("Ready")
    FAILED = "failed", _("Failed")


class Export(Audited, models.Model):
    """An export spans the sites the requester may report on, so it has no single site; the
    sites and whether it was blinded are recorded on the row."""

    audit_site_column = None
    audit_clinical_fields = ()
    # Not file_path: where an unblinded export's file lies is nobody else's business.
    audit_blinded_visible = (
        "requested_by",
        "kind",
        "format",
        "site",
        "site_ids",
        "blinded",
        "language",
        "status",
        "progress",
        "row_count",
        "data_version",
        "error",
        "trial",
        "created_at",
        "started_at",
        "finished_at",
    )

    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=20, choices=ExportKind.choices)
    format = models.CharField(max_length=4, choices=ExportFormat.choices)
    # The trial the export was asked in: the worker builds it there, never across trials.
    trial = models.ForeignKey("trialsite.Trial", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    # One site's report, or (NULL) every site the requester may report on.
    site = models.ForeignKey("trialsite.Site", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    site_ids = ArrayField(models.BigIntegerField(), default=list)
    blinded = models.BooleanField(default=True)
    language = models.CharField(max_length=10, default="en")
    status = models.CharField(max_length=8, choices=ExportStatus.choices, default=ExportStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    # Relative to MEDIA_ROOT, e.g. exports/<uuid>.xml
    file_path = models.CharField(max_length=200, blank=True)
    row_count = models.PositiveIntegerField(null=True, blank=True)
    data_version = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(progress__lte=100), name="export_progress_is_a_percentage"),
        ]

    def __str__(self) -> str:
        return f"Export {self.pk} {self.kind}.{self.format} ({self.status})"

    @property
    def file_name(self) -> str:
        if self.kind in (ExportKind.ANALYSIS, ExportKind.ARCHIVE):
            # A statistician keeps packages (and archives) of several trials side by side: the
            # trial names the file.
            extension = {ExportFormat.XLSX: "xlsx", ExportFormat.ODM: "xml"}.get(self.format, "zip")
            trial = self.trial.nct_id if self.trial_id else "trial"
            return f"{trial}-{self.kind}-{self.pk}.{extension}"
        extension = "xml" if self.format == ExportFormat.ODM else self.format
        return f"{self.kind}-{self.pk}.{extension}"
