"""Screening, consent, eligibility and participants.

Everyone screened has a Screening row (the screening log, which feeds CONSORT). An eligible,
consented person becomes a Participant; the participant's primary key *is* the screening's, so
one id names the person in every audit row from screening to the last visit."""

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from trialsite.audit import Audited
from trialsite.models import Signature, Site


class Sex(models.TextChoices):
    FEMALE = "F", _("Female")
    MALE = "M", _("Male")


class Answer(models.TextChoices):
    YES = "yes", _("Yes")
    NO = "no", _("No")


class Outcome(models.TextChoices):
    ELIGIBLE = "eligible", _("Eligible")
    INELIGIBLE = "ineligible", _("Not eligible")
    INCOMPLETE = "incomplete", _("Incomplete")


class Screening(Audited, models.Model):
    audit_subject_column = "id"
    audit_clinical_fields = ("initials", "date_of_birth", "sex", "hospital_record_number", "screening_date")
    audit_blinded_visible = (
        "site",
        "initials",
        "date_of_birth",
        "sex",
        "hospital_record_number",
        "screening_date",
        "outcome",
        "reasons",
        "stratification",
        "screened_by",
        "created_at",
        "protocol_version",
        "updated_at",
        "subject_key",
    )

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="screenings")
    # The person's permanent key (NT-P00017), given when the screening is first saved and never
    # changed: exports and imports name the person by it, whatever numbers come later. It is
    # given before randomization, in screening order, so it says nothing about the arm.
    subject_key = models.CharField(_("subject key"), max_length=30, editable=False)
    initials = models.CharField(_("initials"), max_length=4)
    date_of_birth = models.DateField(_("date of birth"))
    sex = models.CharField(_("sex"), max_length=1, choices=Sex.choices)
    hospital_record_number = models.CharField(_("hospital record number"), max_length=40)
    screening_date = models.DateField(_("screening date"))
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    # Every reason the verdict is not "eligible", as [{"code": ..., "text": ...}], in protocol order.
    reasons = models.JSONField(default=list)
    # Levels of the protocol's extra stratification factors, {factor code: level}.
    stratification = models.JSONField(default=dict, blank=True)
    screened_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # The protocol version in force when the screening was recorded: the eligibility rules applied.
    protocol_version = models.ForeignKey(
        "trialsite.ProtocolVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-screening_date", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["site", "hospital_record_number"], name="screening_record_number_unique_per_site"
            ),
            # Per site, so per trial: the key starts with the site's code, unique in its trial.
            models.UniqueConstraint(fields=["site", "subject_key"], name="screening_subject_key_unique_per_site"),
        ]

    def __str__(self) -> str:
        return f"Screening {self.pk} ({self.initials})"

    def save(self, *args, **kwargs):
        if self.subject_key or self.pk is not None:
            return super().save(*args, **kwargs)
        # Every way a screening is created (service, demo, tests) passes here, so none lacks a key.
        with transaction.atomic():
            self.subject_key = next_subject_key(self.site_id)
            return super().save(*args, **kwargs)

    @property
    def masked_record_number(self) -> str:
        number = self.hospital_record_number
        return "•" * max(len(number) - 3, 0) + number[-3:]


SUBJECT_KEY_DIGITS = 5


def subject_key_format(site_code: str, number: int) -> str:
    # "P" (person) keeps the key apart from the randomization number (NT-0017) at a glance.
    return f"{site_code}-P{number:0{SUBJECT_KEY_DIGITS}d}"


