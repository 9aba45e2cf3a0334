"""Planning, dispatching and sending visit reminders.

- `reminders_plan` writes the outbox rows for new visits, in the caller's transaction.
- `reminders_plan_pending` (the dispatcher's first step) writes them for the plans made at
  randomization, which leaves them out of its transaction to stay short: every visit of such a
  plan still open and without a reminder gets those due after the randomization time, exactly
  the rows `reminders_plan` would have written then. The unique constraint on live reminders
  makes a second run, or two at once, write nothing more.
- `reminders_dispatch` (beat, every minute) cancels what no longer applies, then hands due
  rows to the broker in batches: a constant number of queries per batch, not per visit.
- `reminder_send` (one Celery task per row) claims its row with a conditional UPDATE, sends,
  and marks it sent. Only one claimant can win, so a duplicate message, a retry or a second
  worker sends nothing more. A claim whose worker died is taken over after a lease.

Delivery guarantee: a reminder is handed to the mail server once. The one window no outbox
can close with SMTP is a crash after the server accepted the message and before the row was
marked sent; the retry then sends again, with the same Message-ID so mail clients fold the two.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import formats, timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from dosing.reminders.channels import OutgoingMessage, PermanentSendError, channel_for
from dosing.reminders.models import Reminder
from enrollment.models import Participant, ParticipantStatus, Withdrawal
from trialsite import outbox
from trialsite.models import Role, StaffRole

logger = logging.getLogger(__name__)

# Transient failures are retried with backoff up to this many attempts, then marked failed.
MAX_ATTEMPTS = 8


def reminder_rules(trial) -> dict:
    rules = trial.protocol.reminders
    return {
        "days_before_window": list(rules.days_before_window),
        "send_time": rules.send_time,
        "quiet_start": rules.quiet_hours.start,
        "quiet_end": rules.quiet_hours.end,
    }


def in_quiet_hours(moment: datetime.time, *, start: datetime.time, end: datetime.time) -> bool:
    if start <= end:
        return start <= moment < end
    return moment >= start or moment < end  # quiet hours that span midnight, e.g. 21:00-08:00


def outside_quiet_hours(due: datetime.datetime, *, zone, start: datetime.time, end: datetime.time) -> datetime.datetime:
    """`due` itself, or the end of the quiet hours it falls in, in the site's zone."""
    local = due.astimezone(zone)
    if not in_quiet_hours(local.time(), start=start, end=end):
        return due
    end_day = local.date() if local.time() < end else local.date() + datetime.timedelta(days=1)
    return datetime.datetime.combine(end_day, end, tzinfo=zone).astimezone(datetime.UTC)


KIND_BY_DAYS = {7: Reminder.Kind.WINDOW_OPENS_7_DAYS, 1: Reminder.Kind.WINDOW_OPENS_1_DAY}


def planned_reminders(visit, *, participant: Participant, now: datetime.datetime) -> list[Reminder]:
    """The reminders a visit needs, unsaved. Past due times are left out: a visit planned
    today does not get yesterday's reminder."""
    site = participant.site
    zone = site.zone
    rules = reminder_rules(site.trial)
    audiences = [Reminder.Audience.SITE_STAFF]
    if participant.contact_consent and participant.contact_email:
        audiences.append(Reminder.Audience.PARTICIPANT)
    reminders = []
    for days in rules["days_before_window"]:
        kind = KIND_BY_DAYS.get(days)
        if kind is None:
            continue
        local_day = visit.window_start - datetime.timedelta(days=days)
        due = datetime.datetime.combine(local_day, rules["send_time"], tzinfo=zone).astimezone(datetime.UTC)
        for audience in audiences:
            due_for_audience = due
            if audience == Reminder.Audience.PARTICIPANT:
                due_for_audience = outside_quiet_hours(
                    due, zone=zone, start=rules["quiet_start"], end=rules["quiet_end"]
                )
            if due_for_audience > now:
                reminders.append(
                    Reminder(
                        participant=participant,
                        site=site,
                        visit=visit,
                        kind=kind,
                        audience=audience,
                        due_at=due_for_audience,
                    )
                )
    window_closes = datetime.datetime.combine(
        visit.window_end + datetime.timedelta(days=1), datetime.time(0, 0), tzinfo=zone
    ).astimezone(datetime.UTC)
    if window_closes > now:
        reminders.append(
            Reminder(
                participant=participant,
                site=site,
                visit=visit,
                kind=Reminder.Kind.MISSED_VISIT,
                audience=Reminder.Audience.SITE_STAFF,
                due_at=window_closes,
            )
        )
    return reminders


