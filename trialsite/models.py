from zoneinfo import ZoneInfo, available_timezones

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from trialsite.audit import Audited


def validate_time_zone(value: str) -> None:
    if value not in available_timezones():
        raise ValidationError(_("%(zone)s is not a known time zone."), params={"zone": value})


class Trial(Audited, models.Model):
    """A protocol loaded from its definition file. The file is the source of truth; the
    columns here are what other tables join on, `definition` keeps the whole parsed file."""

    audit_clinical_fields = ()
    audit_blinded_visible = (
        "nct_id",
        "title",
        "sponsor",
        "sponsor_protocol_id",
        "sponsor_contact_email",
        "target_enrollment",
        "definition_sha256",
        "loaded_at",
        "current_version",
    )  # Not `definition`: the file may hold supply settings per content, for unblinded roles only.

    nct_id = models.CharField(max_length=20, unique=True)
    title = models.CharField(max_length=300)
    sponsor = models.CharField(max_length=200)
    sponsor_protocol_id = models.CharField(max_length=50)
    sponsor_contact_email = models.EmailField()
    target_enrollment = models.PositiveIntegerField()
    definition = models.JSONField()
    definition_sha256 = models.CharField(max_length=64)
    loaded_at = models.DateTimeField(auto_now=True)
    # The version in force: what new records are captured under.
    current_version = models.ForeignKey(
        "ProtocolVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    def __str__(self) -> str:
        return self.nct_id

    @property
    def protocol(self):
        """The loaded protocol as typed, frozen objects (trialsite.protocol_schema): the one way
        code reads the trial's rules. Parsed once per file content and process."""
        from trialsite.protocol_schema import protocol_for

        memo = self.__dict__.get("_protocol_memo")
        if memo is None or memo[0] is not self.definition:
            memo = self.__dict__["_protocol_memo"] = (self.definition, protocol_for(self.definition))
        return memo[1]


class ProtocolVersion(Audited, models.Model):
    """One loaded version of a trial's protocol file (the original or an amendment), kept for
    good: records captured under it point here, and an auditor can read the rules that applied."""

    audit_clinical_fields = ()
    audit_blinded_visible = ("trial", "version", "effective_date", "sha256", "loaded_at", "loaded_by")

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="protocol_versions")
    version = models.CharField(max_length=40)
    effective_date = models.DateField(null=True, blank=True)
    # The whole parsed file (may hold supply settings: unblinded roles only, like Trial.definition).
    definition = models.JSONField()
    sha256 = models.CharField(max_length=64)
    loaded_at = models.DateTimeField(auto_now_add=True)
    loaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["trial", "loaded_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "version"], name="protocol_version_unique_per_trial"),
        ]

    def __str__(self) -> str:
        return f"{self.trial_id} v{self.version}"


def _name_in_language(record, section: str) -> str:
    from django.utils.translation import get_language

    if (get_language() or "").startswith("zh"):
        for entry in getattr(record.trial.protocol, section):
            if entry.code == record.code and entry.name_zh:
                return entry.name_zh
    return record.name


class Arm(Audited, models.Model):
    """A treatment arm. Its code and name are exactly what a blinded user must never see."""

    audit_clinical_fields = ()
    # Not code, name, kit_contents, ratio or order: any of them would turn an arm id that
    # leaked elsewhere into an arm.
    audit_blinded_visible = ("trial",)

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="arms")
    code = models.CharField(max_length=20)
    name = models.CharField(max_length=200)
    ratio = models.PositiveSmallIntegerField(default=1)
    # Per kit type, "active" or "placebo": what a kit for this arm must contain.
    kit_contents = models.JSONField()
    order = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["trial", "order"]
        constraints = [models.UniqueConstraint(fields=["trial", "code"], name="arm_code_unique_per_trial")]

    def __str__(self) -> str:
        return self.code

    @property
    def local_name(self) -> str:
        """The name in the reader's language: the protocol file's name_zh for a Chinese reader."""
        return _name_in_language(self, "arms")


class Site(Audited, models.Model):
    audit_clinical_fields = ()
    audit_site_column = "id"
    audit_blinded_visible = ("trial", "code", "name", "time_zone", "last_randomization_number", "last_screening_number")

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="sites")
    code = models.CharField(max_length=20, help_text=_("Short code, e.g. NT"))
    name = models.CharField(max_length=200)
    time_zone = models.CharField(max_length=64, validators=[validate_time_zone])
    # Randomization numbers are handed out per site (NT-0001, NT-0002, ...) by a counter
    # incremented with a conditional UPDATE, so concurrent randomizations never share one.
    last_randomization_number = models.PositiveIntegerField(default=0)
    last_screening_number = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["code"]
        # Per trial: two trials may both name a site alike (the same hospital, two protocols).
        constraints = [models.UniqueConstraint(fields=["trial", "code"], name="site_code_unique_per_trial")]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"

    @property
    def local_name(self) -> str:
        """The name in the reader's language: the protocol file's name_zh for a Chinese reader."""
        return _name_in_language(self, "sites")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


