"""Visits, doses and drug kits.

A participant's visit plan is generated from the protocol at randomization (`services.
visit_schedule_create`). Doses and lab gates are recorded per dosing visit, the same way for
every arm. Kits carry their content (active/placebo) in one blinded column; everything a
blinded user sees names a kit by its random-looking number only."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from enrollment.models import Participant
from trialsite.audit import Audited
from trialsite.models import Site


class VisitKind(models.TextChoices):
    DOSING = "dosing", _("Dosing")
    END_OF_TREATMENT = "end_of_treatment", _("End of treatment")
    FOLLOW_UP = "follow_up", _("Follow-up")


class VisitStatus(models.TextChoices):
    SCHEDULED = "scheduled", _("Scheduled")
    COMPLETED = "completed", _("Completed")
    MISSED = "missed", _("Missed")
    # A dosing visit after treatment was stopped by a safety gate: no dose will be given.
    CANCELLED = "cancelled", _("Not done (treatment stopped)")


class Visit(Audited, models.Model):
    """One planned visit. Windows are stored (not recomputed) so that a later protocol change
    does not silently move a participant's past windows."""

    audit_subject_column = "participant_id"
    audit_clinical_fields = (
        "actual_date",
        "weight_kg",
        "out_of_window_reason",
        "target_date",
        "window_start",
        "window_end",
    )

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="visits")
    # Copied from the participant, so site scoping and the audit trail need no join.
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    # Order in the plan (1, 2, ...), and the code staff use: C1..C12, EOT, FU1..FU4.
    sequence = models.PositiveSmallIntegerField()
    code = models.CharField(_("visit"), max_length=10)
    kind = models.CharField(max_length=20, choices=VisitKind.choices)
    cycle = models.PositiveSmallIntegerField(null=True, blank=True)
    target_date = models.DateField(_("target date"))
    window_start = models.DateField(_("window opens"))
    window_end = models.DateField(_("window closes"))
    status = models.CharField(max_length=10, choices=VisitStatus.choices, default=VisitStatus.SCHEDULED)
    actual_date = models.DateField(_("visit date"), null=True, blank=True)
    out_of_window_reason = models.TextField(_("reason for a visit outside the window"), blank=True)
    is_deviation = models.BooleanField(_("protocol deviation"), default=False)
    weight_kg = models.DecimalField(_("body weight (kg)"), max_digits=5, decimal_places=1, null=True, blank=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    recorded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["participant", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["participant", "code"], name="visit_code_unique_per_participant"),
            models.UniqueConstraint(fields=["participant", "sequence"], name="visit_sequence_unique_per_participant"),
            models.CheckConstraint(
                condition=Q(window_start__lte=models.F("target_date")) & Q(target_date__lte=models.F("window_end")),
                name="visit_target_inside_window",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["scheduled", "completed", "missed", "cancelled"]), name="visit_status_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status="completed") | Q(actual_date__isnull=False), name="completed_visit_has_date"
            ),
            models.CheckConstraint(
                condition=Q(weight_kg__isnull=True) | Q(weight_kg__gt=0),
                name="visit_weight_positive",
            ),
        ]
        indexes = [models.Index(fields=["status", "window_end"], name="visit_open_by_window_end")]

    def __str__(self) -> str:
        return f"{self.participant} {self.code}"

    @property
    def is_dosing(self) -> bool:
        return self.kind == VisitKind.DOSING