def reminders_plan(*, visits, participant: Participant) -> list[Reminder]:
    """Write the outbox rows for `visits`; call it in the transaction that creates them."""
    now = timezone.now()
    rows = [reminder for visit in visits for reminder in planned_reminders(visit, participant=participant, now=now)]
    return Reminder.objects.bulk_create(rows)


def reminders_plan_pending(*, now: datetime.datetime | None = None, batch_size: int = 200) -> int:
    """Plan the reminders of the randomization plans that have none yet (see the module's
    description); returns how many reminders it planned (one another run wrote first is skipped
    by the database, not written twice). A constant number of queries per batch of participants.

    A plan is planned in one transaction, and every plan gets at least its first visit's
    missed-visit alert (its window closes after the randomization), so a randomized participant
    without a reminder of the plan is one whose plan is still to be planned: that index lookup
    per participant is the scan, not a lookup per visit."""
    from schedules.models import Visit, VisitKind, VisitStatus
    from trialsite.audit import audit_context
    from trialsite.models import Trial

    now = now or timezone.now()
    of_the_plan = Reminder.objects.filter(participant=OuterRef("pk")).exclude(visit__kind=VisitKind.UNSCHEDULED)
    unplanned = (
        Participant.objects.filter(status=ParticipantStatus.RANDOMIZED)
        .filter(~Exists(of_the_plan))
        .select_related("site")
        .order_by("pk")
    )
    # Open visits, and missed ones (their missed-visit alert is still to go out, however late
    # this runs); never one that happened or will not happen (`_still_wanted`), nor one that
    # already has reminders.
    pending = (
        Visit.objects.filter(status__in=[VisitStatus.SCHEDULED, VisitStatus.MISSED], actual_date__isnull=True)
        .exclude(kind=VisitKind.UNSCHEDULED)
        .filter(~Exists(Reminder.objects.filter(visit=OuterRef("pk"))))
        .order_by("id")
    )
    trials: dict[int, Trial] = {}
    written = 0
    after_pk = 0
    while True:
        participants = {participant.pk: participant for participant in unplanned.filter(pk__gt=after_pk)[:batch_size]}
        if not participants:
            return written
        # Each trial once (its protocol is parsed once), not with every participant's row.
        wanted = {participant.site.trial_id for participant in participants.values()} - trials.keys()
        trials |= Trial.objects.in_bulk(wanted) if wanted else {}
        rows = []
        for visit in pending.filter(participant_id__in=participants):
            participant = participants[visit.participant_id]
            participant.site.trial = trials[participant.site.trial_id]
            # The randomization time is when the plan was made: a reminder due between it and
            # now is planned (and handed over at once), as it would have been then.
            as_of = min(participant.randomized_at or now, now)
            rows += planned_reminders(visit, participant=participant, now=as_of)
        with audit_context(reason="reminders planned for the visit schedule made at randomization"):
            written += len(Reminder.objects.bulk_create(rows, ignore_conflicts=True))
        after_pk = max(participants)


def reminders_replan(*, visit, reason: str) -> list[Reminder]:
    """The visit's window moved: cancel what has not gone out and plan again."""
    with transaction.atomic():
        Reminder.objects.filter(visit=visit, status=Reminder.Status.SCHEDULED).update(
            status=Reminder.Status.CANCELLED, status_reason=reason
        )
        return reminders_plan(visits=[visit], participant=visit.participant)


def reminders_cancel_stale() -> int:
    """Cancel, set-wise, scheduled reminders that no longer apply: the visit happened, the
    participant withdrew, or the participant opted out of contact."""
    scheduled = Reminder.objects.filter(status=Reminder.Status.SCHEDULED)
    withdrawn = Exists(Withdrawal.objects.filter(participant=OuterRef("participant")))
    cancelled = scheduled.filter(withdrawn).update(
        status=Reminder.Status.CANCELLED, status_reason=gettext_noop("participant withdrew")
    )
    cancelled += scheduled.filter(visit__actual_date__isnull=False).update(
        status=Reminder.Status.CANCELLED, status_reason=gettext_noop("the visit happened")
    )
    cancelled += scheduled.filter(visit__status="cancelled").update(
        status=Reminder.Status.CANCELLED, status_reason=gettext_noop("the visit was cancelled (treatment stopped)")
    )
    cancelled += scheduled.filter(visit__status="not_done_withdrawn").update(
        status=Reminder.Status.CANCELLED, status_reason=gettext_noop("the visit will not happen (participant withdrew)")
    )
    cancelled += scheduled.filter(audience=Reminder.Audience.PARTICIPANT, participant__contact_consent=False).update(
        status=Reminder.Status.CANCELLED, status_reason=gettext_noop("participant opted out of contact")
    )
    return cancelled


