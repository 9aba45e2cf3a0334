"""A background export through a real Celery worker process reading the test database."""

from __future__ import annotations

import os
from pathlib import Path
from xml.etree import ElementTree

import pytest
from django.conf import settings

from reports.models import Export, ExportStatus
from tests import reports_data
from tests.browser_support import SCREENSHOTS, launch_chromium
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


@pytest.mark.worker
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_pi_watches_a_background_export_finish_and_downloads_it(
    trial, site, other_site, cast, celery_worker, live_server, request, monkeypatch
):
    # Playwright's sync API runs an event loop; only for this test (check --deploy refuses it).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from django.test import Client
    from playwright.sync_api import sync_playwright

    reports_data.build(trial, site, other_site, cast)
    client = Client()
    client.force_login(cast.investigator)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(accept_downloads=True)
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                    "url": live_server.url,
                }
            ]
        )
        page = context.new_page()
        errors = []
        # Every request the page makes succeeds (the browser's own favicon probe aside).
        page.on(
            "response",
            lambda response: errors.append(f"{response.status} {response.url}")
            if response.status >= 400 and not response.url.endswith("/favicon.ico")
            else None,
        )
        page.goto(f"{live_server.url}/reports/")
        assert page.locator("svg.consort").count() == 1
        page.locator("form:has(input[name=kind][value=dataset]):has(input[name=format][value=odm]) button").click()
        # The page polls the export's status and shows the link when the worker is done.
        link = page.wait_for_selector("tr[data-export-status=done] .export-link a", timeout=60_000)
        assert page.locator("tr[data-export-status=done] progress").get_attribute("value") in ("100", "100.0")
        with page.expect_download() as download_info:
            link.click()
        content = Path(download_info.value.path()).read_text(encoding="utf-8")
        assert "<ODM" in content and "IT.ARM" not in content
        page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
        assert errors == []
        browser.close()
