"""The reminder outbox.

A row per message to send, written by the database alone (no broker involved), so a reminder
exists even when Redis or every worker is down: in the transaction that creates its visit, or,
for the plan made at randomization, by the dispatcher's first step after that transaction
commits, as of the randomization time (services.reminders_plan_pending). Beat finds due rows and
enqueues one send task per row; the task claims its row with a conditional UPDATE, so two
workers, a retried task, a re-run of beat or a duplicate message never send it twice."""

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from enrollment.models import Participant
from trialsite.audit import Audited
from trialsite.models import Site


class Reminder(Audited, models.Model):
    class Kind(models.TextChoices):
        WINDOW_OPENS_7_DAYS = "window_7d", _("7 days before the visit window opens")
        WINDOW_OPENS_1_DAY = "window_1d", _("1 day before the visit window opens")
        MISSED_VISIT = "missed", _("Missed visit")

    class Audience(models.TextChoices):
        SITE_STAFF = "site_staff", _("Site staff")
        PARTICIPANT = "participant", _("Participant")

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
        "visit",
        "kind",
        "audience",
        "channel",
        "due_at",
        "status",
        "enqueued_at",
        "claimed_at",
        "attempts",
        "sent_at",
        "recipients",
        "status_reason",
        "created_at",
    )

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="reminders")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    visit = models.ForeignKey("schedules.Visit", on_delete=models.PROTECT, related_name="reminders")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    audience = models.CharField(max_length=12, choices=Audience.choices)
    channel = models.CharField(max_length=12, default="email")
    due_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SCHEDULED)
    # When beat last handed the row to the broker; a row still scheduled long after is handed
    # over again (the broker may have been down, or the message lost with a worker).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    recipients = models.TextField(blank=True, help_text=_("Addresses the message went to"))
    status_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["due_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["visit", "kind", "audience"],
                condition=~Q(status="cancelled"),
                name="one_live_reminder_per_visit_kind_audience",
            ),
        ]
        indexes = [
            models.Index(fields=["due_at"], condition=Q(status="scheduled"), name="reminder_due"),
            # The reminders page lists a site's reminders by due time, a page at a time.
            models.Index(fields=["site", "due_at", "id"], name="reminder_site_due"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} to {self.get_audience_display()} for visit {self.visit_id}"
