"""Visit reminders: planned with the schedule, in the site's time zone, outside quiet hours,
cancelled when they no longer apply, sent once however often they are handed over."""

import datetime

import pytest
import time_machine
from django.core import mail
from django.utils import formats, timezone

from dosing.reminders import services
from dosing.reminders.models import Reminder
from dosing.services import visit_reschedule
from enrollment.models import Participant, ParticipantStatus, Withdrawal
from tests import dosing_factories
from trialsite.audit import audit_context

SHANGHAI = datetime.timezone(datetime.timedelta(hours=8))
# Planning happens a month before day 0 so that every reminder of the plan lies ahead.
PLANNED_ON = datetime.datetime(2026, 10, 1, 12, 0, tzinfo=datetime.UTC)
DAY0 = datetime.date(2026, 11, 3)


@pytest.fixture
def participant(cast, site):
    with time_machine.travel(PLANNED_ON, tick=False):
        return dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)


@pytest.fixture
def contactable(cast, site):
    with time_machine.travel(PLANNED_ON, tick=False):
        participant = dosing_factories.randomized_participant(
            site, arm_code="PBO", by=cast.coordinator, day0=DAY0, schedule=False
        )
        with audit_context(actor=cast.coordinator, reason="agreed to reminders"):
            Participant.objects.filter(pk=participant.pk).update(contact_consent=True, contact_email="p@example.org")
        participant.refresh_from_db()
        from schedules.services import visit_schedule_create

        with audit_context(actor=cast.coordinator, reason="schedule"):
            visit_schedule_create(participant=participant, day0=DAY0)
    return participant


def reminders_of(participant, code):
    return {
        (reminder.kind, reminder.audience): reminder
        for reminder in Reminder.objects.filter(participant=participant, visit__code=code)
    }


def test_the_schedule_writes_reminders_7_and_1_days_before_the_window_opens_at_9_in_shanghai(participant):
    c2 = participant.visits.get(code="C2")  # day 28, window opens 3 days earlier
    assert c2.window_start == datetime.date(2026, 11, 28)
    reminders = reminders_of(participant, "C2")
    seven = reminders[(Reminder.Kind.WINDOW_OPENS_7_DAYS, Reminder.Audience.SITE_STAFF)]
    one = reminders[(Reminder.Kind.WINDOW_OPENS_1_DAY, Reminder.Audience.SITE_STAFF)]
    assert seven.due_at.astimezone(SHANGHAI) == datetime.datetime(2026, 11, 21, 9, 0, tzinfo=SHANGHAI)
    assert one.due_at.astimezone(SHANGHAI) == datetime.datetime(2026, 11, 27, 9, 0, tzinfo=SHANGHAI)
    # 09:00 in Shanghai is 01:00 UTC: the due time is on the same calendar day on both sides.
    assert seven.due_at == datetime.datetime(2026, 11, 21, 1, 0, tzinfo=datetime.UTC)


def test_a_missed_visit_alert_is_due_when_the_window_closes_at_midnight_in_the_site_zone(participant):
    c2 = participant.visits.get(code="C2")
    missed = reminders_of(participant, "C2")[(Reminder.Kind.MISSED_VISIT, Reminder.Audience.SITE_STAFF)]
    # Midnight after the last day of the window in Shanghai is 16:00 UTC the day before.
    assert c2.window_end == datetime.date(2026, 12, 4)
    assert missed.due_at == datetime.datetime(2026, 12, 4, 16, 0, tzinfo=datetime.UTC)


def test_participants_get_reminders_only_when_they_agreed_to_be_contacted(participant, contactable):
    assert not Reminder.objects.filter(participant=participant, audience=Reminder.Audience.PARTICIPANT).exists()
    assert Reminder.objects.filter(participant=contactable, audience=Reminder.Audience.PARTICIPANT).count() == (
        2 * contactable.visits.count()
    )


