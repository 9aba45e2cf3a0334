"""The adverse event log and serious adverse event reports.

An adverse event is not arm data: blinded staff record and read it. Its relation to treatment
is said per study product in the blinded words ("study infusion", "study tablets"), never per
arm. A change of grade is a new record that `follows` the first record of the event (CTCAE
practice: one record per grade episode); the earlier record ends on the day of the change."""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from enrollment.models import Participant
from trialsite.audit import Audited
from trialsite.models import Signature, Site


class Seriousness(models.TextChoices):
    DEATH = "death", _("Resulted in death")
    LIFE_THREATENING = "life_threatening", _("Life-threatening")
    HOSPITALISATION = "hospitalisation", _("Required or prolonged hospitalisation")
    DISABILITY = "disability", _("Persistent or significant disability or incapacity")
    CONGENITAL_ANOMALY = "congenital_anomaly", _("Congenital anomaly or birth defect")
    IMPORTANT_MEDICAL_EVENT = "important_medical_event", _("Other important medical event")


class Relation(models.TextChoices):
    NOT_RELATED = "not_related", _("Not related")
    UNLIKELY = "unlikely", _("Unlikely")
    POSSIBLE = "possible", _("Possible")
    PROBABLE = "probable", _("Probable")
    DEFINITE = "definite", _("Definite")


class Action(models.TextChoices):
    # No dose reduction: the protocol gives the infusion by weight and the tablets at one dose.
    NONE = "none", _("Dose not changed")
    HELD = "held", _("Dose held")
    WITHDRAWN = "withdrawn", _("Product withdrawn")
    NOT_APPLICABLE = "not_applicable", _("Not applicable")


class Outcome(models.TextChoices):
    RECOVERED = "recovered", _("Recovered/resolved")
    RECOVERING = "recovering", _("Recovering/resolving")
    NOT_RECOVERED = "not_recovered", _("Not recovered/not resolved")
    SEQUELAE = "sequelae", _("Recovered/resolved with sequelae")
    FATAL = "fatal", _("Fatal")
    UNKNOWN = "unknown", _("Unknown")


class AdverseEvent(Audited, models.Model):
    audit_subject_column = "participant_id"
    audit_blinded_visible = (
        "participant",
        "site",
        "sequence",
        "follows",
        "term",
        "term_text",
        "grade",
        "onset_date",
        "resolution_date",
        "serious",
        "seriousness",
        "awareness_at",
        "relation_infusion",
        "relation_tablets",
        "action_infusion",
        "action_tablets",
        "outcome",
        "special_interest",
        "protocol_version",
        "recorded_by",
        "recorded_at",
    )

    participant = models.ForeignKey(
        Participant, on_delete=models.PROTECT, related_name="adverse_events", verbose_name=_("participant")
    )
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+", verbose_name=_("site"))
    # The event's number within the participant (AE 1, AE 2); a grade change keeps the number.
    sequence = models.PositiveIntegerField(_("event number"))
    follows = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="grade_changes", verbose_name=_("follows")
    )
    term = models.CharField(_("CTCAE term"), max_length=40)
    term_text = models.CharField(_("term in words"), max_length=200, blank=True)
    grade = models.PositiveSmallIntegerField(_("grade"), validators=[MinValueValidator(1), MaxValueValidator(5)])
    onset_date = models.DateField(_("onset date"))
    resolution_date = models.DateField(_("resolution date"), null=True, blank=True)
    serious = models.BooleanField(_("serious"), default=False)
    seriousness = ArrayField(
        models.CharField(max_length=30, choices=Seriousness.choices),
        default=list,
        blank=True,
        verbose_name=_("seriousness criteria"),
    )
    # When the site learnt the event was serious: the reporting clock runs from here.
    awareness_at = models.DateTimeField(_("site aware of seriousness at"), null=True, blank=True)
    relation_infusion = models.CharField(
        _("relation to the study infusion"), max_length=20, choices=Relation.choices, blank=True
    )
    relation_tablets = models.CharField(
        _("relation to the study tablets"), max_length=20, choices=Relation.choices, blank=True
    )
    action_infusion = models.CharField(
        _("action taken with the study infusion"), max_length=20, choices=Action.choices, blank=True
    )
    action_tablets = models.CharField(
        _("action taken with the study tablets"), max_length=20, choices=Action.choices, blank=True
    )
    outcome = models.CharField(_("outcome"), max_length=20, choices=Outcome.choices, default=Outcome.NOT_RECOVERED)
    special_interest = models.BooleanField(_("adverse event of special interest"), default=False)
    protocol_version = models.ForeignKey(
        "trialsite.ProtocolVersion",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("protocol version"),
    )
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", verbose_name=_("recorded by")
    )
    recorded_at = models.DateTimeField(_("recorded at"), auto_now_add=True)

    class Meta:
        verbose_name = _("adverse event")
        verbose_name_plural = _("adverse events")
        ordering = ["participant", "sequence", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(grade__gte=1, grade__lte=5), name="ae_grade_1_to_5"),
            models.CheckConstraint(
                condition=Q(serious=False) | Q(awareness_at__isnull=False), name="sae_has_awareness_time"
            ),
            # One first record per event number; grade changes share it.
            models.UniqueConstraint(
                fields=["participant", "sequence"], condition=Q(follows__isnull=True), name="one_first_ae_per_number"
            ),
        ]

    def __str__(self) -> str:
        return f"AE {self.sequence} of participant {self.participant_id}: {self.term} grade {self.grade}"

    @property
    def first(self) -> "AdverseEvent":
        return self.follows or self

    @property
    def seriousness_labels(self) -> list[str]:
        return [Seriousness(value).label for value in self.seriousness]


