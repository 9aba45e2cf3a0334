"""In a real browser (Playwright driving Debian's Chromium): a coordinator logs in through the
login page, screens one eligible and one ineligible patient through the "Screen a patient" form
and reads both verdicts in words; the PI then signs off the eligible participant's eligibility."""

import pytest
from django.utils import timezone

from enrollment.models import Participant, Screening
from tests import factories
from tests.browser_support import SCREENSHOTS, launch_chromium

# Playwright's sync API runs an event loop in this thread; the ORM calls here are plain and sync.


@pytest.fixture(autouse=True)
def _playwright_runs_an_event_loop(monkeypatch):
    # Only for this module's tests: set at import, it would switch off async safety for the
    # whole session (and show up in `check --deploy` of the settings tests).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


ANSWERS = {"IN1": "yes", "IN2": "yes", "EX1": "no", "EX2": "no", "EX3": "no"}


def log_in(page, live_server, username):
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", factories.PASSWORD)
    page.locator("button[type=submit]", has_text="Log in").click()
    page.wait_for_url(f"{live_server.url}/")


def screen(page, live_server, *, today, initials, record, born, answers):
    page.goto(f"{live_server.url}/")
    page.locator("nav a", has_text="Screen a patient").click()
    page.fill("#id_initials", initials)
    page.fill("#id_date_of_birth", born)
    page.select_option("#id_sex", "F")
    page.fill("#id_hospital_record_number", record)
    page.fill("#id_screening_date", today)
    page.fill("#id_consent_version", "2.1")
    page.fill("#id_consent_date", today)
    for code, answer in answers.items():
        page.check(f"input[name=answer_{code}][value={answer}]")
    page.locator("button", has_text="Save and check eligibility").click()
    page.wait_for_selector("#verdict")
    return page.locator("#verdict").inner_text().strip()


@pytest.mark.browser
def test_a_coordinator_screens_an_eligible_and_an_ineligible_patient_and_sees_both_verdicts(site, cast, live_server):
    from playwright.sync_api import sync_playwright

    today = timezone.localdate(timezone=site.zone).isoformat()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        log_in(page, live_server, "coordinator")

        eligible = screen(
            page, live_server, today=today, initials="WJ", record="NT-7001", born="1968-04-12", answers=ANSWERS
        )
        assert eligible == "Eligible"
        assert "S-NT-0001" in page.locator("main").inner_text()

        ineligible = screen(
            page,
            live_server,
            today=today,
            initials="LM",
            record="NT-7002",
            born="1950-01-01",  # over 70
            answers={**ANSWERS, "IN2": "no", "EX1": "yes"},
        )
        assert ineligible == "Not eligible"
        reasons = page.locator("#reasons li").all_inner_texts()
        assert len(reasons) == 3
        assert reasons[0].startswith("Age ")
        assert reasons[1].startswith("Inclusion not met:") and reasons[2].startswith("Exclusion applies:")
        page.screenshot(path=str(SCREENSHOTS / "screening_not_eligible.png"), full_page=True)

        page.locator("nav a", has_text="Screening log").click()
        log = page.locator("main").inner_text()
        assert "NT-7001" not in log and "NT-7002" not in log  # record numbers are masked in the log
        assert "Eligible" in log and "Not eligible" in log
        page.locator("button", has_text="Log out").click()

        log_in(page, live_server, "investigator")
        participant = Participant.objects.get()
        page.goto(f"{live_server.url}/participants/{participant.pk}/")
        assert "meet all criteria of protocol" in page.locator("#meaning").inner_text()
        page.fill("#id_password", factories.PASSWORD)
        page.locator("button", has_text="Sign").click()
        page.wait_for_selector("text=Eligibility signed off by")
        page.screenshot(
            path=str(
                SCREENSHOTS
                / "test_a_coordinator_screens_an_eligible_and_an_ineligible_patient_and_sees_both_verdicts.png"
            ),
            full_page=True,
        )
        browser.close()
    assert Screening.objects.count() == 2
    participant.refresh_from_db()
    assert participant.eligibility_signature.signer == cast.investigator