def test_reminders_already_in_the_past_when_the_schedule_is_made_are_not_planned(cast, site):
    with time_machine.travel(datetime.datetime(2026, 11, 25, 3, 0, tzinfo=datetime.UTC), tick=False):
        participant = dosing_factories.randomized_participant(site, arm_code="ASA", by=cast.coordinator, day0=DAY0)
        assert not Reminder.objects.filter(participant=participant, due_at__lte=timezone.now()).exists()
    assert not Reminder.objects.filter(participant=participant, visit__code="C1").exists()


@pytest.mark.parametrize(
    ("local_due", "expected_local"),
    [
        (datetime.datetime(2026, 11, 21, 22, 30), datetime.datetime(2026, 11, 22, 8, 0)),  # late evening
        (datetime.datetime(2026, 11, 21, 0, 15), datetime.datetime(2026, 11, 21, 8, 0)),  # just past midnight
        (datetime.datetime(2026, 11, 21, 7, 59), datetime.datetime(2026, 11, 21, 8, 0)),
        (datetime.datetime(2026, 11, 21, 8, 0), datetime.datetime(2026, 11, 21, 8, 0)),  # quiet hours over
        (datetime.datetime(2026, 11, 21, 20, 59), datetime.datetime(2026, 11, 21, 20, 59)),
    ],
)
def test_participant_messages_wait_for_the_end_of_quiet_hours_in_the_site_zone(site, local_due, expected_local):
    zone = site.zone
    due = local_due.replace(tzinfo=zone).astimezone(datetime.UTC)
    moved = services.outside_quiet_hours(due, zone=zone, start=datetime.time(21, 0), end=datetime.time(8, 0))
    assert moved.astimezone(zone).replace(tzinfo=None) == expected_local


def test_a_site_configured_to_send_at_night_still_reaches_participants_after_quiet_hours(contactable, site, trial):
    trial.definition["reminders"]["send_time"] = "23:30"
    with audit_context(reason="night shift site"):
        trial.save()
    contactable.site.refresh_from_db()
    visit = contactable.visits.get(code="C3")
    with time_machine.travel(PLANNED_ON, tick=False):
        planned = services.planned_reminders(
            visit,
            participant=Participant.objects.select_related("site__trial").get(pk=contactable.pk),
            now=timezone.now(),
        )
    by_audience = {(r.kind, r.audience): r.due_at.astimezone(site.zone) for r in planned}
    staff = by_audience[(Reminder.Kind.WINDOW_OPENS_7_DAYS, Reminder.Audience.SITE_STAFF)]
    participant = by_audience[(Reminder.Kind.WINDOW_OPENS_7_DAYS, Reminder.Audience.PARTICIPANT)]
    assert (staff.hour, staff.minute) == (23, 30)
    assert (participant.hour, participant.minute) == (8, 0)
    assert participant.date() == staff.date() + datetime.timedelta(days=1)


def test_a_rescheduled_visit_gets_new_reminders_and_the_old_ones_are_cancelled(participant, cast):
    c3 = participant.visits.get(code="C3")
    with time_machine.travel(PLANNED_ON, tick=False):
        visit_reschedule(
            visit=c3,
            target_date=c3.target_date + datetime.timedelta(days=5),
            rescheduled_by=cast.coordinator,
            reason="public holiday",
        )
    live = Reminder.objects.filter(visit=c3).exclude(status=Reminder.Status.CANCELLED)
    cancelled = Reminder.objects.filter(visit=c3, status=Reminder.Status.CANCELLED)
    assert cancelled.count() == 3
    assert all("public holiday" in reminder.status_reason for reminder in cancelled)
    seven = live.get(kind=Reminder.Kind.WINDOW_OPENS_7_DAYS)
    c3.refresh_from_db()
    assert seven.due_at.astimezone(SHANGHAI).date() == c3.window_start - datetime.timedelta(days=7)


def due_now(participant, code="C2", kind=Reminder.Kind.WINDOW_OPENS_7_DAYS):
    reminder = Reminder.objects.get(
        participant=participant, visit__code=code, kind=kind, audience=Reminder.Audience.SITE_STAFF
    )
    Reminder.objects.filter(pk=reminder.pk).update(due_at=timezone.now() - datetime.timedelta(minutes=1))
    return reminder


