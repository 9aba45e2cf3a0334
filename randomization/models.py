"""Randomization lists, their slots, and emergency unblinding.

The arm of a participant exists in exactly one place: `Slot.arm` of the slot they were
allocated. Blinded surfaces never read it; `randomization.selectors.arm_for` is the only
function that does, and it asks `trialsite.access` first."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from enrollment.models import Participant
from trialsite.audit import Audited
from trialsite.models import Arm, Site, Trial


class RandomizationList(Audited, models.Model):
    """A versioned list. Generated from a seed (re-derivable by an auditor with
    `manage.py randomization_list`) or imported from a statistician's CSV; hashed with SHA-256
    and locked before the first participant is randomized. A database trigger refuses any
    change to a locked list's slots other than filling an empty slot once."""

    class Source(models.TextChoices):
        GENERATED = "generated", _("Generated in the application")
        IMPORTED = "imported", _("Imported from CSV")

    class Method(models.TextChoices):
        PERMUTED_BLOCKS = "stratified_permuted_blocks", _("Stratified permuted blocks")
        MINIMIZATION = "minimization", _("Minimization")

    audit_site_column = None
    # Not seed (regenerates the list) nor sha256 (checks a guessed seed offline).
    audit_blinded_visible = (
        "trial",
        "version",
        "source",
        "method",
        "block_sizes",
        "slots_per_stratum",
        "reason",
        "created_by",
        "created_at",
        "locked_at",
        "locked_by",
        "is_active",
    )

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="randomization_lists")
    version = models.PositiveIntegerField()
    source = models.CharField(max_length=10, choices=Source.choices)
    # The protocol's method when the list was made. A minimization list has a seed and no slots
    # in advance: each allocation adds its slot, already filled (the locked-list guard allows
    # exactly that, and only for this method).
    method = models.CharField(max_length=30, choices=Method.choices, default=Method.PERMUTED_BLOCKS)
    # The secret seed of a generated list; never shown to a blinded user.
    seed = models.CharField(max_length=200, blank=True)
    block_sizes = models.JSONField(default=list)
    slots_per_stratum = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    reason = models.TextField(blank=True, help_text=_("Why a new version replaces the previous one"))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    locked_at = models.DateTimeField(null=True, blank=True)
    locked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # Only the active list of a trial hands out slots; a new version retires the previous one.
    is_active = models.BooleanField(default=False)

    class Meta:
        ordering = ["trial", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "version"], name="randomization_list_version_unique"),
            models.UniqueConstraint(
                fields=["trial"], condition=Q(is_active=True), name="one_active_randomization_list_per_trial"
            ),
            models.CheckConstraint(condition=Q(version=1) | ~Q(reason=""), name="new_list_version_needs_reason"),
            models.CheckConstraint(
                condition=Q(is_active=False) | Q(locked_at__isnull=False), name="active_list_is_locked"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.trial} randomization list v{self.version}"


class Slot(Audited, models.Model):
    """One line of a list: the `sequence`-th allocation of a stratum; in a minimization list, the
    `sequence`-th allocation of the list (block and block_size 0), created when it is made."""

    audit_subject_column = "participant_id"
    # Not arm, nor what places a slot in its block (sequence, block, block_size): with the
    # arms learnt elsewhere they predict the next allocation. Not the list: all slots share it.
    # The protocol version is the same whatever the arm, so it is visible too.
    audit_blinded_visible = ("stratum", "site", "participant", "allocated_at", "protocol_version")

    randomization_list = models.ForeignKey(RandomizationList, on_delete=models.PROTECT, related_name="slots")
    # "NT" for site-only strata; "NT|liver_metastasis=yes" with further factors.
    stratum = models.CharField(max_length=200)
    # The site the stratum belongs to, for scoping (every stratum includes the site).
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    sequence = models.PositiveIntegerField()
    block = models.PositiveIntegerField()
    block_size = models.PositiveSmallIntegerField()
    arm = models.ForeignKey(Arm, on_delete=models.PROTECT, related_name="+")
    participant = models.OneToOneField(
        Participant, on_delete=models.PROTECT, null=True, blank=True, related_name="slot"
    )
    allocated_at = models.DateTimeField(null=True, blank=True)
    # The protocol version in force at the allocation, set with the participant (the locked-list
    # guard lets exactly these three columns of an empty slot be filled, once).
    protocol_version = models.ForeignKey(
        "trialsite.ProtocolVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["randomization_list", "stratum", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["randomization_list", "stratum", "sequence"], name="slot_sequence_unique"),
            models.CheckConstraint(
                condition=Q(participant__isnull=True, allocated_at__isnull=True)
                | Q(participant__isnull=False, allocated_at__isnull=False),
                name="slot_allocated_with_time",
            ),
        ]
        indexes = [
            models.Index(
                fields=["randomization_list", "stratum", "sequence"],
                condition=Q(participant__isnull=True),
                name="slot_free_by_stratum",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.stratum} #{self.sequence}"


class Unblinding(Audited, models.Model):
    """An emergency break of the blind for one participant, for one user: who, when, why.

    Either in the system (the arm shown on screen) or, when the system could not be reached, by
    opening the participant's sealed code-break sheet, recorded afterwards by the PI."""

    class Method(models.TextChoices):
        SYSTEM = "system", _("In the system")
        SEALED_SHEET = "sealed_sheet", _("Sealed code-break sheet opened")

    audit_subject_column = "participant_id"
    audit_blinded_visible = (
        "participant",
        "site",
        "unblinded_by",
        "reason",
        "unblinded_at",
        "sponsor_notified_at",
        "method",
        "sheet_number",
        "opened_at",
    )

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="unblindings")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    unblinded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()
    unblinded_at = models.DateTimeField(auto_now_add=True)
    sponsor_notified_at = models.DateTimeField(null=True, blank=True)
    method = models.CharField(max_length=12, choices=Method.choices, default=Method.SYSTEM)
    # For a sealed sheet: its number, and when it was opened (the record is made afterwards).
    sheet_number = models.PositiveIntegerField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-unblinded_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(method="system", sheet_number__isnull=True, opened_at__isnull=True)
                | Q(method="sealed_sheet", sheet_number__isnull=False, opened_at__isnull=False),
                name="unblinding_sheet_details_with_sealed_sheet",
            ),
        ]

    def __str__(self) -> str:
        return f"Unblinding of {self.participant_id} by {self.unblinded_by}"


class CodeBreakSheetSet(Audited, models.Model):
    """One printing of a site's sealed code-break sheets by an unblinded statistician: the
    offline backup for emergency unblinding. The sheets themselves are never stored; this row
    (and its audit event) says who made them, when, from which list and for which site."""

    # Nothing here depends on an arm.
    audit_blinded_visible = ("randomization_list", "site", "generated_by", "generated_at", "sheet_count")

    randomization_list = models.ForeignKey(RandomizationList, on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    generated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    generated_at = models.DateTimeField(auto_now_add=True)
    sheet_count = models.PositiveIntegerField()

    class Meta:
        ordering = ["-generated_at"]

    def __str__(self) -> str:
        return f"Code-break sheets for {self.site} ({self.sheet_count})"
