"""Each role's day of issue 16, in a real browser, in English and in Chinese, starting from the
role's home page on the demo site (`load_demo`): a screenshot per step in
var/screenshots/<journey>/<language>/NN-step.png, and after every page an accessibility check
(axe-core through Playwright) that must find nothing serious or critical. Selectors are ids,
addresses and form actions, never words, so one walk serves both languages."""

from __future__ import annotations

import datetime
import os
import re

import pytest
from django.core.management import call_command
from django.utils import timezone

from tests import factories
from tests.browser_support import SCREENSHOTS, launch_chromium
from trialsite.management.commands.load_demo import DEMO_PASSWORD

LANGUAGES = ("en", "zh-hans")
# The arms by code and by name, in English and in Chinese (the protocol file's name_zh).
ARMS = re.compile(r"\b(TOC|ASA|COMBO|PBO|Tocilizumab|Aspirin|Placebo)\b|托珠单抗|阿司匹林|安慰剂", re.IGNORECASE)
# What a walk stops on; "moderate" and "minor" findings are left to the designers.
BLOCKING_IMPACTS = {"serious", "critical"}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # The module's browser outlives each test's monkeypatch; Playwright's loop in this thread
    # would otherwise make Django refuse the ORM calls of the test's own setup.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    chromium = launch_chromium(playwright)
    yield chromium
    chromium.close()
    playwright.stop()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def axe():
    from axe_playwright_python.sync_playwright import Axe

    return Axe()


@pytest.fixture
def demo(settings, trial, site):
    """The demo a fresh `make run` loads: a locked list, kits at the site, four patients at
    different stages (NT-0001 randomized with C1 done, one waiting for the PI's signature)."""
    settings.DEBUG = True
    call_command("load_demo", stdout=open(os.devnull, "w"))
    settings.DEBUG = False
    return site


class Walk:
    """One role's day in one language: log in, then `step` after each page."""

    def __init__(self, browser, axe, live_server, journey: str, language: str):
        self.base = live_server.url
        self.axe = axe
        self.language = language
        self.folder = SCREENSHOTS / journey / language
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()
        self.steps = 0
        self.violations: list[str] = []
        # The browser speaks the language too: date inputs then read as a Chinese browser shows them.
        browser_locale = "zh-CN" if language == "zh-hans" else "en-US"
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=browser_locale)
        self.context.add_cookies([{"name": "django_language", "value": language, "url": self.base}])
        self.page = self.context.new_page()

    def log_in(self, username: str, password: str = DEMO_PASSWORD) -> None:
        page = self.page
        page.goto(f"{self.base}/accounts/login/")
        self.step("login")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        self.submit(page.locator(".login-card button[type=submit]"))
        page.wait_for_url(f"{self.base}/")
        self.step("home")

    def nav(self, path: str) -> None:
        self.page.locator(f"nav.main a[href='{path}']").click()
        self.page.wait_for_url(f"{self.base}{path}")

    def step(self, name: str) -> None:
        page = self.page
        page.wait_for_load_state("load")
        main = page.locator("main").inner_text() if page.locator("main").count() else page.content()
        assert "Server Error" not in main, (self.language, name)
        lang = page.evaluate("document.documentElement.lang")
        assert lang == self.language, (name, lang)
        self.steps += 1
        page.screenshot(path=str(self.folder / f"{self.steps:02d}-{name}.png"), full_page=True)
        results = self.axe.run(page)
        for violation in results.response["violations"]:
            if violation["impact"] in BLOCKING_IMPACTS:
                targets = [node["target"] for node in violation["nodes"]][:3]
                self.violations.append(f"{name} {page.url}: {violation['id']} ({violation['impact']}) {targets}")

    def submit(self, button) -> None:
        """Click and wait for the answer's page, so that what follows reads the new page."""
        with self.page.expect_navigation():
            button.click()

    def done(self) -> None:
        self.context.close()
        assert self.violations == []


def _today(site) -> str:
    return timezone.localdate(timezone=site.zone).isoformat()


