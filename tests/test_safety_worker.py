"""The SAE clock through a real Redis broker and a real Celery worker (not eager mode): the PI and
the sponsor are e-mailed when the event is recorded, again at 12 and 20 hours while the report is
unsigned, not after the PI signs, and never twice, even when the worker dies mid-send. The test
process travels in time (time_machine) to run beat's dispatch at 12 and 20 hours; the worker
sends whatever it is handed."""

from __future__ import annotations

import datetime
import email.header

import pytest
import time_machine
from django.utils import timezone

from safety import services
from safety.models import SaeNotice
from safety.tasks import send_sae_notice
from tests import factories
from tests import test_reminders_worker as reminders_worker
from tests.worker import wait_until

# The reminders worker test's private broker, mailbox and worker starter, shared as fixtures.
broker = reminders_worker.broker
mailbox = reminders_worker.mailbox
start_worker = reminders_worker.start_worker
delivered = reminders_worker.delivered
queue_drained = reminders_worker.queue_drained
unacked = reminders_worker.unacked

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def participant(cast, site):
    cast.investigator.email = "pi@hospital.example"
    cast.investigator.save()
    return factories.make_participant(site, by=cast.coordinator)


def record_sae(participant, cast, aware):
    return services.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=services.AeDetails(
            term="gi_haemorrhage",
            grade=3,
            onset_date=timezone.localdate(timezone=participant.site.zone),
            serious=True,
            seriousness=("hospitalisation",),
            awareness_at=aware,
        ),
    )


def readable(message) -> str:
    """Subject and body as a reader sees them: a Chinese subject is encoded in the header and a
    Chinese body may be in quoted-printable or base64, where no word would be found."""
    subject = str(email.header.make_header(email.header.decode_header(message["Subject"])))
    body = message.get_payload(decode=True).decode(message.get_content_charset() or "utf-8")
    return subject + "\n" + body


def wait_sent(event, kinds, *, timeout=45):
    return wait_until(
        lambda: SaeNotice.objects.filter(adverse_event=event, kind__in=kinds, status="sent").count() == len(kinds),
        timeout=timeout,
        message=f"notices {kinds} to be sent",
    )


def dispatch_at(moment: datetime.datetime) -> int:
    # Only the dispatch runs at the travelled time; waiting for the worker runs on the real clock.
    with time_machine.travel(moment, tick=False):
        return services.sae_notices_dispatch()


def test_notices_go_at_0_12_and_20_hours_while_the_report_is_unsigned(
    participant,
    cast,
    trial,
    start_worker,
    mailbox,
):
    start_worker()
    aware = timezone.now()
    event = record_sae(participant, cast, aware)
    # Handed to the worker when the event committed: no beat run needed for the first notice.
    wait_sent(event, ["initial"])
    assert len(delivered(mailbox)) == 1
    assert dispatch_at(aware + datetime.timedelta(hours=11, minutes=59)) == 0
    assert dispatch_at(aware + datetime.timedelta(hours=12, minutes=1)) == 1
    wait_sent(event, ["initial", "12h"])
    assert dispatch_at(aware + datetime.timedelta(hours=20, minutes=1)) == 1
    wait_sent(event, ["initial", "12h", "20h"])
    assert dispatch_at(aware + datetime.timedelta(hours=30)) == 0
    wait_until(queue_drained, message="the queue to drain")
    messages = delivered(mailbox)
    assert len(messages) == 3
    for message in messages:
        assert sorted(address.strip() for address in message["To"].split(",")) == sorted(
            ["pi@hospital.example", trial.sponsor_contact_email]
        )
        text = readable(message)
        # Both languages, so both the sponsor and the Chinese site read it; no arm in either.
        assert "Serious adverse event" in text or "SAE" in text
        assert "严重不良事件" in text and "消化道出血" in text
        for arm in trial.protocol.arms:
            assert arm.name not in text and (not arm.name_zh or arm.name_zh not in text)


def test_no_escalation_after_the_pi_signs(participant, cast, start_worker, mailbox):
    start_worker()
    aware = timezone.now()
    event = record_sae(participant, cast, aware)
    wait_sent(event, ["initial"])
    report = services.sae_report_write(event=event, written_by=cast.coordinator, narrative="Melaena.", complete=True)
    services.sae_report_sign(report=report, signer=cast.investigator, password=factories.PASSWORD)
    assert dispatch_at(aware + datetime.timedelta(hours=12, minutes=1)) == 0
    assert dispatch_at(aware + datetime.timedelta(hours=20, minutes=1)) == 0
    # Even a notice handed over by hand is not sent: the report is signed.
    for notice in SaeNotice.objects.filter(adverse_event=event).exclude(kind="initial"):
        send_sae_notice.delay(notice.pk)
    wait_until(queue_drained, message="the queue to drain")
    assert len(delivered(mailbox)) == 1
    assert set(SaeNotice.objects.filter(adverse_event=event).values_list("status", flat=True)) == {"sent", "cancelled"}


def test_a_worker_killed_mid_send_leaves_the_notice_to_be_sent_once(
    participant,
    cast,
    start_worker,
    mailbox,
    tmp_path,
):
    gate = tmp_path / "mail-gate"
    gate.touch()
    first = start_worker(MAIL_GATE=str(gate))
    event = record_sae(participant, cast, timezone.now())
    initial = SaeNotice.objects.get(adverse_event=event, kind="initial")
    wait_until(lambda: gate.with_suffix(".waiting").exists(), message="the worker to be in the middle of sending")
    assert SaeNotice.objects.get(pk=initial.pk).status == "sending"
    first.kill()
    orphans = unacked()
    gate.unlink()
    assert delivered(mailbox) == []

    start_worker()
    # After the claim's lease, beat hands the orphaned notice over again.
    wait_until(
        lambda: services.sae_notices_dispatch() >= 1 or SaeNotice.objects.get(pk=initial.pk).status == "sent",
        timeout=15,
        message="the orphaned claim to expire",
    )
    wait_sent(event, ["initial"])
    services.sae_notices_dispatch()
    send_sae_notice.delay(initial.pk)
    wait_until(lambda: queue_drained(orphans), message="the queue to drain")
    assert len(delivered(mailbox)) == 1
    assert SaeNotice.objects.get(pk=initial.pk).attempts == 2