def test_sending_a_reminder_twice_delivers_it_once(participant, cast):
    cast.coordinator.email = "li.na@hospital.example"
    cast.coordinator.save()
    reminder = due_now(participant)
    first = services.reminder_send(reminder_id=reminder.pk)
    second = services.reminder_send(reminder_id=reminder.pk)
    assert (first.outcome, second.outcome) == ("sent", "already handled")
    assert len(mail.outbox) == 1
    reminder.refresh_from_db()
    assert reminder.status == Reminder.Status.SENT
    assert reminder.recipients == "li.na@hospital.example"
    assert reminder.sent_at is not None


def test_the_staff_message_names_numbers_and_study_medication_never_a_drug_or_an_arm(participant, cast, site):
    cast.coordinator.email = "li.na@hospital.example"
    cast.coordinator.save()
    reminder = due_now(participant)
    services.reminder_send(reminder_id=reminder.pk)
    [message] = mail.outbox
    assert message.to == ["li.na@hospital.example"]
    assert participant.randomization_number in message.subject
    assert "study medication" in message.body.lower()
    assert "28 Nov 2026" in message.body and "Asia/Shanghai" in message.body
    text = (message.subject + message.body).lower()
    for word in ("tocilizumab", "aspirin", "placebo", "toc", "active", participant.screening.initials.lower()):
        assert f" {word} " not in f" {text} "


def test_a_participant_reminder_is_in_their_language(contactable):
    Participant.objects.filter(pk=contactable.pk).update(language="zh-hans")
    reminder = Reminder.objects.get(
        participant=contactable,
        visit__code="C2",
        kind=Reminder.Kind.WINDOW_OPENS_1_DAY,
        audience=Reminder.Audience.PARTICIPANT,
    )
    Reminder.objects.filter(pk=reminder.pk).update(due_at=timezone.now())
    services.reminder_send(reminder_id=reminder.pk)
    [message] = mail.outbox
    assert message.to == ["p@example.org"]
    assert "研究" in message.subject + message.body
    start = formats.date_format(reminder.visit.window_start, "Y年n月j日")
    assert start in message.body, "the participant reads the dates as Chinese writes them"
    assert "Tocilizumab" not in message.body


def test_a_missed_visit_alert_goes_to_the_coordinator_and_the_pi(participant, cast):
    for person in (cast.coordinator, cast.investigator, cast.pharmacist):
        person.email = f"{person.username}@hospital.example"
        person.save()
    reminder = due_now(participant, kind=Reminder.Kind.MISSED_VISIT)
    services.reminder_send(reminder_id=reminder.pk)
    [message] = mail.outbox
    assert sorted(message.to) == ["coordinator@hospital.example", "investigator@hospital.example"]
    assert message.subject.startswith("Missed visit")


def test_reminders_of_a_visit_that_happened_or_a_withdrawn_participant_are_cancelled(participant, cast, site):
    c2_reminder = due_now(participant, code="C2")
    c3_reminder = due_now(participant, code="C3")
    with audit_context(actor=cast.coordinator, reason="visit recorded"):
        participant.visits.filter(code="C2").update(actual_date=datetime.date(2026, 11, 30), status="completed")
    assert services.reminder_send(reminder_id=c2_reminder.pk).outcome == "cancelled"
    with audit_context(actor=cast.coordinator, reason="withdrew consent"):
        Withdrawal.objects.create(
            participant=participant,
            site=site,
            withdrawn_on=datetime.date(2026, 12, 1),
            reason="moved away",
            recorded_by=cast.coordinator,
        )
        Participant.objects.filter(pk=participant.pk).update(status=ParticipantStatus.WITHDRAWN)
    services.reminders_cancel_stale()
    c3_reminder.refresh_from_db()
    assert c3_reminder.status == Reminder.Status.CANCELLED
    assert c3_reminder.status_reason == "participant withdrew"
    assert not Reminder.objects.filter(participant=participant, status=Reminder.Status.SCHEDULED).exists()
    assert mail.outbox == []