class SaeReport(Audited, models.Model):
    """One version of the serious adverse event report: version 1 is the initial report, later
    versions are follow-ups. The PI signs a complete version with their password."""

    audit_subject_column = "participant_id"
    audit_blinded_visible = (
        "participant",
        "site",
        "adverse_event",
        "version",
        "narrative",
        "complete",
        "signature",
        "protocol_version",
        "written_by",
        "written_at",
    )

    participant = models.ForeignKey(
        Participant, on_delete=models.PROTECT, related_name="+", verbose_name=_("participant")
    )
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+", verbose_name=_("site"))
    # The event's first record (the one the clock started on).
    adverse_event = models.ForeignKey(
        AdverseEvent, on_delete=models.PROTECT, related_name="sae_reports", verbose_name=_("adverse event")
    )
    version = models.PositiveSmallIntegerField(_("version"))
    narrative = models.TextField(_("narrative"), blank=True)
    complete = models.BooleanField(_("complete"), default=False)
    signature = models.OneToOneField(
        Signature, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("signature")
    )
    protocol_version = models.ForeignKey(
        "trialsite.ProtocolVersion",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("protocol version"),
    )
    written_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", verbose_name=_("written by")
    )
    written_at = models.DateTimeField(_("written at"), auto_now_add=True)

    class Meta:
        verbose_name = _("SAE report")
        verbose_name_plural = _("SAE reports")
        ordering = ["adverse_event", "version"]
        constraints = [
            models.UniqueConstraint(fields=["adverse_event", "version"], name="one_sae_report_per_version"),
        ]

    def __str__(self) -> str:
        return f"SAE report v{self.version} of AE {self.adverse_event_id}"


class SaeNotice(Audited, models.Model):
    """The SAE clock's outbox: the initial notice and the escalations at 12 and 20 hours, written
    with the event's seriousness; sent once each, like visit reminders (claimed with a lease)."""

    class Kind(models.TextChoices):
        INITIAL = "initial", _("Serious adverse event reported")
        HOURS_12 = "12h", _("12 hours: SAE report not signed")
        HOURS_20 = "20h", _("20 hours: SAE report not signed")

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", _("Scheduled")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    audit_subject_column = "participant_id"
    audit_blinded_visible = (
        "participant",
        "site",
        "adverse_event",
        "kind",
        "due_at",
        "status",
        "enqueued_at",
        "claimed_at",
        "attempts",
        "sent_at",
        "recipients",
        "status_reason",
    )

    participant = models.ForeignKey(
        Participant, on_delete=models.PROTECT, related_name="+", verbose_name=_("participant")
    )
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+", verbose_name=_("site"))
    adverse_event = models.ForeignKey(
        AdverseEvent, on_delete=models.PROTECT, related_name="sae_notices", verbose_name=_("adverse event")
    )
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    due_at = models.DateTimeField(_("due at"))
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.SCHEDULED)
    enqueued_at = models.DateTimeField(_("handed to the queue at"), null=True, blank=True)
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    recipients = models.TextField(_("recipients"), blank=True)
    status_reason = models.TextField(_("status reason"), blank=True)

    class Meta:
        verbose_name = _("SAE notice")
        verbose_name_plural = _("SAE notices")
        ordering = ["due_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["adverse_event", "kind"], name="one_sae_notice_per_kind"),
        ]
        indexes = [models.Index(fields=["due_at"], condition=Q(status="scheduled"), name="sae_notice_due")]

    def __str__(self) -> str:
        return f"SAE notice {self.kind} for AE {self.adverse_event_id}"