def next_subject_key(site_id: int) -> str:
    """The site's next subject key. A transaction-scoped advisory lock per site makes two
    screenings saved at once at one site take consecutive keys instead of the same one; it is
    not a lock on the site row, which the randomization counter and every insert referencing the
    site also take, so nothing else at the site waits for a screening."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('subject_key:' || %s::text))", [site_id])
        # The newest key through the (site, subject_key) unique index: zero-padded numbers sort
        # as text in the order of their values.
        cursor.execute(
            "SELECT s.code, (SELECT substring(k.subject_key from '[0-9]+$')::int FROM enrollment_screening k "
            "WHERE k.site_id = s.id ORDER BY k.subject_key DESC LIMIT 1) FROM trialsite_site s WHERE s.id = %s",
            [site_id],
        )
        code, last = cursor.fetchone()
    return subject_key_format(code, (last or 0) + 1)


class Consent(Audited, models.Model):
    audit_subject_column = "screening_id"
    audit_clinical_fields = ("version", "signed_on")
    audit_blinded_visible = (
        "screening",
        "site",
        "version",
        "signed_on",
        "obtained_by",
        "recorded_at",
        "protocol_version",
    )

    screening = models.ForeignKey(Screening, on_delete=models.PROTECT, related_name="consents")
    # The row's site, copied from its screening, so site scoping and the audit trail need no join.
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    version = models.CharField(_("consent version"), max_length=40)
    signed_on = models.DateField(_("consent date"))
    obtained_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)
    # The protocol version in force when the consent was recorded (`version` is the consent form's own).
    protocol_version = models.ForeignKey(
        "trialsite.ProtocolVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-signed_on", "-id"]

    def __str__(self) -> str:
        return f"Consent v{self.version} on {self.signed_on}"


class EligibilityAnswer(Audited, models.Model):
    """One answer per protocol criterion; the criteria themselves live in the protocol file,
    so a new protocol's questions need no code. No answer (NULL) means not yet answered."""

    audit_subject_column = "screening_id"
    audit_clinical_fields = ("answer",)
    audit_blinded_visible = ("screening", "site", "criterion_code", "answer")

    screening = models.ForeignKey(Screening, on_delete=models.PROTECT, related_name="answers")
    # The row's site, copied from its screening, so site scoping and the audit trail need no join.
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    criterion_code = models.CharField(max_length=20)
    answer = models.CharField(max_length=3, choices=Answer.choices, null=True, blank=True)

    class Meta:
        ordering = ["screening", "id"]
        constraints = [
            models.UniqueConstraint(fields=["screening", "criterion_code"], name="one_answer_per_criterion"),
        ]

    def __str__(self) -> str:
        return f"{self.criterion_code}: {self.answer or 'unanswered'}"


class ParticipantStatus(models.TextChoices):
    ENROLLED = "enrolled", _("Enrolled")
    RANDOMIZED = "randomized", _("Randomized")
    WITHDRAWN = "withdrawn", _("Withdrawn")
    COMPLETED = "completed", _("Completed")
    # Set with the death record (safety): treatment and follow-up ended on the date of death.
    DIED = "died", _("Died")