@pytest.mark.browser
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_coordinators_day(demo, browser, axe, live_server, language):
    from enrollment.models import Participant, Screening

    site = demo
    today = _today(site)
    walk = Walk(browser, axe, live_server, "coordinator", language)
    page = walk.page
    walk.log_in("coordinator")

    walk.nav("/screening/new/")
    walk.step("screening-form")
    page.fill("#id_initials", "LM")
    page.fill("#id_date_of_birth", "1970-06-01")
    page.select_option("#id_sex", "F")
    page.fill("#id_hospital_record_number", f"WALK-{language}")
    page.fill("#id_screening_date", today)
    page.fill("#id_consent_version", "2.1")
    page.fill("#id_consent_date", today)
    for code, answer in (("IN1", "yes"), ("IN2", "yes"), ("EX1", "no"), ("EX2", "no"), ("EX3", "no")):
        page.check(f"input[name=answer_{code}][value={answer}]")
    walk.submit(page.locator("main form button[type=submit]"))
    page.wait_for_url(re.compile(r"/screening/\d+/$"))
    walk.step("eligible")
    screening = Screening.objects.get(hospital_record_number=f"WALK-{language}".upper())
    participant = Participant.objects.get(screening=screening)

    # The PI signs in the meantime (the PI's own walk signs through the page).
    factories.sign_eligibility(participant)
    walk.nav("/participants/")
    walk.step("participants")
    walk.submit(page.locator(f"main a[href='/participants/{participant.pk}/']").first)
    walk.step("participant-signed")
    walk.submit(page.locator("#randomize"))
    walk.step("randomize-confirm")
    assert not ARMS.search(page.locator("#randomization-basis").inner_text())
    walk.submit(page.locator("main form button[type=submit]"))
    page.wait_for_url(f"{walk.base}/participants/{participant.pk}/")
    participant.refresh_from_db()
    assert participant.randomization_number and participant.randomization_number in page.locator("main").inner_text()
    walk.step("randomized")

    walk.submit(page.locator("#record-next"))
    walk.step("c1-form")
    page.fill("#id_actual_date", today)
    page.fill("#id_weight_kg", "60")
    page.fill("#id_neutrophils", "3.0")
    page.check("#units_neutrophils input[value='1e9_per_l']")
    page.fill("#id_platelets", "90")
    page.check("#units_platelets input[value='1e9_per_l']")
    page.fill("#id_alt_uln", "1")
    page.fill("#id_ast_uln", "1")
    walk.submit(page.locator("main form button[type=submit]").first)
    assert page.locator(".messages li.warning").count() == 1
    walk.step("c1-held")

    page.fill("#id_measured_on", today)
    page.fill("#id_neutrophils", "3.2")
    page.check("#units_neutrophils input[value='1e9_per_l']")
    page.fill("#id_platelets", "150")
    page.check("#units_platelets input[value='1e9_per_l']")
    page.fill("#id_alt_uln", "1")
    page.fill("#id_ast_uln", "1")
    walk.submit(page.locator("#repeat-labs button[type=submit]"))
    assert page.locator(".messages li.success").count() == 1
    walk.step("c1-repeat-labs-given")

    walk.submit(page.locator("#back-to-participant"))
    walk.submit(page.locator(f"main a[href='/screening/{screening.pk}/']").first)
    page.locator("#correction summary").click()
    walk.step("correction-form")
    page.fill("#id_date_of_birth", "1971-06-01")
    page.fill("#id_reason", "ID card: 1971")
    walk.submit(page.locator("#correction button[type=submit]"))
    assert page.locator(".messages li.success").count() == 1
    walk.step("date-of-birth-corrected")
    walk.done()
    screening.refresh_from_db()
    assert screening.date_of_birth == datetime.date(1971, 6, 1)


@pytest.mark.browser
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_pis_day(demo, browser, axe, live_server, language):
    from enrollment.models import Participant

    walk = Walk(browser, axe, live_server, "investigator", language)
    page = walk.page
    walk.log_in("investigator")

    walk.nav("/participants/awaiting-signature/")
    walk.step("waiting-list")
    walk.submit(page.locator("#awaiting-signature a.button").first)
    walk.step("review")
    page.fill("#sign #id_password", DEMO_PASSWORD)
    walk.submit(page.locator("#sign button[type=submit]"))
    assert page.locator(".messages li.success").count() == 1
    walk.step("signed")

    randomized = Participant.objects.get(randomization_number="NT-0001")
    walk.nav("/participants/")
    walk.step("participants")
    walk.submit(page.locator(f"main a[href='/participants/{randomized.pk}/']").first)
    walk.step("participant")
    walk.submit(page.locator(f"a[href='/participants/{randomized.pk}/unblind/']"))
    walk.step("unblind-form")
    for attempt in (1, 2):
        page.fill("#id_reason", "severe bleeding: the treating physician needs the allocation")
        page.fill("#id_password", f"mistyped-{attempt}")
        walk.submit(page.locator("main form button[type=submit]"))
        assert page.locator("main .errorlist").count() >= 1
        walk.step(f"mistyped-password-{attempt}")
    page.fill("#id_reason", "severe bleeding: the treating physician needs the allocation")
    page.fill("#id_password", DEMO_PASSWORD)
    walk.submit(page.locator("main form button[type=submit]"))
    assert ARMS.search(page.locator(".verdict").inner_text())
    walk.step("unblinded")
    walk.done()


