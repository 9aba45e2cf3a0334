"""In a real browser: a coordinator screens one eligible and one ineligible patient through the
form, sees both verdicts, and randomizes the eligible one without ever seeing an arm; the PI
then breaks the blind for that participant with the password and a reason."""

import re

import pytest
from django.utils import timezone

from randomization import services
from tests import factories
from tests.browser_support import SCREENSHOTS, launch_chromium

ARMS = re.compile(r"\b(TOC|ASA|COMBO|PBO|Tocilizumab|Aspirin|Placebo)\b", re.IGNORECASE)


def log_in(page, live_server, username):
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", factories.PASSWORD)
    page.locator("button[type=submit]", has_text="Log in").click()
    page.wait_for_url(f"{live_server.url}/")


def screen(page, live_server, *, record, anticoagulants):
    today = timezone.localdate().isoformat()
    page.goto(f"{live_server.url}/screening/new/")
    page.fill("#id_initials", "WJ")
    page.fill("#id_date_of_birth", "1968-04-12")
    page.select_option("#id_sex", "M")
    page.fill("#id_hospital_record_number", record)
    page.fill("#id_screening_date", today)
    page.fill("#id_consent_version", "2.1")
    page.fill("#id_consent_date", today)
    for code, answer in (("IN1", "yes"), ("IN2", "yes"), ("EX1", "no"), ("EX2", "no"), ("EX3", anticoagulants)):
        page.check(f"input[name=answer_{code}][value={answer}]")
    page.locator("button", has_text="Save and check eligibility").click()
    return page.locator("#verdict").inner_text().strip()


@pytest.mark.browser
def test_a_coordinator_screens_two_patients_and_randomizes_the_eligible_one_then_the_pi_unblinds(
    trial, site, cast, live_server, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    randomization_list = services.list_generate(
        trial=trial, seed="browser", slots_per_stratum=8, created_by=cast.statistician
    )
    services.list_lock(randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        log_in(page, live_server, "coordinator")

        assert screen(page, live_server, record="NT-4001", anticoagulants="yes") == "Not eligible"
        assert "Exclusion applies: Long-term use of anticoagulants" in page.locator("#reasons").inner_text()
        assert screen(page, live_server, record="NT-4002", anticoagulants="no") == "Eligible"

        # The way on is one primary button; this protocol wants the PI's signature first.
        assert "Next: eligibility sign-off by the principal investigator" in page.locator("#next-step").inner_text()
        page.locator("a", has_text="S-NT-0001").click()
        participant_url = page.url
        page.locator("button", has_text="Log out").click()

        log_in(page, live_server, "investigator")
        page.locator("nav a", has_text="Waiting for my signature").click()
        page.locator("#awaiting-signature a", has_text="Review and sign").click()
        page.fill("#id_password", factories.PASSWORD)
        page.locator("#sign button", has_text="Sign").click()
        assert "Eligibility signed off." in page.locator(".messages").inner_text()
        page.locator("button", has_text="Log out").click()

        log_in(page, live_server, "coordinator")
        page.goto(participant_url)
        page.locator("a", has_text="Randomize…").click()
        basis = page.locator("#randomization-basis").inner_text()
        assert "Eligible" in basis and "NT · Affiliated Hospital" in basis and not ARMS.search(basis)
        page.screenshot(path=str(SCREENSHOTS / "coordinator_confirms_randomization.png"), full_page=True)
        page.locator("button", has_text="Confirm and randomize").click()
        main = page.locator("main").inner_text()
        assert "Randomized: NT-0001" in main
        assert "C12" in main  # the visit plan appeared
        assert not ARMS.search(main)
        page.screenshot(path=str(SCREENSHOTS / "coordinator_randomizes.png"), full_page=True)
        page.locator("button", has_text="Log out").click()

        log_in(page, live_server, "investigator")
        page.goto(participant_url)
        page.locator("a", has_text="Emergency unblinding").click()
        page.fill("#id_reason", "severe bleeding, the treating physician needs the allocation")
        page.fill("#id_password", factories.PASSWORD)
        page.locator("button", has_text="Break the blind").click()
        shown = page.locator(".verdict").inner_text()
        assert "Allocated arm" in shown and ARMS.search(shown)
        page.screenshot(path=str(SCREENSHOTS / "pi_breaks_the_blind.png"), full_page=True)
        browser.close()
