"""The monitor, in a real browser, logs in through the login page and reads one participant's
history: who changed what, from what to what, and why, in the site's time zone."""

import datetime

import pytest

from enrollment.models import Screening
from tests import factories
from tests.browser_support import SCREENSHOTS, launch_chromium
from trialsite.audit import audit_context


@pytest.mark.browser
def test_the_monitor_logs_in_and_reads_who_changed_a_date_of_birth_and_why(site, cast, live_server, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    screening = factories.make_screening(site, by=cast.coordinator, record_number="NT-88412")
    with audit_context(actor=cast.coordinator, reason="typo on the paper CRF"):
        Screening.objects.filter(pk=screening.pk).update(date_of_birth=datetime.date(1968, 3, 14))

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("#id_username", "monitor")
        page.fill("#id_password", factories.PASSWORD)
        page.locator("button[type=submit]", has_text="Log in").click()
        page.wait_for_url(f"{live_server.url}/")
        page.locator("nav.main a", has_text="Audit trail").click()
        page.fill("#id_subject", str(screening.pk))
        page.select_option("#id_table", "enrollment_screening")
        page.locator("button", has_text="Show history").click()

        table = page.locator("table").inner_text()
        assert "coordinator" in table
        assert "1970-06-01 → 1968-03-14" in table.replace("\u2192", "→")
        assert "typo on the paper CRF" in table
        assert "Asia/Shanghai" in page.locator("main").inner_text()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "monitor_reads_audit_history.png"), full_page=True)
        browser.close()
