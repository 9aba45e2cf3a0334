"""Screening, consent, eligibility sign-off and withdrawal: one function per trial rule."""

from __future__ import annotations

import datetime
import re

from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from enrollment.eligibility import evaluate
from enrollment.models import (
    Consent,
    DeviationKind,
    EligibilityAnswer,
    Outcome,
    Participant,
    ParticipantStatus,
    ProtocolDeviation,
    Screening,
    Withdrawal,
)
from trialsite import access
from trialsite.access import Capability
from trialsite.audit import audit_context
from trialsite.exceptions import Conflict, ReasonRequired, TrialRuleError
from trialsite.models import Signature, Site
from trialsite.reauth import confirm_password
from trialsite.text import identifier


class InvalidScreening(TrialRuleError):
    pass


class DuplicateRecordNumber(TrialRuleError):
    # Lazy: a class attribute is evaluated at import, before any request's language is active.
    default_message = gettext_lazy("A patient with this hospital record number has already been screened at this site.")

    def __init__(self, message=None, *, field="hospital_record_number"):
        super().__init__(message, field=field)


class AlreadySigned(Conflict):
    default_message = gettext_lazy("Eligibility has already been signed off.")


# Lazy for the same reason; the text shown on the form is the text stored with the signature.
SIGNATURE_MEANING = gettext_lazy(
    "I confirm that I have reviewed the eligibility of participant %(number)s and that they meet all "
    "criteria of protocol %(protocol)s."
)


OLDEST_PLAUSIBLE_AGE = 120


def _validate(
    *,
    site: Site,
    initials: str,
    date_of_birth: datetime.date,
    screening_date: datetime.date,
    consent_date: datetime.date,
    stratification: dict,
    today: datetime.date,
) -> None:
    if not re.fullmatch(r"[A-Za-z]{2,4}", initials or ""):
        raise InvalidScreening(_("Initials are 2 to 4 letters."), field="initials")
    if date_of_birth > today:
        raise InvalidScreening(_("The date of birth cannot be in the future."), field="date_of_birth")
    # A screening dated 0029 (a typo for 2029 or 2026) has no plausible date of birth at all.
    if screening_date.year < 1900:
        raise InvalidScreening(_("The screening date is not plausible; check the year."), field="screening_date")
    # A typo such as 0001 for 2001 would otherwise become an age screen failure on record.
    if date_of_birth < screening_date.replace(year=screening_date.year - OLDEST_PLAUSIBLE_AGE, day=1):
        raise InvalidScreening(
            _("The date of birth is more than %(years)s years before screening; check the year.")
            % {"years": OLDEST_PLAUSIBLE_AGE},
            field="date_of_birth",
        )
    if screening_date > today:
        raise InvalidScreening(_("The screening date cannot be in the future."), field="screening_date")
    if consent_date > screening_date:
        raise InvalidScreening(_("Consent must be signed on or before the screening date."), field="consent_date")
    factors = site.trial.protocol.randomization.factors
    unknown = set(stratification or {}) - {factor.code for factor in factors}
    if unknown:
        raise InvalidScreening(
            _("The protocol has no stratification factor %(code)s.") % {"code": sorted(unknown)[0]},
            field="stratification",
        )
    for factor in factors:
        if stratification.get(factor.code) not in factor.levels:
            raise InvalidScreening(
                _("Choose one of %(levels)s.") % {"levels": ", ".join(factor.levels)},
                field=f"stratification_{factor.code}",
            )


def _verdict(screening: Screening, consent_date, answers) -> None:
    verdict = evaluate(
        eligibility=screening.site.trial.protocol.eligibility,
        date_of_birth=screening.date_of_birth,
        screening_date=screening.screening_date,
        consent_date=consent_date,
        answers=answers,
    )
    screening.outcome = verdict.outcome
    screening.reasons = verdict.reasons


def _enroll_if_eligible(screening: Screening) -> Participant | None:
    if screening.outcome != Outcome.ELIGIBLE or hasattr(screening, "participant"):
        return getattr(screening, "participant", None)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE trialsite_site SET last_screening_number = last_screening_number + 1 WHERE id = %s "
            "RETURNING last_screening_number",
            [screening.site_id],
        )
        number = cursor.fetchone()[0]
    return Participant.objects.create(
        screening=screening, site_id=screening.site_id, screening_number=f"S-{screening.site.code}-{number:04d}"
    )