class Participant(Audited, models.Model):
    """An eligible, consented person. Never deleted (PROTECT everywhere); a participant leaves
    the trial by withdrawal. The arm is not here: it lives only on the randomization slot."""

    audit_subject_column = "screening_id"
    audit_clinical_fields = ("contact_email",)
    audit_blinded_visible = (
        "site",
        "screening_number",
        "status",
        "randomization_number",
        "randomized_at",
        "eligibility_signature",
        "unblinded_at",
        "contact_consent",
        "contact_email",
        "language",
        "created_at",
    )

    screening = models.OneToOneField(Screening, on_delete=models.PROTECT, primary_key=True, related_name="participant")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="participants")
    # Unique per site, so per trial (a site belongs to one trial): another trial's site NT numbers alike.
    screening_number = models.CharField(_("screening number"), max_length=20)
    status = models.CharField(max_length=12, choices=ParticipantStatus.choices, default=ParticipantStatus.ENROLLED)
    randomization_number = models.CharField(_("randomization number"), max_length=20, null=True)
    randomized_at = models.DateTimeField(null=True)
    eligibility_signature = models.OneToOneField(
        Signature, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # Set when the blind was broken for this participant in an emergency.
    unblinded_at = models.DateTimeField(null=True, blank=True)
    # Reminders to the participant only where they agreed to be contacted.
    contact_consent = models.BooleanField(_("agreed to be contacted"), default=False)
    contact_email = models.EmailField(_("contact e-mail"), blank=True)
    language = models.CharField(max_length=10, choices=settings.LANGUAGES, default="zh-hans")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["screening_number"]
        constraints = [
            models.CheckConstraint(
                condition=Q(randomization_number__isnull=True) | Q(randomized_at__isnull=False),
                name="randomization_number_has_time",
            ),
            models.UniqueConstraint(fields=["site", "screening_number"], name="screening_number_unique_per_site"),
            models.UniqueConstraint(
                fields=["site", "randomization_number"], name="randomization_number_unique_per_site"
            ),
        ]

    def __str__(self) -> str:
        return self.randomization_number or self.screening_number

    @property
    def label(self) -> str:
        """How blinded screens name the participant."""
        return self.randomization_number or self.screening_number


class Withdrawal(Audited, models.Model):
    audit_subject_column = "participant_id"
    audit_clinical_fields = ("withdrawn_on", "reason")
    audit_blinded_visible = (
        "participant",
        "site",
        "withdrawn_on",
        "reason",
        "recorded_by",
        "recorded_at",
        "protocol_version",
    )

    participant = models.OneToOneField(Participant, on_delete=models.PROTECT, related_name="withdrawal")
    # The row's site, copied from its screening, so site scoping and the audit trail need no join.
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    withdrawn_on = models.DateField(_("withdrawal date"))
    reason = models.TextField(_("reason for withdrawal"))
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)
    # The protocol version in force when the withdrawal was recorded.
    protocol_version = models.ForeignKey(
        "trialsite.ProtocolVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    def __str__(self) -> str:
        return f"Withdrawal of {self.participant_id} on {self.withdrawn_on}"


class DeviationKind(models.TextChoices):
    ELIGIBILITY_CHANGED = "eligibility_changed", _("Eligibility verdict changed after randomization")
    STRATIFICATION_CHANGED = "stratification_changed", _("Stratification factor corrected after randomization")


class ProtocolDeviation(Audited, models.Model):
    """A departure from the protocol found after the fact, e.g. a screening correction that
    changes the eligibility verdict of a randomized participant. The participant stays
    randomized (intention to treat); the deviation is what the monitor and the report read."""

    audit_subject_column = "participant_id"
    audit_clinical_fields = ("description",)
    audit_blinded_visible = (
        "participant",
        "site",
        "kind",
        "description",
        "details",
        "detected_at",
        "recorded_by",
        "protocol_version",
    )

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="deviations")
    # The row's site, copied from the participant, so site scoping and the audit trail need no join.
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(_("kind"), max_length=30, choices=DeviationKind.choices)
    description = models.TextField(_("description"))
    # What the description says, as data, so that each reader reads it in their own language
    # (the description stays the record's English sentence, as e-mailed).
    details = models.JSONField(_("details"), default=dict, blank=True)
    detected_at = models.DateTimeField(_("detected at"))
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # The protocol version in force when the deviation was found: the protocol it departs from.
    protocol_version = models.ForeignKey(
        "trialsite.ProtocolVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-detected_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["eligibility_changed", "stratification_changed"]), name="deviation_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"Deviation ({self.kind}) of {self.participant_id}"

    def summary(self) -> str:
        """The description in the reader's language; the stored sentence when no details were kept."""
        from django.utils.translation import gettext

        from reports.selectors import reason_labels

        details = self.details or {}
        if self.kind == DeviationKind.ELIGIBILITY_CHANGED and "after" in details:
            labels = reason_labels(self.site.trial)
            reasons = "; ".join(labels.get(code, code) for code in details.get("reasons", [])) or gettext("none")
            return gettext(
                "A correction after randomization changed the eligibility verdict from %(before)s to %(after)s "
                "(reasons: %(reasons)s). Reason for the correction: %(reason)s"
            ) % {
                "before": Outcome(details["before"]).label,
                "after": Outcome(details["after"]).label,
                "reasons": reasons,
                "reason": details.get("reason", ""),
            }
        if self.kind == DeviationKind.STRATIFICATION_CHANGED and "after" in details:
            return gettext(
                "A correction after randomization changed the stratification from %(before)s to %(after)s; the "
                "allocation keeps the stratum it was made in. Reason for the correction: %(reason)s"
            ) % {"before": details["before"], "after": details["after"], "reason": details.get("reason", "")}
        return self.description
