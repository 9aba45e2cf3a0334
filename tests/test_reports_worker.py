"""A background export through a real Celery worker process reading the test database."""

from __future__ import annotations

import os
from pathlib import Path
from xml.etree import ElementTree

import pytest
from django.conf import settings

from reports.models import Export, ExportStatus
from tests import reports_data
from tests.test_reports_exports import ODM, odm_counts, odm_reference_problems
from tests.worker import CeleryWorker, close_test_connection, wait_until
from trialsite.models import AuditEvent


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def celery_worker(transactional_db, media, tmp_path):
    """A worker on this test's own Redis database (REDIS_URL), writing files where the test reads them."""
    worker = CeleryWorker(
        broker_url=settings.CELERY_BROKER_URL,
        log_path=tmp_path / "worker.log",
        extra_env={"MEDIA_ROOT": str(media)},
    )
    worker.start()
    yield worker
    worker.stop()
    close_test_connection()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_dataset_export_runs_in_a_worker_and_is_downloaded_when_ready(
    trial, site, other_site, cast, celery_worker, api_for, client_for
):
    reports_data.build(trial, site, other_site, cast)
    api = api_for(cast.investigator)
    answer = api.post("/api/v1/exports/", {"kind": "dataset", "format": "odm"}, format="json")
    assert answer.status_code == 202, answer.content
    export_id = answer.json()["id"]

    def finished():
        export = Export.objects.get(pk=export_id)
        return export if export.status in (ExportStatus.DONE, ExportStatus.FAILED) else None

    export = wait_until(finished, timeout=60, message="the export to finish")
    assert export.status == ExportStatus.DONE, (Path(celery_worker.log_path).read_text())[-3000:]
    assert export.progress == 100 and export.row_count == 14
    assert export.started_at <= export.finished_at

    detail = api.get(f"/api/v1/exports/{export_id}/").json()
    assert detail["download_url"]
    download = client_for(cast.investigator).get(detail["download_url"])
    assert download.status_code == 200
    root = ElementTree.fromstring(b"".join(download.streaming_content))
    assert odm_reference_problems(root) == []
    assert odm_counts(root)["Randomized"] == 8
    assert not any(item.get("ItemOID") == "IT.ARM" for item in root.iter(f"{ODM}ItemData"))
    # The worker ran as the requester, in the audit trail.
    assert AuditEvent.objects.filter(
        table_name="reports_export", record_pk=str(export_id), actor=cast.investigator, new_values__status="running"
    ).exists()
    assert os.path.isfile(Path(settings.MEDIA_ROOT) / export.file_path)