class SusarAssessment(Audited, models.Model):
    """The sponsor's assessment of one serious event (its first record): causality and
    expectedness against the reference safety information. Related and unexpected makes it a
    SUSAR, to be reported to regulators and ethics within 7 days of awareness when fatal or
    life-threatening, 15 days otherwise; `reported_at` marks the expedited report sent."""

    class Expectedness(models.TextChoices):
        EXPECTED = "expected", _("Expected")
        UNEXPECTED = "unexpected", _("Unexpected")

    audit_subject_column = "participant_id"
    audit_blinded_visible = (
        "participant",
        "site",
        "adverse_event",
        "related",
        "expectedness",
        "reference",
        "assessed_by",
        "assessed_at",
        "deadline",
        # Not reported_at, report_reference, reported_by: the sponsor sends the expedited report
        # after breaking the blind, and only for a participant on active product (a SUSAR on
        # placebo is no adverse reaction), so whether and when it was sent names the arm. An
        # update of only these columns is left out of a blinded reader's audit trail altogether.
    )

    participant = models.ForeignKey(
        Participant, on_delete=models.PROTECT, related_name="+", verbose_name=_("participant")
    )
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+", verbose_name=_("site"))
    adverse_event = models.OneToOneField(
        AdverseEvent, on_delete=models.PROTECT, related_name="susar_assessment", verbose_name=_("adverse event")
    )
    related = models.BooleanField(_("related to the study treatment (sponsor)"))
    expectedness = models.CharField(_("expectedness"), max_length=12, choices=Expectedness.choices)
    reference = models.TextField(_("reference safety information"))
    assessed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", verbose_name=_("assessed by")
    )
    assessed_at = models.DateTimeField(_("assessed at"))
    # Set only for a SUSAR: awareness + 7 or 15 days.
    deadline = models.DateTimeField(_("expedited report due"), null=True, blank=True)
    reported_at = models.DateTimeField(_("expedited report sent at"), null=True, blank=True)
    report_reference = models.CharField(_("expedited report reference"), max_length=200, blank=True)
    reported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("reported by"),
    )

    class Meta:
        verbose_name = _("SUSAR assessment")
        verbose_name_plural = _("SUSAR assessments")
        ordering = ["deadline", "id"]

    def __str__(self) -> str:
        return f"SUSAR assessment of AE {self.adverse_event_id}"

    @property
    def is_susar(self) -> bool:
        return self.related and self.expectedness == self.Expectedness.UNEXPECTED


class Death(Audited, models.Model):
    """A participant's death, recorded with the grade 5 episode of the event that caused it. It
    closes their treatment and follow-up: visits still to come will not happen, reminders stop,
    and nothing more is dosed. The participant's status becomes "died"."""

    audit_subject_column = "participant_id"
    audit_clinical_fields = ("died_on", "cause")
    audit_blinded_visible = (
        "participant",
        "site",
        "died_on",
        "cause",
        "adverse_event",
        "protocol_version",
        "recorded_by",
        "recorded_at",
    )

    participant = models.OneToOneField(
        Participant, on_delete=models.PROTECT, related_name="death", verbose_name=_("participant")
    )
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+", verbose_name=_("site"))
    died_on = models.DateField(_("date of death"))
    cause = models.TextField(_("cause of death"))
    # The fatal event's first record (its grade 5 episode follows it, or is it).
    adverse_event = models.ForeignKey(
        AdverseEvent, on_delete=models.PROTECT, related_name="+", verbose_name=_("adverse event")
    )
    protocol_version = models.ForeignKey(
        "trialsite.ProtocolVersion",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("protocol version"),
    )
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", verbose_name=_("recorded by")
    )
    recorded_at = models.DateTimeField(_("recorded at"), auto_now_add=True)

    class Meta:
        verbose_name = _("death")
        verbose_name_plural = _("deaths")

    def __str__(self) -> str:
        return f"Death of participant {self.participant_id} on {self.died_on}"
