"""Doses and drug kits.

The visits they belong to live in the schedules app (`schedules.models.Visit`), planned from the
protocol at randomization. Doses and lab gates are recorded per dosing visit, the same way for
every arm. Kits carry their content (active/placebo) in one blinded column; everything a
blinded user sees names a kit by its random-looking number only."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from enrollment.models import Participant
from schedules.models import Visit
from trialsite.audit import Audited
from trialsite.models import Site


class Decision(models.TextChoices):
    GIVE = "give", _("Give")
    HOLD = "hold", _("Hold")
    STOP = "stop", _("Stop treatment")


class DoseRecord(Audited, models.Model):
    """What happened at one dosing visit: the labs, the safety-gate decision with its reasons,
    and the prepared dose. Identical in form for every arm (placebo infusions are prepared to
    the same volume), so nothing here reveals allocation."""

    audit_subject_column = "participant_id"
    audit_clinical_fields = ("neutrophils", "platelets", "alt_uln", "ast_uln", "decision", "dose_mg")
    # Labs, gates and the prepared dose are computed alike for every arm (placebo to the same volume).
    audit_blinded_visible = (
        "protocol_version",
        "visit",
        "participant",
        "site",
        "first_dose",
        "neutrophils",
        "platelets",
        "alt_uln",
        "ast_uln",
        "decision",
        "reasons",
        "weight_kg",
        "baseline_weight_kg",
        "weight_change_flagged",
        "dose_mg",
        "concentrate_ml",
        "diluted_volume_ml",
        "vial_plan",
        "recorded_by",
        "recorded_at",
    )

    visit = models.OneToOneField(Visit, on_delete=models.PROTECT, related_name="dose")
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="doses")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    first_dose = models.BooleanField()
    neutrophils = models.PositiveIntegerField(_("neutrophils (/mm³)"))
    platelets = models.PositiveIntegerField(_("platelets (/mm³)"))
    alt_uln = models.DecimalField(_("ALT (x ULN)"), max_digits=5, decimal_places=2)
    ast_uln = models.DecimalField(_("AST (x ULN)"), max_digits=5, decimal_places=2)
    decision = models.CharField(max_length=4, choices=Decision.choices)
    reasons = models.JSONField(default=list, blank=True)
    weight_kg = models.DecimalField(max_digits=5, decimal_places=1)
    baseline_weight_kg = models.DecimalField(max_digits=5, decimal_places=1)
    weight_change_flagged = models.BooleanField(default=False)
    dose_mg = models.DecimalField(max_digits=6, decimal_places=1)
    concentrate_ml = models.DecimalField(max_digits=5, decimal_places=1)
    diluted_volume_ml = models.DecimalField(max_digits=5, decimal_places=1)
    # [[vial size mg, count], ...], largest vial first.
    vial_plan = models.JSONField(default=list)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)
    # The protocol version whose dose rule and lab gates decided this dose.
    protocol_version = models.ForeignKey(
        "trialsite.ProtocolVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["participant", "visit__sequence"]
        constraints = [
            models.CheckConstraint(condition=Q(decision__in=["give", "hold", "stop"]), name="dose_decision_valid"),
            models.CheckConstraint(condition=Q(dose_mg__gt=0), name="dose_positive"),
        ]

    def __str__(self) -> str:
        return f"Dose at {self.visit}"


class RepeatLabs(Audited, models.Model):
    """Labs repeated within a dosing visit's window after its infusion was held. The visit's dose
    decision is taken again from the latest labs (DoseRecord.decision and reasons follow them;
    its own lab columns stay the visit day's). The same for every arm, so blinded-visible."""

    audit_subject_column = "participant_id"
    audit_clinical_fields = ("measured_on", "neutrophils", "platelets", "alt_uln", "ast_uln")
    audit_blinded_visible = (
        "visit",
        "participant",
        "site",
        "measured_on",
        "neutrophils",
        "platelets",
        "alt_uln",
        "ast_uln",
        "decision",
        "reasons",
        "recorded_by",
        "recorded_at",
        "protocol_version",
    )

    visit = models.ForeignKey(Visit, on_delete=models.PROTECT, related_name="repeat_labs")
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    measured_on = models.DateField(_("date of the repeat labs"))
    neutrophils = models.PositiveIntegerField(_("neutrophils (/mm³)"))
    platelets = models.PositiveIntegerField(_("platelets (/mm³)"))
    alt_uln = models.DecimalField(_("ALT (x ULN)"), max_digits=5, decimal_places=2)
    ast_uln = models.DecimalField(_("AST (x ULN)"), max_digits=5, decimal_places=2)
    decision = models.CharField(max_length=4, choices=Decision.choices)
    reasons = models.JSONField(default=list, blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)
    # The protocol version whose lab gates took the decision again.
    protocol_version = models.ForeignKey(
        "trialsite.ProtocolVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["visit", "recorded_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(decision__in=["give", "hold", "stop"]), name="repeat_labs_decision_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"Repeat labs at {self.visit} on {self.measured_on}"


class Shipment(Audited, models.Model):
    """Kits sent from the depot to a site, received there by the pharmacist. A shipment always
    holds the same number of kits of each content for every kit type it carries, from the same
    packaging lots (`services.shipment_create`), so receiving shipments one at a time tells a
    blinded pharmacist nothing about which kits share a content."""

    audit_clinical_fields = ()
    # Shipments are mixed alike and resupplied on a schedule, not right after one participant's
    # dosing, so neither a shipment nor its timing points at a content.
    audit_blinded_visible = ("site", "shipped_by", "shipped_at", "received_by", "received_at")

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    # None when the system resupplied the site on its own (stock below the trigger level).
    shipped_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    shipped_at = models.DateTimeField(auto_now_add=True)
    received_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    received_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-shipped_at", "-id"]

    def __str__(self) -> str:
        return f"Shipment {self.pk} to {self.site.code}"


class KitContent(models.TextChoices):
    ACTIVE = "active", _("Active")
    PLACEBO = "placebo", _("Placebo")


class KitStatus(models.TextChoices):
    IN_DEPOT = "in_depot", _("In depot")
    SHIPPED = "shipped", _("Shipped")
    AT_SITE = "at_site", _("At site")
    ASSIGNED = "assigned", _("Assigned")
    DISPENSED = "dispensed", _("Dispensed")
    RETURNED = "returned", _("Returned")
    DAMAGED = "damaged", _("Damaged / destroyed")
    EXPIRED = "expired", _("Expired")
    QUARANTINED = "quarantined", _("Quarantined")


class KitList(Audited, models.Model):
    """One kit list: generated here from a secret seed (an auditor re-derives it with
    `manage.py kit_list`) or imported from the packager's CSV after the checks that its numbers,
    packaging lots and expiries say nothing about content. Its SHA-256 is of the canonical CSV."""

    class Source(models.TextChoices):
        GENERATED = "generated", _("Generated in the application")
        IMPORTED = "imported", _("Imported from CSV")

    audit_site_column = None
    audit_blinded_fields = ("seed",)
    # Not the seed (it regenerates the contents), nor the sha256 (it would let a user check a
    # guessed seed offline).
    audit_blinded_visible = ("trial", "source", "kit_count", "created_by", "created_at")

    trial = models.ForeignKey("trialsite.Trial", on_delete=models.PROTECT, related_name="kit_lists")
    source = models.CharField(max_length=10, choices=Source.choices)
    # The secret seed of a generated list; never shown to a blinded user.
    seed = models.CharField(max_length=200, blank=True)
    kit_count = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Kit list {self.pk} ({self.kit_count} kits)"


class Kit(Audited, models.Model):
    """One numbered kit. `content`, the manufacturing `lot` and the true `expiry` reveal or can
    group by allocation: blinded users read only the number, the type, the `packaging_lot` and the
    `label_expiry` printed on the label, which every content of a packaging lot shares (the
    earliest true expiry among them), so no attribute they can see differs between contents."""

    Status = KitStatus

    audit_subject_column = "participant_id"
    audit_blinded_fields = ("content",)
    audit_clinical_fields = ("tablets_returned",)
    # What the label and the pharmacy show. Not content, manufacturing lot or true expiry (they
    # differ by content), nor shipment, kit list or import time and user (they could group kits).
    audit_blinded_visible = (
        "trial",
        "kit_number",
        "kit_type",
        "packaging_lot",
        "label_expiry",
        "status",
        "site",
        "participant",
        "visit",
        "assigned_at",
        "assigned_by",
        "dispensed_at",
        "dispensed_by",
        "returned_on",
        "tablets_returned",
        "returned_by",
        "status_note",
    )

    # Kit numbers are unique within a trial; another trial's packager may use the same numbers.
    trial = models.ForeignKey("trialsite.Trial", on_delete=models.PROTECT, related_name="kits")
    kit_number = models.CharField(_("kit number"), max_length=20)
    # One of the protocol's [kits] types (the infusion's or the tablets' kit type).
    kit_type = models.CharField(_("kit type"), max_length=20)
    content = models.CharField(max_length=7, choices=KitContent.choices)
    # Manufacturing lot and true expiry: unblinded supply staff only (they differ by content).
    lot = models.CharField(_("manufacturing lot"), max_length=40)
    expiry = models.DateField(_("expiry date"))
    # What the label says: shared by every content of the packaging lot.
    packaging_lot = models.CharField(_("packaging lot"), max_length=40)
    label_expiry = models.DateField(_("label expiry"))
    kit_list = models.ForeignKey(KitList, on_delete=models.PROTECT, null=True, blank=True, related_name="kits")
    status = models.CharField(_("status"), max_length=12, choices=KitStatus.choices, default=KitStatus.IN_DEPOT)
    # None while the kit is at the depot.
    site = models.ForeignKey(Site, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    shipment = models.ForeignKey(Shipment, on_delete=models.PROTECT, null=True, blank=True, related_name="kits")
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, null=True, blank=True, related_name="kits")
    visit = models.ForeignKey(Visit, on_delete=models.PROTECT, null=True, blank=True, related_name="kits")
    assigned_at = models.DateTimeField(null=True, blank=True)
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    dispensed_at = models.DateTimeField(null=True, blank=True)
    dispensed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    returned_on = models.DateField(null=True, blank=True)
    tablets_returned = models.PositiveSmallIntegerField(null=True, blank=True)
    returned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # The pharmacist's account of a temperature excursion (blinded staff wrote it and may read it).
    status_note = models.TextField(blank=True)
    # The unblinded supply manager's reason to release or destroy: may name a lot or a content.
    supply_note = models.TextField(blank=True)
    imported_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+")
    imported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["kit_number"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=KitStatus.values), name="kit_status_valid"),
            models.UniqueConstraint(fields=["trial", "kit_number"], name="kit_number_unique_per_trial"),
            models.CheckConstraint(condition=Q(content__in=KitContent.values), name="kit_content_valid"),
            models.CheckConstraint(
                condition=~Q(status__in=["assigned", "dispensed", "returned"])
                | Q(participant__isnull=False, visit__isnull=False),
                name="kit_given_out_names_participant",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=["shipped", "at_site", "assigned", "dispensed", "returned"])
                | Q(site__isnull=False),
                name="kit_away_from_depot_has_site",
            ),
        ]
        indexes = [
            models.Index(fields=["site", "status", "kit_type", "label_expiry"], name="kit_available_by_label_expiry"),
            # The pharmacy queue's two pages in their order: read fifty in order and join those,
            # not join every kit of the list and sort (the participant table was walked whole).
            # Partial: only the kits out at a site, a few hundred, keep an entry.
            models.Index(
                fields=["site", "assigned_at", "visit", "kit_type", "id"],
                condition=Q(status="assigned"),
                name="kit_to_dispense_in_order",
            ),
            models.Index(
                fields=["site", "dispensed_at", "kit_type", "id"],
                condition=Q(status="dispensed"),
                name="kit_to_collect_in_order",
            ),
        ]

    def __str__(self) -> str:
        return self.kit_number

    @property
    def kit_type_label(self) -> str:
        from dosing.kit_types import kit_type_label

        return kit_type_label(self.trial, self.kit_type)

    @property
    def is_infusion(self) -> bool:
        from dosing.kit_types import is_infusion_kit

        return is_infusion_kit(self.trial, self.kit_type)

    @property
    def is_tablet(self) -> bool:
        from dosing.kit_types import is_tablet_kit

        return is_tablet_kit(self.trial, self.kit_type)

    @property
    def tablets_per_day(self) -> int | None:
        tablet = self.trial.protocol.dosing.tablet
        return tablet.tablets_per_day if tablet else None