def test_a_permanent_refusal_marks_the_reminder_failed_with_the_reason(participant):
    reminder = due_now(participant)
    # Nobody at the site has an e-mail address: there is no one to send to.
    assert services.reminder_send(reminder_id=reminder.pk).outcome == "failed"
    reminder.refresh_from_db()
    assert reminder.status == Reminder.Status.FAILED
    assert reminder.status_reason == "no recipient with an e-mail address"


def test_a_claim_held_by_a_dead_worker_is_taken_over_after_the_lease(participant, cast, settings):
    cast.coordinator.email = "li.na@hospital.example"
    cast.coordinator.save()
    reminder = due_now(participant)
    stale = timezone.now() - datetime.timedelta(seconds=settings.REMINDER_CLAIM_LEASE_SECONDS + 1)
    Reminder.objects.filter(pk=reminder.pk).update(status=Reminder.Status.SENDING, claimed_at=stale)
    assert reminder.pk in services.due_reminder_ids(now=timezone.now(), batch_size=10)
    assert services.reminder_send(reminder_id=reminder.pk).outcome == "sent"
    assert len(mail.outbox) == 1

    fresh = due_now(participant, code="C3")
    Reminder.objects.filter(pk=fresh.pk).update(status=Reminder.Status.SENDING, claimed_at=timezone.now())
    assert services.reminder_send(reminder_id=fresh.pk).outcome == "already handled"


def test_finding_due_reminders_takes_the_same_queries_for_5_or_50_participants(cast, site, django_assert_num_queries):
    def count_queries():
        with django_assert_num_queries(1):
            return services.due_reminder_ids(
                now=datetime.datetime(2027, 12, 31, tzinfo=datetime.UTC), batch_size=10_000
            )

    with time_machine.travel(PLANNED_ON, tick=False):
        for _ in range(5):
            dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    few = count_queries()
    with time_machine.travel(PLANNED_ON, tick=False):
        for _ in range(45):
            dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    assert len(count_queries()) == 10 * len(few)


def test_opting_out_cancels_the_participant_messages_but_not_the_staff_ones(contactable, cast, client_for):
    answer = client_for(cast.coordinator).post(
        f"/participants/{contactable.pk}/reminders/opt-out/", {"reason": "asked by phone"}
    )
    assert answer.status_code == 302
    contactable.refresh_from_db()
    assert not contactable.contact_consent
    live = Reminder.objects.filter(participant=contactable).exclude(status=Reminder.Status.CANCELLED)
    assert live.exists()
    assert not live.filter(audience=Reminder.Audience.PARTICIPANT).exists()


def test_the_reminders_page_and_api_show_each_state_and_only_the_users_sites(participant, cast, client_for, api_for):
    due_now(participant)
    page = client_for(cast.coordinator).get("/reminders/")
    assert page.status_code == 200
    assert participant.randomization_number.encode() in page.content
    assert b"Scheduled" in page.content
    assert (
        participant.randomization_number.encode() not in client_for(cast.other_coordinator).get("/reminders/").content
    )
    assert client_for(cast.nobody).get("/reminders/").status_code == 404
    listing = api_for(cast.coordinator).get("/api/v1/reminders/?status=scheduled").json()
    assert listing["count"] == Reminder.objects.filter(participant=participant, status="scheduled").count()
    assert api_for(cast.other_coordinator).get("/api/v1/reminders/").json()["count"] == 0
    assert (
        api_for(cast.other_coordinator).post(f"/api/v1/participants/{participant.pk}/reminders/opt-out/").status_code
        == 404
    )


def test_writing_the_outbox_is_audited(participant):
    from trialsite.models import AuditEvent

    assert AuditEvent.objects.filter(table_name="reminders_reminder", subject_id=participant.pk).exists()
