"""Adverse events and the serious adverse event clock.

- `ae_record` writes a new event (and, when serious, starts the SAE clock).
- `ae_grade_change` writes the next grade episode of an event, linked to its first record.
- `ae_resolve` ends the event's current episode with an outcome.
- `sae_report_write` / `sae_report_sign` write a version of the SAE report and the PI's signature.
- `sae_notices_dispatch` (beat, every minute) and `sae_notice_send` (one task per notice) send the
  clock's e-mails from the outbox, claimed with a lease like visit reminders, so each goes once.

No message or page here names an arm: the words are "study infusion" and "study tablets"."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from dosing.reminders.channels import OutgoingMessage, PermanentSendError, channel_for
from dosing.schedule import visits_end_for_death
from enrollment.models import Participant, ParticipantStatus
from safety.ctcae import TERMS, grades_of
from safety.models import AdverseEvent, Death, Outcome, SaeNotice, SaeReport, Seriousness
from schedules.models import Visit
from trialsite import access, outbox
from trialsite.access import Capability
from trialsite.audit import audit_context
from trialsite.exceptions import Conflict, TrialRuleError
from trialsite.models import Role, Signature, StaffRole
from trialsite.reauth import confirm_password

logger = logging.getLogger(__name__)

# Escalations while the SAE report is not complete and signed; the report is overdue after 24 h.
ESCALATIONS = (
    (SaeNotice.Kind.HOURS_12, datetime.timedelta(hours=12)),
    (SaeNotice.Kind.HOURS_20, datetime.timedelta(hours=20)),
)
SAE_REPORT_DUE = datetime.timedelta(hours=24)
MAX_ATTEMPTS = 8


class InvalidAdverseEvent(TrialRuleError):
    pass


# Who records adverse events at a site: those who record visits, and the investigator.
RECORD_CAPABILITIES = (Capability.RECORD_VISITS, Capability.SIGN_ELIGIBILITY)


def may_record(user, site) -> bool:
    return any(access.can(user, capability, site) for capability in RECORD_CAPABILITIES)


def require_record(user, site) -> None:
    if not may_record(user, site):
        access.require(user, Capability.RECORD_VISITS, site)


def is_investigator(user, site) -> bool:
    return StaffRole.objects.filter(user=user, site=site, role=Role.INVESTIGATOR).exists()


@dataclass
class AeDetails:
    """What the site says about an episode of an event (the form's and the API's fields)."""

    grade: int
    onset_date: datetime.date
    term: str = ""
    term_text: str = ""
    serious: bool = False
    seriousness: tuple[str, ...] = ()
    awareness_at: datetime.datetime | None = None
    relation_infusion: str = ""
    relation_tablets: str = ""
    action_infusion: str = ""
    action_tablets: str = ""
    outcome: str = Outcome.NOT_RECOVERED
    # A grade 5 episode: the participant's death, which closes their treatment and follow-up.
    died_on: datetime.date | None = None
    death_cause: str = ""


def _check(details: AeDetails, *, participant: Participant, term: str) -> None:
    entry = TERMS.get(term)
    if entry is None:
        raise InvalidAdverseEvent(_("Choose a CTCAE term from the list."), field="term")
    if entry.needs_text and not details.term_text.strip():
        raise InvalidAdverseEvent(_("Write the event in words for this term."), field="term_text")
    if details.grade not in grades_of(term):
        raise InvalidAdverseEvent(
            _("CTCAE defines grades %(grades)s for this term.") % {"grades": ", ".join(map(str, grades_of(term)))},
            field="grade",
        )
    today = timezone.localdate(timezone=participant.site.zone)
    if details.onset_date > today:
        raise InvalidAdverseEvent(_("The onset date cannot be in the future."), field="onset_date")
    if details.grade == 5 and details.outcome != Outcome.FATAL:
        raise InvalidAdverseEvent(_("A grade 5 event is fatal: choose the outcome Fatal."), field="outcome")
    if details.outcome == Outcome.FATAL and details.grade != 5:
        raise InvalidAdverseEvent(_("A fatal event is CTCAE grade 5."), field="grade")
    if details.grade == 5:
        _check_death(details, participant=participant)
    else:
        died_on = Death.objects.filter(participant=participant).values_list("died_on", flat=True).first()
        if died_on is not None and details.onset_date > died_on:
            raise InvalidAdverseEvent(
                _("The participant died on %(date)s; the onset cannot be later.") % {"date": died_on},
                field="onset_date",
            )
    unknown = set(details.seriousness) - set(Seriousness.values)
    if unknown:
        raise InvalidAdverseEvent(_("Choose seriousness criteria from the list."), field="seriousness")
    if details.serious and not details.seriousness:
        raise InvalidAdverseEvent(_("A serious event needs at least one seriousness criterion."), field="seriousness")
    if details.seriousness and not details.serious:
        raise InvalidAdverseEvent(_("Seriousness criteria are for a serious event."), field="serious")
    if details.serious and details.awareness_at is None:
        raise InvalidAdverseEvent(_("Enter when the site became aware the event is serious."), field="awareness_at")
    if details.awareness_at is not None and details.awareness_at > timezone.now():
        raise InvalidAdverseEvent(_("The awareness time cannot be in the future."), field="awareness_at")


def _check_death(details: AeDetails, *, participant: Participant) -> None:
    if Seriousness.DEATH not in details.seriousness:
        raise InvalidAdverseEvent(
            _("A fatal event is serious: tick the criterion \u201cResulted in death\u201d."), field="seriousness"
        )
    if details.died_on is None:
        raise InvalidAdverseEvent(_("Enter the date of death."), field="died_on")
    if details.died_on < details.onset_date:
        raise InvalidAdverseEvent(_("The date of death cannot be before the onset."), field="died_on")
    if details.died_on > timezone.localdate(timezone=participant.site.zone):
        raise InvalidAdverseEvent(_("The date of death cannot be in the future."), field="died_on")
    if not details.death_cause.strip():
        raise InvalidAdverseEvent(_("Enter the cause of death."), field="death_cause")
    # A visit recorded after the death would be a data error on one side or the other.
    last_visit = (
        Visit.objects.filter(participant=participant, actual_date__isnull=False)
        .order_by("-actual_date")
        .values_list("actual_date", flat=True)
        .first()
    )
    if last_visit is not None and details.died_on < last_visit:
        raise InvalidAdverseEvent(
            _("A visit was recorded on %(date)s, after this date of death.") % {"date": last_visit}, field="died_on"
        )


def _record_death(event: AdverseEvent, details: AeDetails, *, recorded_by) -> Death:
    """The participant's death closes their treatment and follow-up (runs inside the caller's
    transaction and audit context, with the participant row locked)."""
    participant = event.participant
    if Death.objects.filter(participant=participant).exists():
        raise Conflict(_("The participant's death is already recorded."))
    death = Death.objects.create(
        participant=participant,
        site=participant.site,
        died_on=details.died_on,
        cause=details.death_cause.strip(),
        adverse_event=event.first,
        protocol_version_id=participant.site.trial.current_version_id,
        recorded_by=recorded_by,
    )
    Participant.objects.filter(pk=participant.pk).update(status=ParticipantStatus.DIED)
    visits_end_for_death(participant_id=participant.pk, died_on=details.died_on)
    return death


def _fields(details: AeDetails, *, term: str) -> dict:
    return {
        "term": term,
        "term_text": details.term_text.strip(),
        "grade": details.grade,
        "onset_date": details.onset_date,
        "serious": details.serious,
        "seriousness": list(details.seriousness),
        "awareness_at": details.awareness_at if details.serious else None,
        "relation_infusion": details.relation_infusion,
        "relation_tablets": details.relation_tablets,
        "action_infusion": details.action_infusion,
        "action_tablets": details.action_tablets,
        "outcome": details.outcome,
        # A fatal episode ends on the day of death.
        "resolution_date": details.died_on if details.grade == 5 else None,
    }


def _special_interest(participant: Participant, term: str) -> bool:
    return term in participant.site.trial.protocol.adverse_events.special_interest


def ae_record(*, participant: Participant, recorded_by, details: AeDetails) -> AdverseEvent:
    """A new adverse event of the participant; a serious one starts the SAE clock."""
    require_record(recorded_by, participant.site)
    with audit_context(actor=recorded_by, reason="Adverse event recorded"), transaction.atomic():
        # Locked, so two events recorded at once cannot take the same number.
        participant = (
            Participant.objects.select_for_update(of=("self",)).select_related("site__trial").get(pk=participant.pk)
        )
        # Under the lock: a death recorded at the same moment is seen by the checks against it.
        _check(details, participant=participant, term=details.term)
        last = AdverseEvent.objects.filter(participant=participant).aggregate(last=Max("sequence"))["last"] or 0
        event = AdverseEvent.objects.create(
            participant=participant,
            site=participant.site,
            sequence=last + 1,
            special_interest=_special_interest(participant, details.term),
            protocol_version_id=participant.site.trial.current_version_id,
            recorded_by=recorded_by,
            **_fields(details, term=details.term),
        )
        if event.grade == 5:
            _record_death(event, details, recorded_by=recorded_by)
        if event.serious:
            _start_sae_clock(event)
        return event


def current_episode(first: AdverseEvent) -> AdverseEvent:
    return AdverseEvent.objects.filter(Q(pk=first.pk) | Q(follows=first)).order_by("-onset_date", "-id").first()


def ae_grade_change(*, event: AdverseEvent, recorded_by, details: AeDetails) -> AdverseEvent:
    """The event's grade changed: a new record linked to the first, the current one ended on
    the day of the change. The term stays the event's; seriousness may be added (the clock then
    starts), never taken away."""
    first = event.first
    require_record(recorded_by, first.site)
    already_serious = first_serious(first)
    if already_serious is not None and details.serious and details.awareness_at is None:
        # The clock already runs from the first awareness; the site need not enter it again.
        details.awareness_at = already_serious.awareness_at
    with audit_context(actor=recorded_by, reason="Adverse event grade changed"), transaction.atomic():
        # The participant first, in the order ae_record locks: a death is recorded at most once.
        Participant.objects.select_for_update(of=("self",)).get(pk=first.participant_id)
        # Under the lock, as in ae_record: the checks against a death see one recorded meanwhile.
        _check(details, participant=first.participant, term=first.term)
        first = AdverseEvent.objects.select_for_update().get(pk=first.pk)
        current = current_episode(first)
        if current.resolution_date is not None:
            raise Conflict(_("The event has resolved; record a new event instead."))
        if details.grade == current.grade:
            raise InvalidAdverseEvent(_("The grade is the same as the current one."), field="grade")
        if details.onset_date < current.onset_date:
            raise InvalidAdverseEvent(_("The change cannot be before the current grade's onset."), field="onset_date")
        was_serious = AdverseEvent.objects.filter(Q(pk=first.pk) | Q(follows=first), serious=True).exists()
        if was_serious and not details.serious:
            raise InvalidAdverseEvent(_("A serious event stays serious."), field="serious")
        current.resolution_date = details.onset_date
        current.outcome = Outcome.RECOVERING if details.grade < current.grade else Outcome.NOT_RECOVERED
        current.save(update_fields=["resolution_date", "outcome"])
        fields = _fields(details, term=first.term)
        fields["term_text"] = first.term_text
        if was_serious:
            fields["awareness_at"] = first_serious(first).awareness_at
        episode = AdverseEvent.objects.create(
            participant=first.participant,
            site=first.site,
            sequence=first.sequence,
            follows=first,
            special_interest=first.special_interest,
            protocol_version_id=first.site.trial.current_version_id,
            recorded_by=recorded_by,
            **fields,
        )
        if episode.grade == 5:
            _record_death(episode, details, recorded_by=recorded_by)
        if episode.serious and not was_serious:
            _start_sae_clock(episode)
        return episode


def ae_resolve(*, event: AdverseEvent, recorded_by, resolution_date: datetime.date, outcome: str) -> AdverseEvent:
    first = event.first
    require_record(recorded_by, first.site)
    if outcome == Outcome.FATAL:
        # A death is a grade 5 episode, recorded with its date and cause.
        raise InvalidAdverseEvent(
            _("A fatal outcome is CTCAE grade 5: record a grade change to grade 5 with the date and cause of death."),
            field="outcome",
        )
    if outcome not in (Outcome.RECOVERED, Outcome.SEQUELAE):
        raise InvalidAdverseEvent(_("An event ends recovered or recovered with sequelae."), field="outcome")
    with audit_context(actor=recorded_by, reason="Adverse event resolved"), transaction.atomic():
        first = AdverseEvent.objects.select_for_update().get(pk=first.pk)
        current = current_episode(first)
        if current.resolution_date is not None:
            raise Conflict(_("The event has already resolved."))
        if resolution_date < current.onset_date:
            raise InvalidAdverseEvent(_("The resolution date cannot be before the onset."), field="resolution_date")
        if resolution_date > timezone.localdate(timezone=first.site.zone):
            raise InvalidAdverseEvent(_("The resolution date cannot be in the future."), field="resolution_date")
        # An event open at the death stays ongoing at death: nobody recovers after it.
        died_on = Death.objects.filter(participant_id=first.participant_id).values_list("died_on", flat=True).first()
        if died_on is not None and resolution_date > died_on:
            raise InvalidAdverseEvent(
                _("The participant died on %(date)s; the resolution cannot be later.") % {"date": died_on},
                field="resolution_date",
            )
        current.resolution_date = resolution_date
        current.outcome = outcome
        current.save(update_fields=["resolution_date", "outcome"])
        return current


# --- The SAE clock -----------------------------------------------------------------------------


def first_serious(first: AdverseEvent) -> AdverseEvent | None:
    return AdverseEvent.objects.filter(Q(pk=first.pk) | Q(follows=first), serious=True).order_by("id").first()


def _start_sae_clock(event: AdverseEvent) -> None:
    """The outbox rows of the clock, in the caller's transaction; the first notice is handed to
    a worker once the transaction commits (beat hands it over too, should the broker be down)."""
    first = event.first
    aware = event.awareness_at
    rows = [
        SaeNotice(
            participant=first.participant,
            site=first.site,
            adverse_event=first,
            kind=SaeNotice.Kind.INITIAL,
            due_at=aware,
        )
    ]
    rows += [
        SaeNotice(participant=first.participant, site=first.site, adverse_event=first, kind=kind, due_at=aware + after)
        for kind, after in ESCALATIONS
    ]
    notices = SaeNotice.objects.bulk_create(rows)
    initial_id = notices[0].pk

    def hand_over():
        from safety.tasks import send_sae_notice

        try:
            send_sae_notice.apply_async(args=[initial_id], retry=False)
        except Exception as error:  # the broker is down: beat hands it over within the minute
            logger.warning("SAE notice %s: broker unavailable (%s)", initial_id, type(error).__name__)
            return
        SaeNotice.objects.filter(pk=initial_id, enqueued_at__isnull=True).update(enqueued_at=timezone.now())

    transaction.on_commit(hand_over)


def signed_report(first: AdverseEvent) -> SaeReport | None:
    return (
        SaeReport.objects.filter(adverse_event=first, complete=True, signature__isnull=False)
        .order_by("-version")
        .first()
    )


def sae_overdue(user, *, now: datetime.datetime | None = None):
    """The user's sites' serious events past 24 hours from awareness with no signed complete report."""
    now = now or timezone.now()
    return (
        access.scope(AdverseEvent.objects.all(), user, Capability.VIEW_PARTICIPANTS)
        .filter(
            follows__isnull=True,
            sae_notices__kind=SaeNotice.Kind.INITIAL,
            sae_notices__due_at__lte=now - SAE_REPORT_DUE,
        )
        .exclude(sae_reports__complete=True, sae_reports__signature__isnull=False)
        .select_related("participant")
        .distinct()
    )


def sae_report_write(*, event: AdverseEvent, written_by, narrative: str, complete: bool) -> SaeReport:
    """The next version of the event's SAE report (1: initial, then follow-ups)."""
    first = event.first
    require_record(written_by, first.site)
    if first_serious(first) is None:
        raise Conflict(_("The event is not serious."))
    if complete and not narrative.strip():
        raise InvalidAdverseEvent(_("A complete report needs the narrative."), field="narrative")
    with audit_context(actor=written_by, reason="SAE report written"), transaction.atomic():
        first = AdverseEvent.objects.select_for_update().get(pk=first.pk)
        last = SaeReport.objects.filter(adverse_event=first).aggregate(last=Max("version"))["last"] or 0
        return SaeReport.objects.create(
            participant=first.participant,
            site=first.site,
            adverse_event=first,
            version=last + 1,
            narrative=narrative.strip(),
            complete=complete,
            protocol_version_id=first.site.trial.current_version_id,
            written_by=written_by,
        )


