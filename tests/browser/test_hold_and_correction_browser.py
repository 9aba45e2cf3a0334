"""In a real browser, the coordinator's visit day of issue 16: C1 recorded from the participant
page's primary Record button with a Chinese-style lab report (10^9 per litre), the infusion held and said
so, repeat labs the same day turning it into a dose, then a date of birth corrected after
randomization. A screenshot per step."""

import re

import pytest
from django.utils import timezone

from enrollment.models import Screening
from tests import dosing_factories as df
from tests import factories
from tests.browser_support import SCREENSHOTS, launch_chromium

ARMS = re.compile(r"\b(TOC|ASA|COMBO|PBO|Tocilizumab|Aspirin|Placebo|active)\b", re.IGNORECASE)


@pytest.mark.browser
def test_a_hold_a_repeat_and_a_correction_after_randomization(site, cast, live_server, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    today = timezone.localdate(timezone=site.zone)
    for content in ("active", "placebo"):
        df.make_kit(kit_type="INF", content=content, site=site)
        df.make_kit(kit_type="TAB", content=content, site=site)
    participant = df.randomized_participant(site, arm_code="COMBO", by=cast.coordinator, day0=today)

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("#id_username", "coordinator")
        page.fill("#id_password", factories.PASSWORD)
        page.locator("button[type=submit]", has_text="Log in").click()
        page.wait_for_url(f"{live_server.url}/")

        page.goto(f"{live_server.url}/participants/{participant.pk}/")
        page.locator("#record-next").click()
        page.fill("#id_actual_date", today.isoformat())
        page.fill("#id_weight_kg", "60")
        page.fill("#id_neutrophils", "3.0")
        page.check("#units_neutrophils input[value='1e9_per_l']")
        page.fill("#id_platelets", "90")
        page.check("#units_platelets input[value='1e9_per_l']")
        page.fill("#id_alt_uln", "1")
        page.fill("#id_ast_uln", "1")
        page.locator("button", has_text="Record").click()
        held = page.locator(".messages li.warning").inner_text()
        assert "Infusion held at C1: Platelets 90,000 /mm³: below the limit of 100,000 /mm³." in held
        assert "The daily tablets continue." in held
        page.screenshot(path=str(SCREENSHOTS / "coordinator_c1_held.png"), full_page=True)

        page.fill("#id_measured_on", today.isoformat())
        page.fill("#id_neutrophils", "3.2")
        page.check("#units_neutrophils input[value='1e9_per_l']")
        page.fill("#id_platelets", "150")
        page.check("#units_platelets input[value='1e9_per_l']")
        page.fill("#id_alt_uln", "1")
        page.fill("#id_ast_uln", "1")
        page.locator("#repeat-labs button").click()
        assert "Visit C1 recorded: the infusion is given." in page.locator(".messages").inner_text()
        main = page.locator("main").inner_text()
        assert "Infusion given" in main and "Repeat labs on" in main and not ARMS.search(main)
        page.screenshot(path=str(SCREENSHOTS / "coordinator_c1_repeat_labs_given.png"), full_page=True)

        page.locator("#back-to-participant").click()
        page.locator("main a", has_text="Screening").first.click()
        page.locator("#correction summary").click()
        assert "the participant stays randomized" in page.locator("#randomized-notice").inner_text()
        page.fill("#id_date_of_birth", "1971-06-01")
        page.fill("#id_reason", "typo: the ID card says 1971")
        page.locator("#correction button", has_text="Save changes").click()
        assert "Screening updated." in page.locator(".messages").inner_text()
        page.screenshot(path=str(SCREENSHOTS / "coordinator_corrects_date_of_birth.png"), full_page=True)
        browser.close()

    assert Screening.objects.get(pk=participant.pk).date_of_birth.year == 1971