def screening_create(
    *,
    site: Site,
    screened_by,
    initials: str,
    date_of_birth: datetime.date,
    sex: str,
    hospital_record_number: str,
    screening_date: datetime.date,
    consent_version: str,
    consent_date: datetime.date,
    answers: dict[str, str | None],
    stratification=None,
    request=None,
) -> Screening:
    """Record a screening, its consent and answers; an eligible person becomes a participant."""
    stratification = stratification or {}
    # Compared and stored normalised: "BAD0001", the same with a zero-width space and the same
    # typed in full-width characters are one patient.
    hospital_record_number = identifier(hospital_record_number)
    initials = identifier(initials)
    _validate(
        site=site,
        initials=initials,
        date_of_birth=date_of_birth,
        screening_date=screening_date,
        consent_date=consent_date,
        stratification=stratification,
        today=timezone.localdate(timezone=site.zone),
    )
    if not hospital_record_number:
        raise InvalidScreening(_("The hospital record number is required."), field="hospital_record_number")
    if Screening.objects.filter(site=site, hospital_record_number=hospital_record_number).exists():
        raise DuplicateRecordNumber()
    known = {criterion.code for criterion in site.trial.protocol.eligibility.criteria}
    answers = {code: answers.get(code) for code in known}
    try:
        with audit_context(actor=screened_by, reason="Screening recorded"):
            screening = Screening(
                site=site,
                initials=initials,
                date_of_birth=date_of_birth,
                sex=sex,
                hospital_record_number=hospital_record_number,
                screening_date=screening_date,
                stratification=stratification,
                screened_by=screened_by,
                protocol_version_id=site.trial.current_version_id,
            )
            _verdict(screening, consent_date, answers)
            screening.save()
            Consent.objects.create(
                screening=screening,
                site=site,
                version=consent_version,
                signed_on=consent_date,
                obtained_by=screened_by,
                protocol_version_id=site.trial.current_version_id,
            )
            EligibilityAnswer.objects.bulk_create(
                [
                    EligibilityAnswer(screening=screening, site=site, criterion_code=code, answer=answer)
                    for code, answer in answers.items()
                ]
            )
            _enroll_if_eligible(screening)
    except IntegrityError as error:
        if "screening_record_number_unique_per_site" in str(error):
            raise DuplicateRecordNumber() from None
        raise
    return screening


EDITABLE = ("initials", "date_of_birth", "sex", "hospital_record_number", "screening_date", "stratification")


