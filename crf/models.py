"""Case report forms as data: a record per (participant, form, visit) or per log entry, and one
row per item value. The items themselves are declared in the protocol file (`[[forms]]`)."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from enrollment.models import Participant
from trialsite.audit import Audited
from trialsite.models import Site


class FormStatus(models.TextChoices):
    NOT_STARTED = "not_started", _("not started")
    IN_PROGRESS = "in_progress", _("in progress")
    COMPLETE = "complete", _("complete")


class FormRecord(Audited, models.Model):
    """One filled form: a visit form at one visit, or one entry of a log (visit_code null,
    numbered by `sequence`). Its status counts only the items every reader sees, so it tells a
    blinded reader nothing about unblinded-only items."""

    audit_subject_column = "participant_id"
    audit_blinded_visible = (
        "participant",
        "site",
        "form_code",
        "visit_code",
        "sequence",
        "status",
        "protocol_version",
        "warnings",
        "created_by",
        "created_at",
        "updated_at",
    )

    participant = models.ForeignKey(
        Participant, on_delete=models.PROTECT, related_name="form_records", verbose_name=_("participant")
    )
    # The row's site, copied from its participant, so site scoping and the audit trail need no join.
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+", verbose_name=_("site"))
    form_code = models.CharField(_("form"), max_length=20)
    visit_code = models.CharField(_("visit"), max_length=20, null=True, blank=True)
    sequence = models.PositiveIntegerField(_("entry"), default=1)
    status = models.CharField(_("status"), max_length=12, choices=FormStatus.choices, default=FormStatus.NOT_STARTED)
    # The protocol version the form was first saved under: a later version may change its items.
    protocol_version = models.ForeignKey(
        "trialsite.ProtocolVersion",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("protocol version"),
    )
    # The protocol's warnings raised by the saved values (non-blocking), as item, text and text_zh.
    warnings = models.JSONField(_("warnings"), default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", verbose_name=_("entered by")
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("case report form")
        ordering = ["participant", "form_code", "visit_code", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["participant", "form_code", "visit_code"],
                condition=Q(visit_code__isnull=False),
                name="crf_visit_form_once_per_visit",
            ),
            models.UniqueConstraint(
                fields=["participant", "form_code", "sequence"],
                condition=Q(visit_code__isnull=True),
                name="crf_log_entry_numbered_once",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.participant} {self.form_code} {self.visit_code or self.sequence}"


class ItemValue(Audited, models.Model):
    """One item's value, JSON normalised by type (integer: a number; decimal: its digits as text;
    date: YYYY-MM-DD; yes/no: true/false; choice: the code; text: the text). Written when the item
    is first filled; changing (or clearing) it afterwards is an UPDATE of a clinical column, which
    the audit trigger refuses without a reason.

    An unblinded-only item keeps its value in `unblinded_value`, a column the audit trail shows
    blinded readers as blinded (an update of it alone is not shown to them at all)."""

    audit_subject_column = "participant_id"
    audit_clinical_fields = ("value", "unblinded_value")
    audit_blinded_visible = ("record", "participant", "site", "item_code", "value")

    record = models.ForeignKey(FormRecord, on_delete=models.PROTECT, related_name="values", verbose_name=_("form"))
    participant = models.ForeignKey(
        Participant, on_delete=models.PROTECT, related_name="+", verbose_name=_("participant")
    )
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+", verbose_name=_("site"))
    item_code = models.CharField(_("item"), max_length=20)
    value = models.JSONField(_("value"), null=True, blank=True)
    unblinded_value = models.JSONField(_("unblinded value"), null=True, blank=True)

    class Meta:
        verbose_name = _("form item value")
        constraints = [models.UniqueConstraint(fields=["record", "item_code"], name="crf_item_once_per_record")]

    def __str__(self) -> str:
        return f"{self.record} {self.item_code}"
