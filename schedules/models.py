"""Each participant's visits: the plan made from the protocol's `[schedule]` at randomization
(`services.visit_schedule_create`) and the unscheduled visits staff add to it. The same in form
for every arm, so a blinded user sees all of it."""

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
    # A treatment cycle of a schedule whose cycles give no dose (`dosing = false`).
    CYCLE = "cycle", _("Treatment cycle")
    # An assessment every N weeks (e.g. tumour imaging), a visit of its own.
    ASSESSMENT = "assessment", _("Assessment")
    # Added on demand by site staff, outside the plan.
    UNSCHEDULED = "unscheduled", _("Unscheduled")


class VisitStatus(models.TextChoices):
    SCHEDULED = "scheduled", _("Scheduled")
    COMPLETED = "completed", _("Completed")
    MISSED = "missed", _("Missed")
    # A dosing visit after treatment was stopped by a safety gate: no dose will be given.
    CANCELLED = "cancelled", _("Not done (treatment stopped)")
    # A visit after the participant withdrew: it will not happen, and it was not missed.
    NOT_DONE_WITHDRAWN = "not_done_withdrawn", _("Not done (withdrawn)")
    # A visit after the participant's death.
    NOT_DONE_DIED = "not_done_died", _("Not done (participant died)")


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
    # The plan and what happened are the same in form for every arm.
    audit_blinded_visible = (
        "participant",
        "site",
        "sequence",
        "code",
        "kind",
        "cycle",
        "target_date",
        "window_start",
        "window_end",
        "status",
        "actual_date",
        "out_of_window_reason",
        "is_deviation",
        "weight_kg",
        "recorded_by",
        "recorded_at",
        "protocol_version",
    )

    # No index of its own: the unique (participant, sequence) and (participant, code) lead with it,
    # and a third copy only cost every randomization 17 more index entries.
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="visits", db_index=False)
    # Copied from the participant, so site scoping and the audit trail need no join.
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    # Order in the plan (1, 2, ...; unscheduled visits after the plan), and the code staff use,
    # made from the protocol's code patterns (`[schedule]`).
    sequence = models.PositiveSmallIntegerField()
    code = models.CharField(_("visit"), max_length=10)
    kind = models.CharField(max_length=20, choices=VisitKind.choices)
    cycle = models.PositiveSmallIntegerField(null=True, blank=True)
    target_date = models.DateField(_("target date"))
    window_start = models.DateField(_("window opens"))
    window_end = models.DateField(_("window closes"))
    status = models.CharField(max_length=20, choices=VisitStatus.choices, default=VisitStatus.SCHEDULED)
    actual_date = models.DateField(_("visit date"), null=True, blank=True)
    out_of_window_reason = models.TextField(_("reason for a visit outside the window"), blank=True)
    is_deviation = models.BooleanField(_("protocol deviation"), default=False)
    weight_kg = models.DecimalField(_("body weight (kg)"), max_digits=5, decimal_places=1, null=True, blank=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    recorded_at = models.DateTimeField(null=True, blank=True)
    # The protocol version the visit was planned under (its code, kind and window came from it);
    # recording the visit later does not change it: what was done at the visit is told by the
    # version on its dose and forms.
    protocol_version = models.ForeignKey(
        "trialsite.ProtocolVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        # The table keeps the name it had when visits belonged to dosing: its rows, its audit
        # triggers and every audit event (`table_name`) stay as they are.
        db_table = "dosing_visit"
        ordering = ["participant", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["participant", "code"], name="visit_code_unique_per_participant"),
            models.UniqueConstraint(fields=["participant", "sequence"], name="visit_sequence_unique_per_participant"),
            models.CheckConstraint(
                condition=Q(window_start__lte=models.F("target_date")) & Q(target_date__lte=models.F("window_end")),
                name="visit_target_inside_window",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=["scheduled", "completed", "missed", "cancelled", "not_done_withdrawn", "not_done_died"]
                ),
                name="visit_status_valid",
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