@pytest.mark.browser
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_pharmacists_day(demo, browser, axe, live_server, language):
    from django.contrib.auth import get_user_model

    from dosing import services
    from dosing.models import Kit

    site = demo
    services.shipment_create(
        site=site, per_content={"INF": 1, "TAB": 1}, shipped_by=get_user_model().objects.get(username="supply")
    )
    walk = Walk(browser, axe, live_server, "pharmacist", language)
    page = walk.page
    walk.log_in("pharmacist")

    walk.nav("/pharmacy/")
    walk.step("pharmacy")
    walk.submit(page.locator("form[action$='/receive/'] button[type=submit]").first)
    assert page.locator(".messages li.success").count() == 1
    walk.step("shipment-received")

    row = page.locator("tr:has(form[action$='/dispense/'])").first
    kit_number = row.locator("code").first.inner_text().strip()
    row.locator("input[name=label_number]").fill(kit_number)
    walk.submit(row.locator("form[action$='/dispense/'] button[type=submit]"))
    assert page.locator(".messages li.success").count() == 1
    walk.step("dispensed")
    assert Kit.objects.get(kit_number=kit_number).status == Kit.Status.DISPENSED

    returning = page.locator(f"tr:has(form[action$='/return/']):has(code:text-is('{kit_number}'))")
    returning.locator("input[name=returned_on]").fill(_today(site))
    if returning.locator("input[name=tablets_returned]").count():
        returning.locator("input[name=tablets_returned]").fill("3")
    walk.submit(returning.locator("button[type=submit]"))
    assert page.locator(".messages li.success").count() == 1
    walk.step("returned")
    walk.done()
    assert Kit.objects.get(kit_number=kit_number).status == Kit.Status.RETURNED


@pytest.mark.browser
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_supply_managers_day(demo, browser, axe, live_server, language):
    from dosing.models import Kit, Shipment

    site = demo
    walk = Walk(browser, axe, live_server, "supply", language)
    page = walk.page
    walk.log_in("supply")

    walk.nav("/supply/")
    walk.step("supply")
    generate = page.locator("form:has(input[name=action][value=generate])")
    generate.locator("input[name=packaging_lot]").fill(f"PL-WALK-{language}")
    generate.locator("input[name=kits_per_type]").fill("6")
    expiry = (timezone.localdate() + datetime.timedelta(days=400)).isoformat()
    for field in generate.locator("input[name^=lot_]").all():
        field.fill(f"L-{field.get_attribute('name')[4:]}")
    for field in generate.locator("input[name^=expiry_]").all():
        field.fill(expiry)
    walk.submit(generate.locator("button[type=submit]"))
    assert page.locator(".messages li.success").count() == 1
    walk.step("kit-list-generated")
    assert Kit.objects.filter(packaging_lot=f"PL-WALK-{language}").count() == 6 * 2

    ship = page.locator("form:has(input[name=action][value=ship])")
    ship.locator("select[name=site]").select_option(str(site.pk))
    for field in ship.locator("input[name^=per_content_]").all():
        field.fill("2")
    walk.submit(ship.locator("button[type=submit]"))
    assert page.locator(".messages li.success").count() == 1
    walk.step("shipped")
    walk.done()
    shipment = Shipment.objects.order_by("-pk").first()
    contents = set(shipment.kits.values_list("content", flat=True))
    assert shipment.site == site and len(contents) == 2


@pytest.mark.browser
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_statisticians_day(demo, browser, axe, live_server, language):
    from randomization.models import RandomizationList

    walk = Walk(browser, axe, live_server, "statistician", language)
    page = walk.page
    walk.log_in("statistician")

    walk.nav("/randomization/lists/")
    walk.step("lists")
    locked = RandomizationList.objects.get(is_active=True)
    walk.submit(page.locator(f"main a[href='/randomization/lists/{locked.pk}/']"))
    walk.step("locked-demo-list")
    page.go_back()
    page.fill("#id_seed", f"walk-{language}-seed")
    page.fill("#id_slots_per_stratum", "8")
    page.fill("#id_reason", "A second list for the walk")
    walk.submit(page.locator("form:has(input[name=action][value=generate]) button[type=submit]"))
    walk.step("list-generated")
    assert RandomizationList.objects.count() == 2
    page.fill("main form #id_password", DEMO_PASSWORD)
    walk.submit(page.locator("main form button[type=submit]"))
    assert page.locator(".messages li.success").count() == 1
    walk.step("list-locked")
    assert RandomizationList.objects.get(version=2).locked_at is not None

    walk.nav("/randomization/lists/")
    walk.submit(page.locator("main a[href='/randomization/code-break-sheets/']"))
    walk.step("code-break-sheets")
    page.fill("main form #id_password", DEMO_PASSWORD)
    with page.expect_download() as download:
        page.locator("main form button[type=submit]").click()
    assert open(download.value.path(), "rb").read(5) == b"%PDF-"
    page.reload()
    walk.step("code-break-sheets-printed")
    walk.done()


@pytest.mark.browser
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_monitors_day(demo, browser, axe, live_server, language):
    walk = Walk(browser, axe, live_server, "monitor", language)
    page = walk.page
    walk.log_in("monitor")

    walk.nav("/audit/")
    walk.step("audit")
    page.fill("#id_subject", "NT-0001")
    walk.submit(page.locator("main form button[type=submit]"))
    assert page.locator("main table tbody tr").count() > 3
    assert not ARMS.search(page.locator("main").inner_text())
    walk.step("audit-of-NT-0001")

    walk.nav("/screening/")
    walk.step("screening-log")
    walk.nav("/reports/")
    walk.step("reports")
    walk.done()