def screening_update(
    *,
    screening: Screening,
    changed_by,
    reason: str,
    answers: dict[str, str | None] | None = None,
    consent_date: datetime.date | None = None,
    consent_version: str | None = None,
    **changes,
) -> Screening:
    """Correct or re-screen. A change to a saved value needs a reason; the verdict is decided
    again, and a person who becomes eligible becomes a participant. A randomized participant's
    screening is corrected too (GCP wants corrections, not refusals) and they stay randomized;
    when the correction changes the eligibility verdict or a stratification factor the
    allocation rested on, a protocol deviation is recorded and the site's PI is e-mailed."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise InvalidScreening(_("These values cannot be changed here."), field=sorted(unknown)[0])
    for name in ("initials", "hospital_record_number"):
        if name in changes:
            changes[name] = identifier(changes[name])
    # One transaction with the screening and its participant locked, in the order randomization
    # locks them: a randomization cannot happen between the check below and the save, nor read
    # the verdict while it is being changed.
    with transaction.atomic():
        screening, participant = lock_screening_and_participant(screening.pk)
        outcome_before, stratification_before = screening.outcome, dict(screening.stratification or {})
        screening = _screening_correct(
            screening=screening,
            changed_by=changed_by,
            reason=reason,
            answers=answers,
            consent_date=consent_date,
            consent_version=consent_version,
            changes=changes,
        )
        if participant is not None and participant.randomization_number:
            _deviations_after_randomization(
                screening=screening,
                participant=participant,
                changed_by=changed_by,
                reason=reason,
                outcome_before=outcome_before,
                stratification_before=stratification_before,
            )
        elif participant is not None and participant.eligibility_signature_id and screening.outcome != outcome_before:
            # The PI signed the verdict as it was; a changed verdict needs their signature again
            # (the signature row itself stays, with the audit trail of its withdrawal).
            with audit_context(actor=changed_by, reason=f"{reason} (the signed-off verdict changed)"):
                participant.eligibility_signature = None
                participant.save(update_fields=["eligibility_signature"])
        return screening


def _deviations_after_randomization(
    *, screening, participant, changed_by, reason, outcome_before, stratification_before
) -> list[ProtocolDeviation]:
    found = []
    if screening.outcome != outcome_before:
        reasons = "; ".join(item.get("text", item.get("code", "")) for item in screening.reasons) or "none"
        found.append(
            (
                DeviationKind.ELIGIBILITY_CHANGED,
                f"A correction after randomization changed the eligibility verdict from "
                f"{Outcome(outcome_before).label} to {Outcome(screening.outcome).label} "
                f"(reasons: {reasons}). Reason for the correction: {reason}",
                {
                    "before": outcome_before,
                    "after": screening.outcome,
                    "reasons": [item.get("code", "") for item in screening.reasons],
                    "reason": reason,
                },
            )
        )
    if dict(screening.stratification or {}) != stratification_before:
        found.append(
            (
                DeviationKind.STRATIFICATION_CHANGED,
                f"A correction after randomization changed the stratification from {stratification_before} to "
                f"{screening.stratification}; the allocation keeps the stratum it was made in. "
                f"Reason for the correction: {reason}",
                {"before": stratification_before, "after": dict(screening.stratification or {}), "reason": reason},
            )
        )
    if not found:
        return []
    now = timezone.now()
    with audit_context(actor=changed_by, reason=reason):
        deviations = [
            ProtocolDeviation.objects.create(
                participant=participant,
                site_id=participant.site_id,
                kind=kind,
                description=description,
                details=details,
                detected_at=now,
                recorded_by=changed_by,
                protocol_version_id=participant.site.trial.current_version_id,
            )
            for kind, description, details in found
        ]
    transaction.on_commit(lambda: _notify_investigators_of_deviations(participant, deviations))
    return deviations


def _notify_investigators_of_deviations(participant: Participant, deviations: list[ProtocolDeviation]) -> None:
    recipients = [user.email for user in access.users_with(Capability.SIGN_ELIGIBILITY, participant.site) if user.email]
    if not recipients:
        return
    trial = participant.site.trial
    send_mail(
        subject=f"{trial.nct_id}: protocol deviation for participant {participant.randomization_number}",
        message=(
            f"A screening correction for participant {participant.randomization_number} at {participant.site.code} "
            "was recorded as a protocol deviation. The participant stays randomized.\n\n"
            + "\n".join(f"- {deviation.get_kind_display()}: {deviation.description}" for deviation in deviations)
        ),
        from_email=None,
        recipient_list=recipients,
    )


def lock_screening_and_participant(pk: int) -> tuple[Screening, Participant | None]:
    """Lock a screening and, once enrolled, its participant (same key), always in this order,
    wherever either is changed on the strength of the other (correction, randomization,
    eligibility sign-off), so two of them cannot deadlock."""
    screening = Screening.objects.select_for_update(of=("self",)).select_related("site__trial").get(pk=pk)
    participant = (
        Participant.objects.select_for_update(of=("self",)).select_related("site__trial").filter(pk=pk).first()
    )
    if participant is not None:
        # The locked row, so code reading screening.participant sees what was locked.
        screening.participant = participant
    return screening, participant


def _screening_correct(
    *, screening: Screening, changed_by, reason, answers, consent_date, consent_version, changes
) -> Screening:
    current_answers = dict(screening.answers.values_list("criterion_code", "answer"))
    consent = screening.consents.first()
    changed = {name: value for name, value in changes.items() if getattr(screening, name) != value}
    changed_answers = {
        code: value
        for code, value in (answers or {}).items()
        if code in current_answers and current_answers[code] != value
    }
    consent_changes = {}
    if consent_date is not None and consent.signed_on != consent_date:
        consent_changes["signed_on"] = consent_date
    if consent_version is not None and consent.version != consent_version:
        consent_changes["version"] = consent_version
    if not (changed or changed_answers or consent_changes):
        return screening
    if not (reason or "").strip():
        raise ReasonRequired()
    new = {**{f: getattr(screening, f) for f in EDITABLE}, **changed}
    signed_on = consent_changes.get("signed_on", consent.signed_on)
    _validate(
        site=screening.site,
        initials=new["initials"],
        date_of_birth=new["date_of_birth"],
        screening_date=new["screening_date"],
        consent_date=signed_on,
        stratification=new["stratification"],
        today=timezone.localdate(timezone=screening.site.zone),
    )
    if not new["hospital_record_number"]:
        raise InvalidScreening(_("The hospital record number is required."), field="hospital_record_number")
    if (
        "hospital_record_number" in changed
        and Screening.objects.filter(site_id=screening.site_id, hospital_record_number=new["hospital_record_number"])
        .exclude(pk=screening.pk)
        .exists()
    ):
        raise DuplicateRecordNumber()
    try:
        with audit_context(actor=changed_by, reason=reason):
            for name, value in changed.items():
                setattr(screening, name, value)
            if consent_changes:
                for name, value in consent_changes.items():
                    setattr(consent, name, value)
                consent.save(update_fields=list(consent_changes))
            for code, value in changed_answers.items():
                EligibilityAnswer.objects.filter(screening=screening, criterion_code=code).update(answer=value)
            _verdict(screening, signed_on, {**current_answers, **changed_answers})
            screening.save()
            _enroll_if_eligible(screening)
    except IntegrityError as error:
        if "screening_record_number_unique_per_site" in str(error):
            raise DuplicateRecordNumber() from None
        raise
    return screening


def eligibility_sign(*, participant: Participant, signer, password: str, request=None) -> Signature:
    confirm_password(user=signer, password=password, request=request)
    return _eligibility_signature_record(participant=participant, signer=signer)


def _eligibility_signature_record(*, participant: Participant, signer) -> Signature:
    """The signature itself, once the signer's password was checked (tests/factories.py signs
    through here without a password, as the site's investigator)."""
    with audit_context(actor=signer, reason="Eligibility signed off"):
        # The verdict signed is the one on the locked screening: a correction waits, then sees the
        # signature.
        _screening, participant = lock_screening_and_participant(participant.pk)
        if participant.eligibility_signature_id:
            raise AlreadySigned()
        if participant.screening.outcome != Outcome.ELIGIBLE:
            raise InvalidScreening(_("Only an eligible participant's eligibility can be signed off."))
        signature = Signature.objects.create(
            signer=signer,
            site=participant.site,
            record_table="enrollment_participant",
            record_pk=str(participant.pk),
            meaning=signature_meaning(participant),
        )
        participant.eligibility_signature = signature
        participant.save(update_fields=["eligibility_signature"])
        return signature


