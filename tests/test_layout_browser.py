"""The PI's home page and the reports, in a real browser on a 1280 px desktop and a 768 px
tablet, in both languages: nothing wider than the window (tables scroll inside their own box),
and on the desktop the header keeps the menu on one line."""

import pytest

from tests import dosing_factories as df
from tests import factories
from tests.browser_support import SCREENSHOTS, launch_chromium

OVERFLOW = "document.documentElement.scrollWidth - window.innerWidth"


@pytest.mark.browser
def test_the_pi_reads_home_and_reports_at_1280_and_768_without_sideways_scrolling(
    site, other_site, cast, live_server, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    # The PI of two sites (the reports' enrollment table then has a row per site) with people in it.
    from trialsite.audit import audit_context
    from trialsite.models import Role, StaffRole

    with audit_context(reason="test: a PI of two sites"):
        StaffRole.objects.create(user=cast.investigator, site=other_site, role=Role.INVESTIGATOR)
    for _ in range(2):
        df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, schedule=False)
    factories.make_screening(site, by=cast.coordinator, eligible=False)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        for language in ("en", "zh-hans"):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_cookies([{"name": "django_language", "value": language, "url": live_server.url}])
            page = context.new_page()
            page.goto(f"{live_server.url}/accounts/login/")
            login_card = page.locator(".login-card").bounding_box()
            assert login_card["width"] < 500, login_card
            page.fill("#id_username", "investigator")
            page.fill("#id_password", factories.PASSWORD)
            page.locator(".login-card button[type=submit]").click()
            page.wait_for_url(f"{live_server.url}/")
            for width in (1280, 768):
                page.set_viewport_size({"width": width, "height": 900})
                for path, name in (("/", "home"), ("/reports/", "reports")):
                    page.goto(f"{live_server.url}{path}")
                    page.screenshot(path=str(SCREENSHOTS / f"pi_{name}_{width}_{language}.png"), full_page=True)
                    assert page.evaluate(OVERFLOW) <= 0, (language, width, path)
                    if width == 1280:
                        # The menu is one line: every entry at the height of the first.
                        tops = page.eval_on_selector_all(
                            "nav.main a", "links => links.map(link => Math.round(link.getBoundingClientRect().top))"
                        )
                        assert len(set(tops)) == 1, (language, path, tops)
            context.close()
        browser.close()


@pytest.mark.browser
def test_every_roles_pages_fit_a_768_px_tablet_and_the_monitors_header_fits_1280(site, cast, live_server, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    from dosing.models import KitStatus

    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    failure = factories.make_screening(site, by=cast.coordinator, eligible=False)
    for content in ("active", "placebo"):
        df.make_kit(site=site, content=content)
        df.make_kit(site=site, content=content, status=KitStatus.QUARANTINED)
    visit = participant.visits.order_by("window_start").first()
    pages = {
        "coordinator": [
            "/",
            "/screening/new/",
            "/screening/",
            f"/screening/{failure.pk}/",
            f"/screening/{participant.pk}/",
            "/participants/",
            f"/participants/{participant.pk}/",
            f"/visits/{visit.pk}/record/",
            "/reminders/",
        ],
        "pharmacist": ["/pharmacy/", "/pharmacy/accountability/"],
        "supply_manager": ["/supply/"],
        "monitor": ["/audit/", "/reports/", f"/participants/{participant.pk}/"],
        "investigator": ["/participants/awaiting-signature/", "/accounts/two-factor/", "/accounts/tokens/"],
    }
    overflowing = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        for language in ("en", "zh-hans"):
            for username, paths in pages.items():
                context = browser.new_context(viewport={"width": 768, "height": 1000})
                context.add_cookies([{"name": "django_language", "value": language, "url": live_server.url}])
                page = context.new_page()
                page.goto(f"{live_server.url}/accounts/login/")
                page.fill("#id_username", username)
                page.fill("#id_password", factories.PASSWORD)
                page.locator(".login-card button[type=submit]").click()
                page.wait_for_url(f"{live_server.url}/")
                for path in paths:
                    page.goto(f"{live_server.url}{path}")
                    if page.evaluate(OVERFLOW) > 0:
                        name = path.strip("/").replace("/", "_") or "home"
                        page.screenshot(
                            path=str(SCREENSHOTS / f"overflow_{username}_{name}_{language}.png"), full_page=True
                        )
                        overflowing.append((language, username, path, page.evaluate(OVERFLOW)))
                if username == "monitor":
                    page.set_viewport_size({"width": 1280, "height": 900})
                    page.goto(f"{live_server.url}/audit/")
                    tops = page.eval_on_selector_all(
                        "nav.main a", "links => links.map(link => Math.round(link.getBoundingClientRect().top))"
                    )
                    assert len(set(tops)) == 1, (language, tops)
                context.close()
        browser.close()
    assert overflowing == []
