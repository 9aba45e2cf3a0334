"""Faults survived (issue 14, part 3), in the test suite: a Celery worker killed in the middle of
building an export, and an export queued while the broker was down. (The randomization load
against gunicorn with PostgreSQL restarted, a gunicorn worker killed and Redis stopped is
`make drill`, bench/fault_drill.py; a worker killed mid-reminder is in test_reminders_worker.py.)"""

from __future__ import annotations

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command

from reports import services
from reports.models import Export, ExportStatus
from tests import dbsetup, reports_data
from tests.worker import CeleryWorker, close_test_connection, wait_until
from trialsite import audit
from trialsite.models import AuditEvent

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def start_worker(media, tmp_path):
    workers = []

    def start(broker_url: str = settings.CELERY_BROKER_URL, **extra_env) -> CeleryWorker:
        worker = CeleryWorker(
            broker_url=broker_url,
            log_path=tmp_path / f"worker-{len(workers)}.log",
            extra_env={"MEDIA_ROOT": str(media), **extra_env},
        )
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
    close_test_connection()


def status_of(export_id: int) -> str:
    return Export.objects.values_list("status", flat=True).get(pk=export_id)


def test_an_export_whose_worker_is_killed_mid_build_is_taken_over_and_finished_once(
    trial, site, other_site, cast, start_worker, settings
):
    if dbsetup.plan.superuser is None:
        pytest.skip("holding a table lock behind the worker's back needs a superuser DATABASE_URL")
    reports_data.build(trial, site, other_site, cast)
    first = start_worker()
    # The export blocks on the participants table once it has claimed the row: the worker is
    # then killed in the middle of building the file.
    with psycopg.connect(**{**dbsetup.plan.superuser, "autocommit": False}) as blocker:
        blocker.execute("LOCK TABLE enrollment_participant IN ACCESS EXCLUSIVE MODE")
        try:
            export = services.export_request(user=cast.investigator, kind="dataset", format="odm")
            wait_until(
                lambda: status_of(export.pk) == ExportStatus.RUNNING, timeout=60, message="the worker to claim it"
            )
            first.kill()
        finally:
            blocker.rollback()

    # Within the lease nothing takes it over: a slow export is not run twice.
    assert services.exports_requeue() == []
    settings.EXPORT_CLAIM_LEASE_SECONDS = 0
    start_worker(EXPORT_CLAIM_LEASE_SECONDS="0")
    assert services.exports_requeue() == [export.pk]
    wait_until(lambda: status_of(export.pk) == ExportStatus.DONE, timeout=90, message="the export to finish")

    export.refresh_from_db()
    assert export.row_count and (settings.MEDIA_ROOT / export.file_path).is_file()
    finished = AuditEvent.objects.filter(
        table_name="reports_export", record_pk=str(export.pk), new_values__status="done", action="UPDATE"
    )
    assert finished.count() == 1
    assert len(list((settings.MEDIA_ROOT / "exports").glob("*.part"))) <= 1  # the dead run's partial file only
    audit.chain_extend()
    call_command("audit_verify")


def test_an_export_whose_message_was_lost_is_handed_over_again(trial, site, other_site, cast, start_worker, settings):
    """The broker was down when the export was requested, so its message never reached a worker
    (the row is written first, the message sent after commit): beat hands it over again."""
    reports_data.build(trial, site, other_site, cast)
    with audit.audit_context(actor=cast.investigator, reason="export requested"):
        export = Export.objects.create(
            requested_by=cast.investigator, kind="dataset", format="odm", site_ids=[site.pk], blinded=True
        )
    assert services.exports_requeue() == []  # not yet overdue
    start_worker()
    settings.EXPORT_REQUEUE_SECONDS = 0
    assert services.exports_requeue() == [export.pk]
    wait_until(lambda: status_of(export.pk) == ExportStatus.DONE, timeout=90, message="the export to finish")