def sae_report_sign(*, report: SaeReport, signer, password: str, request=None) -> Signature:
    """The PI signs a complete version with their password; pending escalations are cancelled."""
    if not is_investigator(signer, report.site):
        raise TrialRuleError(_("Only the site's principal investigator signs the SAE report."))
    confirm_password(user=signer, password=password, request=request)
    with audit_context(actor=signer, reason="SAE report signed"), transaction.atomic():
        report = SaeReport.objects.select_for_update().get(pk=report.pk)
        if report.signature_id:
            raise Conflict(_("This version is already signed."))
        if not report.complete:
            raise InvalidAdverseEvent(_("Only a complete report can be signed."))
        signature = Signature.objects.create(
            signer=signer,
            site=report.site,
            record_table="safety_saereport",
            record_pk=str(report.pk),
            meaning=f"I confirm SAE report version {report.version} of adverse event {report.adverse_event.sequence} "
            f"of participant {report.participant.label} is complete and correct.",
        )
        report.signature = signature
        report.save(update_fields=["signature"])
        SaeNotice.objects.filter(adverse_event=report.adverse_event, status=SaeNotice.Status.SCHEDULED).exclude(
            kind=SaeNotice.Kind.INITIAL
        ).update(status=SaeNotice.Status.CANCELLED, status_reason=gettext_noop("the SAE report was signed"))
        return signature