def due_reminder_ids(*, now: datetime.datetime, batch_size: int, after_id: int = 0) -> list[int]:
    """Ids of rows to hand to the broker (`trialsite.outbox.handable`), in id order from `after_id`."""
    return list(
        Reminder.objects.filter(outbox.handable(now=now), id__gt=after_id)
        .order_by("id")
        .values_list("id", flat=True)[:batch_size]
    )


def reminders_dispatch(*, now: datetime.datetime | None = None, batch_size: int = 2000) -> int:
    """Hand every due reminder to the broker, one task each. Returns how many were handed over.
    If the broker is down, the rows stay as they are and the next run tries again."""
    from dosing.reminders.tasks import send_reminder

    now = now or timezone.now()
    try:
        reminders_plan_pending(now=now)
    except Exception:  # planning must not hold back the reminders already planned
        logger.exception("reminder dispatch: planning the pending visit schedules failed")
    reminders_cancel_stale()
    handed_over = 0
    after_id = 0
    while True:
        ids = due_reminder_ids(now=now, batch_size=batch_size, after_id=after_id)
        if not ids:
            return handed_over
        try:
            # One connection for the whole batch, not one per message.
            with send_reminder.app.producer_or_acquire() as producer:
                for reminder_id in ids:
                    send_reminder.apply_async(args=[reminder_id], retry=False, producer=producer)
        except Exception as error:  # the broker is unreachable: leave the rows for the next run
            logger.warning("reminder dispatch: broker unavailable (%s); %d rows wait", type(error).__name__, len(ids))
            return handed_over
        Reminder.objects.filter(id__in=ids).update(enqueued_at=now)
        handed_over += len(ids)
        after_id = ids[-1]


@dataclass
class SendResult:
    reminder_id: int
    outcome: str


def recipients_for(reminder: Reminder) -> list[str]:
    if reminder.audience == Reminder.Audience.PARTICIPANT:
        return [reminder.participant.contact_email] if reminder.participant.contact_email else []
    roles = [Role.COORDINATOR]
    if reminder.kind == Reminder.Kind.MISSED_VISIT:
        roles.append(Role.INVESTIGATOR)
    emails = (
        StaffRole.objects.filter(site=reminder.site, role__in=roles, user__is_active=True)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
        .distinct()
    )
    return sorted(emails)


def _day(day) -> str:
    """A date as the reader's language writes it (21 Nov 2026, 2026年11月21日); call inside
    translation.override so the format is the recipient's, not the sender's."""
    return formats.date_format(day, "SHORT_DATE_FORMAT")


def compose(reminder: Reminder) -> OutgoingMessage:
    """The message, in the participant's language for them and the site's working language
    (English) for staff. It names the participant by number only and the medication as
    'study medication', identical for every arm."""
    participant, visit, site = reminder.participant, reminder.visit, reminder.site
    language = participant.language if reminder.audience == Reminder.Audience.PARTICIPANT else "en"
    number = participant.randomization_number or participant.screening_number
    zone_name = site.time_zone
    with translation.override(language):
        if reminder.kind == Reminder.Kind.MISSED_VISIT:
            subject = _("Missed visit: %(number)s, visit %(visit)s") % {"number": number, "visit": visit.code}
            body = _(
                "No visit was recorded for participant %(number)s, visit %(visit)s, whose window "
                "closed on %(end)s (%(zone)s). Please record the visit or the reason it was missed."
            ) % {"number": number, "visit": visit.code, "end": _day(visit.window_end), "zone": zone_name}
        elif reminder.audience == Reminder.Audience.PARTICIPANT:
            subject = _("Reminder: your study visit")
            body = _(
                "Your next study visit can take place between %(start)s and %(end)s. Please bring your "
                "study medication, including any tablets you have not taken. Contact the study team "
                "if you cannot come."
            ) % {"start": _day(visit.window_start), "end": _day(visit.window_end)}
        else:
            subject = _("Visit reminder: %(number)s, visit %(visit)s opens %(start)s") % {
                "number": number,
                "visit": visit.code,
                "start": _day(visit.window_start),
            }
            body = _(
                "Participant %(number)s is due for visit %(visit)s. Window: %(start)s to %(end)s "
                "(%(zone)s). Study medication will be assigned when the visit is recorded."
            ) % {
                "number": number,
                "visit": visit.code,
                "start": _day(visit.window_start),
                "end": _day(visit.window_end),
                "zone": zone_name,
            }
    return OutgoingMessage(
        subject=subject,
        body=body,
        recipients=recipients_for(reminder),
        message_id=f"<reminder-{reminder.pk}@{site.code.lower()}.trialsite>",
    )