class Role(models.TextChoices):
    COORDINATOR = "coordinator", _("Site coordinator")
    PHARMACIST = "pharmacist", _("Pharmacist")
    INVESTIGATOR = "investigator", _("Principal investigator")
    MONITOR = "monitor", _("Data manager / monitor")
    STATISTICIAN = "statistician", _("Unblinded statistician")
    SUPPLY_MANAGER = "supply_manager", _("Unblinded supply manager")
    # The data and safety monitoring board: reads the closed (by-arm) safety report, enters nothing.
    DSMB = "dsmb", _("DSMB member")
    # The sponsor's safety officer: assesses SAEs for SUSARs and may break the blind of one participant.
    SPONSOR_SAFETY = "sponsor_safety", _("Sponsor safety officer")


class StaffRole(Audited, models.Model):
    """A user's role at one site. A user may hold several roles at several sites."""

    audit_clinical_fields = ()
    audit_blinded_visible = ("user", "site", "role")

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="trial_roles")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="staff_roles")
    role = models.CharField(max_length=20, choices=Role.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "site", "role"], name="staff_role_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.get_role_display()} at {self.site.code}"


class AuditEvent(models.Model):
    """One row per insert, update or delete of trial data, written by a PostgreSQL trigger
    (see trialsite/audit.py), so `QuerySet.update()`, bulk writes and raw SQL are all caught.
    Another trigger refuses UPDATE, DELETE and TRUNCATE on this table."""

    class Action(models.TextChoices):
        INSERT = "INSERT", _("created")
        UPDATE = "UPDATE", _("changed")
        DELETE = "DELETE", _("deleted")

    occurred_at = models.DateTimeField()
    table_name = models.CharField(max_length=100)
    record_pk = models.CharField(max_length=100)
    action = models.CharField(max_length=6, choices=Action.choices)
    old_values = models.JSONField(null=True)
    new_values = models.JSONField(null=True)
    changed_fields = ArrayField(models.TextField(), default=list)
    # No database constraint: the trail must outlive anything it points at.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    reason = models.TextField(blank=True)
    site_id = models.BigIntegerField(null=True)
    subject_id = models.BigIntegerField(null=True, help_text=_("The participant or screening the row belongs to"))
    database_user = models.CharField(max_length=100)

    class Meta:
        ordering = ["occurred_at", "id"]
        indexes = [
            models.Index(fields=["table_name", "record_pk"]),
            # A participant's history per table (ODM audit records, reports): one index walk
            # whatever the planner believes of the table, even before ANALYZE after a bulk load.
            models.Index(fields=["subject_id", "table_name"], name="auditevent_subject_table"),
            models.Index(fields=["site_id", "occurred_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.table_name}#{self.record_pk}"


class Signature(Audited, models.Model):
    """An electronic signature: the signer re-entered their password, and the meaning they
    signed is stored in words next to what they signed."""

    audit_clinical_fields = ()
    audit_blinded_visible = ("signer", "site", "meaning", "signed_at", "record_table", "record_pk")

    signer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="signatures")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    meaning = models.TextField()
    signed_at = models.DateTimeField(auto_now_add=True)
    record_table = models.CharField(max_length=100)
    record_pk = models.CharField(max_length=100)

    def __str__(self) -> str:
        return f"{self.signer} signed {self.record_table}#{self.record_pk}"


class ApiToken(Audited, models.Model):
    """A key for the REST API (`Authorization: Token <key>`), made by its user from a logged-in
    session and shown to them once (trialsite/tokens.py). It expires after API_TOKEN_HOURS and
    can be revoked sooner. Creation and revocation are in the audit trail; the key is never
    stored, and its hash lives in ApiTokenKey, which is not audited, so the trail never holds it."""

    audit_clinical_fields = ()
    audit_site_column = None
    audit_blinded_visible = ("user", "name", "created_at", "expires_at", "second_factor", "revoked_at", "revoked_by")

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="api_tokens")
    name = models.CharField(_("name"), max_length=100, blank=True, help_text=_("What the token is for, e.g. a script"))
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    # Made from a session verified by the two-factor code: the only kind an unblinded user may use.
    second_factor = models.BooleanField(default=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"API token {self.pk} of {self.user}"


class ApiTokenKey(models.Model):
    """The SHA-256 of a token's key, which each API request looks up, and when it was last used.
    Not audited: the hash has no place in the audit trail, and a use changes no trial data."""

    token = models.OneToOneField(ApiToken, on_delete=models.CASCADE, primary_key=True, related_name="stored_key")
    key_hash = models.CharField(max_length=64, unique=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"key of {self.token_id}"