def due_notice_ids(*, now: datetime.datetime) -> list[int]:
    return list(SaeNotice.objects.filter(outbox.handable(now=now)).order_by("id").values_list("id", flat=True)[:2000])


def sae_notices_dispatch(*, now: datetime.datetime | None = None) -> int:
    """Hand every due notice to the broker. Rows stay as they are if the broker is down."""
    from safety.tasks import send_sae_notice

    now = now or timezone.now()
    ids = due_notice_ids(now=now)
    if not ids:
        return 0
    try:
        with send_sae_notice.app.producer_or_acquire() as producer:
            for notice_id in ids:
                send_sae_notice.apply_async(args=[notice_id], retry=False, producer=producer)
    except Exception as error:
        logger.warning("SAE notice dispatch: broker unavailable (%s); %d rows wait", type(error).__name__, len(ids))
        return 0
    SaeNotice.objects.filter(id__in=ids).update(enqueued_at=now)
    return len(ids)


def recipients_for(notice: SaeNotice) -> list[str]:
    investigators = (
        StaffRole.objects.filter(site=notice.site, role=Role.INVESTIGATOR, user__is_active=True)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    return sorted({*investigators, notice.site.trial.sponsor_contact_email} - {""})


# Every notice in English and then in Chinese: the sponsor's safety contact and the Chinese
# site's investigator read the same message, and a translation never stands in for the English.
NOTICE_LANGUAGES = ("en", "zh-hans")


def _notice_text(notice: SaeNotice, language: str) -> tuple[str, str]:
    """The subject and body in one language. The words are blinded: event, grade, seriousness."""
    first = notice.adverse_event
    serious = first_serious(first)
    number = notice.participant.randomization_number or notice.participant.screening_number
    entry = TERMS[first.term]
    with translation.override(language):
        term = (entry.term_zh if language.startswith("zh") else entry.term) + (
            f" ({first.term_text})" if first.term_text else ""
        )
        criteria = "; ".join(str(Seriousness(value).label) for value in serious.seriousness)
        values = {
            "number": number,
            "sequence": first.sequence,
            "term": term,
            "grade": serious.grade,
            "criteria": criteria,
            "site": notice.site.code,
            "aware": serious.awareness_at.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
        if notice.kind == SaeNotice.Kind.INITIAL:
            subject = _("SAE: participant %(number)s, %(term)s") % values
            lead = _("A serious adverse event was recorded at site %(site)s.") % values
        else:
            subject = _("SAE report not signed (%(hours)s h): participant %(number)s, %(term)s") % {
                **values,
                "hours": notice.kind.removesuffix("h"),
            }
            lead = _(
                "The SAE report for this event is not yet complete and signed by the principal investigator. "
                "It is due 24 hours after awareness."
            )
        body = (
            lead
            + "\n\n"
            + _(
                "Participant: %(number)s\nEvent %(sequence)s: %(term)s, CTCAE grade %(grade)s\n"
                "Seriousness: %(criteria)s\nSite aware at: %(aware)s"
            )
            % values
        )
    return subject, body


def compose(notice: SaeNotice) -> OutgoingMessage:
    """Participant number, event, grade and seriousness, in English then Chinese; never an arm."""
    texts = [_notice_text(notice, language) for language in NOTICE_LANGUAGES]
    return OutgoingMessage(
        subject=" / ".join(subject for subject, _body in texts),
        body="\n\n----------\n\n".join(body for _subject, body in texts),
        recipients=recipients_for(notice),
        message_id=f"<sae-notice-{notice.pk}@{notice.site.code.lower()}.trialsite>",
    )


def sae_notice_send(*, notice_id: int) -> str:
    now = timezone.now()
    if not outbox.claim(SaeNotice._meta.db_table, notice_id, now=now):
        return "already handled"
    notice = SaeNotice.objects.select_related("participant", "site__trial", "adverse_event").get(pk=notice_id)
    if notice.kind != SaeNotice.Kind.INITIAL and signed_report(notice.adverse_event) is not None:
        SaeNotice.objects.filter(pk=notice_id).update(
            status=SaeNotice.Status.CANCELLED, status_reason=gettext_noop("the SAE report was signed")
        )
        return "cancelled"
    message = compose(notice)
    try:
        channel_for("email").send(message)
    except PermanentSendError as error:
        SaeNotice.objects.filter(pk=notice_id).update(status=SaeNotice.Status.FAILED, status_reason=str(error))
        return "failed"
    except Exception as error:
        if notice.attempts >= MAX_ATTEMPTS:
            SaeNotice.objects.filter(pk=notice_id).update(
                status=SaeNotice.Status.FAILED, status_reason=f"gave up: {type(error).__name__}: {error}"
            )
            return "failed"
        SaeNotice.objects.filter(pk=notice_id, status=SaeNotice.Status.SENDING).update(
            status=SaeNotice.Status.SCHEDULED, status_reason=f"retrying after {type(error).__name__}"
        )
        raise
    SaeNotice.objects.filter(pk=notice_id).update(
        status=SaeNotice.Status.SENT, sent_at=timezone.now(), recipients=", ".join(message.recipients), status_reason=""
    )
    return "sent"


# --- SUSAR: the sponsor's assessment and the expedited report ---------------------------------

SUSAR_DUE_FATAL = datetime.timedelta(days=7)
SUSAR_DUE_OTHER = datetime.timedelta(days=15)


class SusarStatus:
    TO_ASSESS = "to_assess"
    NOT_SUSAR = "not_susar"
    OPEN = "open"
    OVERDUE = "overdue"
    DONE = "done"


def fatal_or_life_threatening(first: AdverseEvent) -> bool:
    """Any episode of the event with death or life-threatening among its criteria, or a fatal outcome."""
    return (
        AdverseEvent.objects.filter(Q(pk=first.pk) | Q(follows=first))
        .filter(Q(seriousness__overlap=[Seriousness.DEATH, Seriousness.LIFE_THREATENING]) | Q(outcome=Outcome.FATAL))
        .exists()
    )


def susar_deadline(first: AdverseEvent) -> datetime.datetime:
    serious = first_serious(first)
    due = SUSAR_DUE_FATAL if fatal_or_life_threatening(first) else SUSAR_DUE_OTHER
    return serious.awareness_at + due


def susar_status(assessment, *, now: datetime.datetime | None = None) -> str:
    if assessment is None:
        return SusarStatus.TO_ASSESS
    if not assessment.is_susar:
        return SusarStatus.NOT_SUSAR
    if assessment.reported_at is not None:
        return SusarStatus.DONE
    if (now or timezone.now()) > assessment.deadline:
        return SusarStatus.OVERDUE
    return SusarStatus.OPEN


def may_assess(user, site) -> bool:
    return access.can(user, Capability.ASSESS_SAE, site)


def sponsor_knows_arm(participant_id: int) -> bool:
    """Someone who assesses SAEs for the sponsor has broken this participant's blind (emergency
    unblinding or an opened sealed sheet, both recorded as an unblinding)."""
    from randomization.models import Unblinding

    return any(
        access.can(unblinding.unblinded_by, Capability.ASSESS_SAE, unblinding.site_id)
        for unblinding in Unblinding.objects.filter(participant_id=participant_id).select_related("unblinded_by")
    )


def sae_assess(*, event: AdverseEvent, assessed_by, related: bool, expectedness: str, reference: str):
    """The sponsor's causality and expectedness judgement of a serious event; a related and
    unexpected one is a SUSAR with its expedited-report deadline. A later assessment replaces
    the judgement (audited), keeping a report already sent; not once the sponsor has broken the
    participant's blind (`sponsor_knows_arm`)."""
    from safety.models import SusarAssessment

    first = event.first
    access.require(assessed_by, Capability.ASSESS_SAE, first.site_id)
    if first_serious(first) is None:
        raise Conflict(_("The event is not serious."))
    if expectedness not in SusarAssessment.Expectedness.values:
        raise InvalidAdverseEvent(_("Choose expected or unexpected."), field="expectedness")
    if not (reference or "").strip():
        raise InvalidAdverseEvent(
            _("Name the reference safety information the expectedness was judged against."), field="reference"
        )
    with audit_context(actor=assessed_by, reason="SAE assessed by the sponsor"), transaction.atomic():
        first = AdverseEvent.objects.select_for_update().get(pk=first.pk)
        if SusarAssessment.objects.filter(adverse_event=first).exists() and sponsor_knows_arm(first.participant_id):
            # A judgement changed once the sponsor has seen the arm would be made knowing it
            # (on placebo there is no adverse reaction), and blinded staff read assessments: the
            # change, or its timing after the unblinding, would show them the arm.
            raise Conflict(
                _(
                    "The sponsor has broken the blind of this participant: the assessment can no longer "
                    "be changed. Record new information in a follow-up SAE report."
                ),
                field="expectedness",
            )
        susar = related and expectedness == SusarAssessment.Expectedness.UNEXPECTED
        assessment, _created = SusarAssessment.objects.update_or_create(
            adverse_event=first,
            defaults={
                "participant_id": first.participant_id,
                "site_id": first.site_id,
                "related": related,
                "expectedness": expectedness,
                "reference": reference.strip(),
                "assessed_by": assessed_by,
                "assessed_at": timezone.now(),
                "deadline": susar_deadline(first) if susar else None,
            },
        )
        return assessment


def susar_report_done(*, assessment, reported_by, reference: str, reported_at: datetime.datetime | None = None):
    """The expedited report of a SUSAR was sent to the regulators and ethics committees."""
    from safety.models import SusarAssessment

    access.require(reported_by, Capability.ASSESS_SAE, assessment.site_id)
    if not (reference or "").strip():
        raise InvalidAdverseEvent(_("Give the reference of the expedited report."), field="report_reference")
    reported_at = reported_at or timezone.now()
    if reported_at > timezone.now():
        raise InvalidAdverseEvent(_("The report time cannot be in the future."), field="reported_at")
    with audit_context(actor=reported_by, reason="SUSAR expedited report sent"), transaction.atomic():
        assessment = SusarAssessment.objects.select_for_update().get(pk=assessment.pk)
        if not assessment.is_susar:
            raise Conflict(_("Only a SUSAR needs an expedited report."))
        if assessment.reported_at is not None:
            raise Conflict(_("The expedited report is already recorded."))
        assessment.reported_at = reported_at
        assessment.report_reference = reference.strip()
        assessment.reported_by = reported_by
        assessment.save(update_fields=["reported_at", "report_reference", "reported_by"])
        return assessment


def has_susar(participant) -> bool:
    """Has the sponsor judged one of the participant's serious events related and unexpected?
    Only then may the sponsor's safety officer break this participant's blind."""
    from safety.models import SusarAssessment

    return SusarAssessment.objects.filter(
        participant=participant, related=True, expectedness=SusarAssessment.Expectedness.UNEXPECTED
    ).exists()


def susar_rows(user, *, now: datetime.datetime | None = None) -> list[dict]:
    """The serious events at the user's assessing sites, with their SUSAR status, most urgent first."""
    from safety.models import SusarAssessment

    now = now or timezone.now()
    firsts = (
        access.scope(AdverseEvent.objects.all(), user, Capability.ASSESS_SAE)
        .filter(follows__isnull=True)
        .filter(Q(serious=True) | Q(grade_changes__serious=True))
        .select_related("participant", "site")
        .distinct()
        .order_by("id")
    )
    assessments = {a.adverse_event_id: a for a in SusarAssessment.objects.filter(adverse_event__in=firsts)}
    order = {SusarStatus.OVERDUE: 0, SusarStatus.TO_ASSESS: 1, SusarStatus.OPEN: 2, SusarStatus.DONE: 3}
    rows = []
    for first in firsts:
        assessment = assessments.get(first.pk)
        rows.append({"event": first, "assessment": assessment, "status": susar_status(assessment, now=now)})
    rows.sort(key=lambda row: (order.get(row["status"], 4), row["event"].pk))
    return rows
