"""The pharmacist, in a real browser, dispenses the kits assigned at today's visit by typing
the number read off each label; a wrong number is refused and nothing on the page names a
content."""

import re
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from dosing import services
from dosing.models import Kit, KitStatus
from tests import dosing_factories as df
from tests.browser_support import SCREENSHOTS, launch_chromium


@pytest.mark.browser
def test_the_pharmacist_dispenses_by_the_label_number_and_a_mismatch_is_refused(
    site, cast, live_server, request, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    today = timezone.localdate(timezone=site.zone)
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=today)
    infusion = df.make_kit(kit_type="INF", content="active", site=site, number="K4F7-3019")
    tablets = df.make_kit(kit_type="TAB", content="placebo", site=site, number="K9B2-5521")
    # The other contents too: a site that cannot serve every content assigns nothing.
    df.make_kit(kit_type="INF", content="placebo", site=site, number="K2C8-7140")
    df.make_kit(kit_type="TAB", content="active", site=site, number="K6D1-4492")
    services.visit_record(
        visit=participant.visits.get(code="C1"),
        actual_date=today,
        recorded_by=cast.coordinator,
        weight_kg=Decimal("72.5"),
        neutrophils=2500,
        platelets=180000,
        alt_uln=Decimal("0.8"),
        ast_uln=Decimal("0.9"),
    )
    client = Client()
    client.force_login(cast.pharmacist)

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context()
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
        page.goto(f"{live_server.url}/pharmacy/")
        body = page.locator("main").inner_text()
        assert "K4F7-3019" in body and "K9B2-5521" in body
        assert "290" in body and "14.5 mL" in body  # 72.5 kg x 4 mg/kg, at 20 mg/mL
        assert not re.search(r"\b(active|placebo|tocilizumab|aspirin)\b", body, re.IGNORECASE)

        page.fill(f"#label-{infusion.pk}", "K9B2-5521")
        page.locator(f"form[action$='/pharmacy/kits/{infusion.pk}/dispense/'] button").click()
        # Refused at the field, with what was typed still there to correct.
        assert "does not match" in page.locator(f"#label-{infusion.pk}-error").inner_text()
        assert page.input_value(f"#label-{infusion.pk}") == "K9B2-5521"

        page.fill(f"#label-{infusion.pk}", "K4F7-3019")
        page.locator(f"form[action$='/pharmacy/kits/{infusion.pk}/dispense/'] button").click()
        assert "K4F7-3019 dispensed" in page.locator(".messages").inner_text()
        page.fill(f"#label-{tablets.pk}", "k9b2-5521")
        page.locator(f"form[action$='/pharmacy/kits/{tablets.pk}/dispense/'] button").click()
        assert "Nothing to dispense." in page.locator("main").inner_text()

        page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
        browser.close()

    assert {Kit.objects.get(pk=kit.pk).status for kit in (infusion, tablets)} == {KitStatus.DISPENSED}
