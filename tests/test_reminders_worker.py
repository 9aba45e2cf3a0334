"""Reminders through a real Redis broker and real Celery worker processes (not eager mode):
delivered once, even when handed over twice, when the worker is killed mid-send, and when Redis
is down while visits are scheduled."""

from __future__ import annotations

import datetime
import email
from pathlib import Path

import kombu.pools
import pytest
from django.utils import timezone

from dosing.reminders import services
from dosing.reminders.models import Reminder
from dosing.reminders.tasks import send_reminder
from tests import dosing_factories
from tests.worker import CeleryWorker, RedisServer, close_test_connection, wait_until
from trialsite.celery import app as celery_app

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def far_day0() -> datetime.date:
    """Day 0 two months ahead, so no reminder of the plan is due until a test makes it so."""
    return timezone.localdate() + datetime.timedelta(days=60)


def point_celery_at(url: str) -> None:
    """Make this process publish to `url` (the private broker of the test)."""
    celery_app.conf.broker_write_url = url
    # The app's pool is kombu's process-wide pool for that broker URL: closing it in place would
    # leave a closed pool in kombu's registry for the next test that publishes to the same URL
    # ("Acquire on closed pool"). Reset the registry, so the next publish opens a fresh one.
    kombu.pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def broker(tmp_path, settings):
    server = RedisServer(tmp_path)
    server.start()
    original = celery_app.conf.broker_write_url
    point_celery_at(server.url)
    yield server
    point_celery_at(original)
    server.stop()


@pytest.fixture
def mailbox(tmp_path):
    folder = tmp_path / "mail"
    folder.mkdir()
    return folder


@pytest.fixture
def start_worker(broker, mailbox, tmp_path, settings):
    settings.REMINDER_CLAIM_LEASE_SECONDS = 1
    workers = []

    def start(**extra_env: str) -> CeleryWorker:
        worker = CeleryWorker(
            broker_url=broker.url,
            log_path=tmp_path / f"worker-{len(workers)}.log",
            extra_env={
                "EMAIL_BACKEND": "tests.mail_backends.GatedFileBackend",
                "EMAIL_FILE_PATH": str(mailbox),
                "REMINDER_CLAIM_LEASE_SECONDS": "1",
                **extra_env,
            },
        )
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
    close_test_connection()


def unacked() -> int:
    return celery_app.connection_for_write().default_channel.client.hlen("unacked")


def queue_drained(orphans: int = 0) -> bool:
    """Nothing waiting and nothing being worked on (acks_late keeps a running task unacked),
    apart from `orphans`: messages of a killed worker, which Redis holds until they time out."""
    client = celery_app.connection_for_write().default_channel.client
    return client.llen("celery") == 0 and client.hlen("unacked") <= orphans


def delivered(mailbox: Path) -> list[email.message.Message]:
    return [email.message_from_bytes(path.read_bytes()) for path in sorted(mailbox.glob("*.log"))]


@pytest.fixture
def due_reminders(cast, site):
    """Two participants whose coordinator reminders are due now."""
    cast.coordinator.email = "li.na@hospital.example"
    cast.coordinator.save()
    participants = [
        dosing_factories.randomized_participant(site, arm_code=arm, by=cast.coordinator, day0=far_day0())
        for arm in ("TOC", "PBO")
    ]
    due = Reminder.objects.filter(
        participant__in=participants, visit__code="C2", kind=Reminder.Kind.WINDOW_OPENS_7_DAYS
    )
    due.update(due_at=timezone.now() - datetime.timedelta(minutes=1))
    return list(due.order_by("id"))


def wait_for_states(reminders, state, *, timeout=45):
    ids = [reminder.pk for reminder in reminders]
    return wait_until(
        lambda: Reminder.objects.filter(pk__in=ids, status=state).count() == len(ids),
        timeout=timeout,
        message=f"reminders {ids} to be {state}",
    )


def test_a_reminder_handed_over_twice_and_by_beat_again_is_delivered_once(due_reminders, start_worker, mailbox):
    start_worker()
    assert services.reminders_dispatch() == 2
    # The same reminders again: a duplicate message, and a re-run of beat.
    for reminder in due_reminders:
        send_reminder.delay(reminder.pk)
    services.reminders_dispatch()
    wait_for_states(due_reminders, Reminder.Status.SENT)
    # Let the duplicate messages be consumed too before counting what went out.
    wait_until(queue_drained, message="the queue to drain")
    messages = delivered(mailbox)
    subjects = sorted(message["Subject"] for message in messages)
    assert len(messages) == 2, subjects
    assert subjects == sorted({message["Subject"] for message in messages})
    assert all(message["To"] == "li.na@hospital.example" for message in messages)


def test_a_worker_killed_mid_send_leaves_the_reminder_to_be_delivered_once(
    due_reminders, start_worker, mailbox, tmp_path
):
    gate = tmp_path / "mail-gate"
    gate.touch()
    first = start_worker(MAIL_GATE=str(gate))
    reminder, other = due_reminders
    Reminder.objects.filter(pk=other.pk).update(due_at=timezone.now() + datetime.timedelta(days=1))
    send_reminder.delay(reminder.pk)
    wait_until(lambda: gate.with_suffix(".waiting").exists(), message="the worker to be in the middle of sending")
    assert Reminder.objects.get(pk=reminder.pk).status == Reminder.Status.SENDING
    first.kill()
    orphans = unacked()
    gate.unlink()
    assert delivered(mailbox) == []

    start_worker()
    # After the claim's lease, beat hands the orphaned reminder over again.
    wait_until(
        lambda: services.reminders_dispatch(now=timezone.now()) >= 1
        or Reminder.objects.get(pk=reminder.pk).status == "sent",
        timeout=15,
        message="the orphaned claim to expire",
    )
    wait_for_states([reminder], Reminder.Status.SENT)
    services.reminders_dispatch()
    send_reminder.delay(reminder.pk)
    wait_until(lambda: queue_drained(orphans), message="the queue to drain")
    assert len(delivered(mailbox)) == 1
    assert Reminder.objects.get(pk=reminder.pk).attempts == 2


def test_visits_scheduled_while_redis_is_down_get_their_reminders_once_it_is_back(
    cast, site, broker, start_worker, mailbox
):
    cast.coordinator.email = "li.na@hospital.example"
    cast.coordinator.save()
    broker.stop()
    participant = dosing_factories.randomized_participant(site, arm_code="COMBO", by=cast.coordinator, day0=far_day0())
    # The outbox rows were written with the schedule although the broker is down.
    due = Reminder.objects.filter(participant=participant, visit__code__in=["C2", "C3"], audience="site_staff")
    assert due.count() == 6
    due.update(due_at=timezone.now() - datetime.timedelta(minutes=1))
    assert services.reminders_dispatch() == 0
    assert due.filter(status=Reminder.Status.SCHEDULED, enqueued_at__isnull=True).count() == 6

    broker.start()
    start_worker()
    assert services.reminders_dispatch() == 6
    wait_for_states(list(due), Reminder.Status.SENT)
    assert len(delivered(mailbox)) == 6