def _still_wanted(reminder: Reminder) -> str | None:
    """Why the reminder should not go out any more, or None."""
    if reminder.participant.status == ParticipantStatus.WITHDRAWN or hasattr(reminder.participant, "withdrawal"):
        return gettext_noop("participant withdrew")
    if reminder.participant.status == ParticipantStatus.DIED:
        return gettext_noop("participant died")
    if reminder.visit.actual_date is not None:
        return gettext_noop("the visit happened")
    if reminder.visit.status == "cancelled":
        return gettext_noop("the visit was cancelled (treatment stopped)")
    if reminder.visit.status == "not_done_withdrawn":
        return gettext_noop("the visit will not happen (participant withdrew)")
    if reminder.visit.status == "not_done_died":
        return gettext_noop("the visit will not happen (participant died)")
    if reminder.audience == Reminder.Audience.PARTICIPANT and not reminder.participant.contact_consent:
        return gettext_noop("participant opted out of contact")
    return None


def reminder_send(*, reminder_id: int) -> SendResult:
    """Send one reminder if this call wins its claim. Raises TransientSendError (the task
    retries with backoff) for a failure worth retrying; marks the row failed otherwise."""
    now = timezone.now()
    if not outbox.claim(Reminder._meta.db_table, reminder_id, now=now):
        return SendResult(reminder_id, "already handled")
    reminder = Reminder.objects.select_related("participant__site", "visit", "site").get(pk=reminder_id)
    reason = _still_wanted(reminder)
    if reason:
        Reminder.objects.filter(pk=reminder_id, status=Reminder.Status.SENDING).update(
            status=Reminder.Status.CANCELLED, status_reason=reason
        )
        return SendResult(reminder_id, "cancelled")
    message = compose(reminder)
    if not message.recipients:
        Reminder.objects.filter(pk=reminder_id).update(
            status=Reminder.Status.FAILED, status_reason=gettext_noop("no recipient with an e-mail address")
        )
        return SendResult(reminder_id, "failed")
    try:
        channel_for(reminder.channel).send(message)
    except PermanentSendError as error:
        Reminder.objects.filter(pk=reminder_id).update(status=Reminder.Status.FAILED, status_reason=str(error))
        return SendResult(reminder_id, "failed")
    except Exception as error:
        if reminder.attempts >= MAX_ATTEMPTS:
            Reminder.objects.filter(pk=reminder_id).update(
                status=Reminder.Status.FAILED,
                status_reason=f"gave up after {reminder.attempts} attempts: {type(error).__name__}: {error}",
            )
            return SendResult(reminder_id, "failed")
        # Give the row back so the retry (or the next beat run) can claim it again.
        Reminder.objects.filter(pk=reminder_id, status=Reminder.Status.SENDING).update(
            status=Reminder.Status.SCHEDULED, status_reason=f"retrying after {type(error).__name__}: {error}"
        )
        raise
    Reminder.objects.filter(pk=reminder_id).update(
        status=Reminder.Status.SENT, sent_at=timezone.now(), recipients=", ".join(message.recipients), status_reason=""
    )
    return SendResult(reminder_id, "sent")


def participant_contact_opt_out(*, participant: Participant, changed_by, reason: str) -> int:
    """The participant no longer wants messages: record it and cancel what is pending."""
    from trialsite.audit import audit_context

    with audit_context(actor=changed_by, reason=reason or "participant opted out of contact"):
        Participant.objects.filter(pk=participant.pk).update(contact_consent=False)
        return Reminder.objects.filter(
            participant=participant, audience=Reminder.Audience.PARTICIPANT, status=Reminder.Status.SCHEDULED
        ).update(status=Reminder.Status.CANCELLED, status_reason=gettext_noop("participant opted out of contact"))