def signature_meaning(participant: Participant) -> str:
    return str(SIGNATURE_MEANING) % {"number": participant.screening_number, "protocol": participant.site.trial.nct_id}


def participant_withdraw(
    *, participant: Participant, withdrawn_by, withdrawn_on: datetime.date, reason: str
) -> Withdrawal:
    """A participant leaves the trial by withdrawal, never by deletion."""
    if not (reason or "").strip():
        raise InvalidScreening(_("Give the reason for the withdrawal."), field="reason")
    with audit_context(actor=withdrawn_by, reason=f"Withdrawal: {reason}"):
        # Locked, so two withdrawals recorded at once cannot both pass the status check.
        participant = (
            Participant.objects.select_for_update(of=("self",))
            .select_related("screening", "site")
            .get(pk=participant.pk)
        )
        if participant.status == ParticipantStatus.WITHDRAWN:
            raise Conflict(_("The participant has already withdrawn."))
        if participant.status == ParticipantStatus.DIED:
            raise Conflict(_("The participant died; their participation has already ended."))
        if withdrawn_on < participant.screening.screening_date:
            raise InvalidScreening(_("The withdrawal date cannot be before the screening date."), field="withdrawn_on")
        if withdrawn_on > timezone.localdate(timezone=participant.site.zone):
            raise InvalidScreening(_("The withdrawal date cannot be in the future."), field="withdrawn_on")
        withdrawal = Withdrawal.objects.create(
            participant=participant,
            site=participant.site,
            withdrawn_on=withdrawn_on,
            reason=reason,
            recorded_by=withdrawn_by,
            protocol_version_id=participant.site.trial.current_version_id,
        )
        Participant.objects.filter(pk=participant.pk).update(status=ParticipantStatus.WITHDRAWN)
        # dosing imports enrollment's models, so enrollment reaches dosing only when called.
        from dosing.schedule import visits_end_for_withdrawal
        from dosing.services import kits_release_assigned

        visits_end_for_withdrawal(participant_ids=[participant.pk])
        # Kits assigned at the day's dosing visit and not handed out go back to the site's stock,
        # as at a death or a treatment stop: the same for every content, so nothing tells an arm.
        kits_release_assigned(participant_id=participant.pk)
    return withdrawal
