"""In a real browser: a coordinator opens the C1 vital signs from the participant page, meets an
error at the item, saves, corrects a saved value with a reason, and adds a concomitant medicine
that warns (an anticoagulant: exclusion EX3)."""

import pytest

from crf.models import FormRecord
from tests import dosing_factories, factories
from tests.browser_support import SCREENSHOTS, launch_chromium
from trialsite.models import AuditEvent


def log_in(page, live_server, username):
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", factories.PASSWORD)
    page.locator("button[type=submit]", has_text="Log in").click()
    page.wait_for_url(f"{live_server.url}/")


@pytest.mark.browser
def test_a_coordinator_enters_vital_signs_corrects_one_and_logs_an_anticoagulant(
    trial, site, cast, live_server, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    participant = dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        log_in(page, live_server, "coordinator")
        page.goto(f"{live_server.url}/participants/{participant.pk}/")
        page.locator("#forms a[href$='/forms/vitals/C1/']").click()
        for code, value in (("weight", "62.5"), ("systolic", "128"), ("diastolic", "135"), ("pulse", "76")):
            page.fill(f"#id_{code}", value)
        page.fill("#id_temperature", "36.6")
        page.locator("button", has_text="Save").click()
        assert page.locator("#errors-diastolic").inner_text() == "The diastolic pressure must be below the systolic."
        page.fill("#id_diastolic", "82")
        page.locator("button", has_text="Save").click()
        assert "Form saved." in page.locator(".messages").inner_text()
        assert page.locator("#form-status").inner_text() == "complete"

        page.fill("#id_weight", "63")
        page.locator("button", has_text="Save").click()
        assert "A reason is required" in page.locator("#errors-reason").inner_text()
        page.fill("#id_weight", "63")
        page.fill("#id_reason", "Scale re-read")
        page.locator("button", has_text="Save").click()
        assert "Form saved." in page.locator(".messages").inner_text()

        page.goto(f"{live_server.url}/participants/{participant.pk}/")
        page.locator("#forms a", has_text="Add an entry").click()
        page.fill("#id_drug_name", "Warfarin")
        page.fill("#id_indication", "Atrial fibrillation")
        page.select_option("#id_drug_class", "anticoagulant")
        page.fill("#id_start_date", "2026-10-01")
        page.select_option("#id_ongoing", "yes")
        page.locator("button", has_text="Save").click()
        assert "exclusion criterion EX3" in page.locator(".messages").inner_text()
        assert "exclusion criterion EX3" in page.locator("#form-warnings").inner_text()
        page.screenshot(path=str(SCREENSHOTS / "crf.png"))
        browser.close()
    assert FormRecord.objects.filter(participant=participant).count() == 2
    change = AuditEvent.objects.get(table_name="crf_itemvalue", action="UPDATE")
    assert (change.new_values["item_code"], change.new_values["value"], change.reason) == (
        "weight",
        "63",
        "Scale re-read",
    )
