"""Safety (issue 18) in a real browser: a coordinator records an adverse event and a serious one
through the web form, in English and in Chinese, meets each refusal at its field with nothing
typed lost; the PI writes the SAE report and signs it with their password; the DSMB member
opens the closed report from the menu and reads it by arm, while a blinded coordinator has no
link to it and is refused at its address, and a monitor finds only the open report on the Reports
page; the sponsor's safety officer finds the SUSAR list in the menu."""

from __future__ import annotations

import datetime
import re

import pytest
import time_machine
from django.utils import translation

from safety import services
from safety.models import AdverseEvent, SaeReport
from tests import dosing_factories, factories
from tests.browser_support import SCREENSHOTS, launch_chromium
from trialsite.models import AuditEvent

# 09:00 in Nantong. The clock starts here and runs (tick=True): a clock standing still would also
# stop the monotonic clock the browser driver waits with.
NOW = datetime.datetime(2026, 12, 12, 1, 0, tzinfo=datetime.UTC)
# Before NOW whether the form reads it in the site's zone or in UTC.
AWARE = "2026-12-11T20:00"
CLOSED_REPORT = "/safety/closed-report/"


@pytest.fixture(autouse=True)
def _clock():
    with time_machine.travel(NOW, tick=True):
        yield


@pytest.fixture
def browser(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


def log_in(browser, live_server, username: str, language: str = "en"):
    context = browser.new_context()
    context.add_cookies([{"name": "django_language", "value": language, "url": live_server.url}])
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", factories.PASSWORD)
    page.locator(".login-card button[type=submit]").click()
    page.wait_for_url(f"{live_server.url}/")
    return page


def words(language: str):
    """The page's words for a message id, in `language`; a Chinese one must really be Chinese."""

    def say(message: str, **values) -> str:
        with translation.override(language):
            text = translation.gettext(message)
        text = text % values if values else text
        if language != "en":
            assert not re.search(r"[A-Za-z]{2,}", text), f"not translated: {message!r}"
        return text

    return say


def error_at(page, field: str) -> str:
    return page.locator(f"#field-{field} .errorlist").inner_text().strip()


def submit(page, form: str) -> None:
    with page.expect_navigation():
        page.locator(f"{form} button[type=submit]").click()


def record_two_events(page, live_server, participant, language: str) -> None:
    say = words(language)
    page.goto(f"{live_server.url}/participants/{participant.pk}/")
    page.locator("#adverse-events-link a").click()
    page.wait_for_url(f"**/participants/{participant.pk}/adverse-events/")

    # A non-serious event, first with an onset tomorrow.
    page.select_option("#id_term", "fatigue")
    page.select_option("#id_grade", "2")
    page.fill("#id_onset_date", "2026-12-13")
    page.select_option("#id_relation_tablets", "possible")
    submit(page, "#new-adverse-event")
    assert error_at(page, "onset_date") == say("The onset date cannot be in the future.")
    # Everything typed is still there to correct.
    assert page.input_value("#id_term") == "fatigue"
    assert page.input_value("#id_grade") == "2"
    assert page.input_value("#id_onset_date") == "2026-12-13"
    assert page.input_value("#id_relation_tablets") == "possible"
    assert not AdverseEvent.objects.filter(participant=participant).exists()
    page.fill("#id_onset_date", "2026-12-09")
    submit(page, "#new-adverse-event")
    assert page.url.endswith(f"/participants/{participant.pk}/adverse-events/1/")
    assert say("Adverse event %(sequence)s recorded.", sequence=1) in page.locator(".messages").inner_text()

    # It resolves: a resolution before the onset is refused at its field.
    page.fill("#id_resolve-resolution_date", "2026-12-08")
    page.select_option("#id_resolve-outcome", "recovered")
    submit(page, "#resolve")
    assert error_at(page, "resolve-resolution_date") == say("The resolution date cannot be before the onset.")
    assert page.input_value("#id_resolve-resolution_date") == "2026-12-08"
    assert page.input_value("#id_resolve-outcome") == "recovered"
    page.fill("#id_resolve-resolution_date", "2026-12-11")
    submit(page, "#resolve")
    assert say("Adverse event resolved.") in page.locator(".messages").inner_text()

    # A serious event, first without the time the site became aware of it.
    page.goto(f"{live_server.url}/participants/{participant.pk}/adverse-events/")
    page.select_option("#id_term", "gi_haemorrhage")
    page.select_option("#id_grade", "3")
    page.fill("#id_onset_date", "2026-12-11")
    page.check("#id_serious")
    page.check("input[name=seriousness][value=hospitalisation]")
    page.select_option("#id_relation_infusion", "probable")
    submit(page, "#new-adverse-event")
    assert error_at(page, "awareness_at") == say("Enter when the site became aware the event is serious.")
    assert page.is_checked("#id_serious")
    assert page.is_checked("input[name=seriousness][value=hospitalisation]")
    assert page.input_value("#id_term") == "gi_haemorrhage"
    assert page.input_value("#id_relation_infusion") == "probable"
    page.fill("#id_awareness_at", AWARE)
    submit(page, "#new-adverse-event")
    assert page.url.endswith(f"/participants/{participant.pk}/adverse-events/2/")
    assert say("Adverse event %(sequence)s recorded.", sequence=2) in page.locator(".messages").inner_text()
    assert say("Serious adverse event") in page.locator("#sae h2").inner_text()
    page.screenshot(path=str(SCREENSHOTS / f"safety_sae_recorded_{language}.png"), full_page=True)


@pytest.mark.browser
@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_a_coordinator_records_an_adverse_event_and_a_serious_one_with_errors_at_their_fields(
    site, cast, live_server, browser, language
):
    participant = dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    page = log_in(browser, live_server, "coordinator", language)
    record_two_events(page, live_server, participant, language)

    events = AdverseEvent.objects.filter(participant=participant).order_by("sequence")
    assert [(e.sequence, e.term, e.grade, e.serious) for e in events] == [
        (1, "fatigue", 2, False),
        (2, "gi_haemorrhage", 3, True),
    ]
    fatigue, bleeding = events
    assert (fatigue.onset_date, fatigue.resolution_date, fatigue.outcome) == (
        datetime.date(2026, 12, 9),
        datetime.date(2026, 12, 11),
        "recovered",
    )
    assert fatigue.relation_tablets == "possible" and fatigue.recorded_by == cast.coordinator
    assert list(bleeding.seriousness) == ["hospitalisation"] and bleeding.relation_infusion == "probable"
    assert bleeding.awareness_at is not None and bleeding.awareness_at < NOW
    assert bleeding.sae_notices.exists()  # the SAE clock started
    assert AuditEvent.objects.filter(table_name="safety_adverseevent", action="INSERT").count() == 2


@pytest.mark.browser
def test_the_pi_writes_the_sae_report_and_signs_it_with_their_password(site, cast, live_server, browser):
    participant = dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    serious = services.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=services.AeDetails(
            term="gi_haemorrhage",
            grade=3,
            onset_date=datetime.date(2026, 12, 11),
            serious=True,
            seriousness=("hospitalisation",),
            awareness_at=NOW - datetime.timedelta(hours=3),
        ),
    )
    page = log_in(browser, live_server, "investigator")
    page.goto(f"{live_server.url}/participants/{participant.pk}/")
    page.locator("#adverse-events-link a").click()
    page.locator("#adverse-events a", has_text=str(serious.sequence)).click()
    page.wait_for_url(f"**/adverse-events/{serious.sequence}/")

    # "Complete" without the narrative is refused at the narrative, the tick kept.
    page.check("#id_report-complete")
    submit(page, "#sae-report-form")
    assert error_at(page, "report-narrative") == "A complete report needs the narrative."
    assert page.is_checked("#id_report-complete")
    assert not SaeReport.objects.exists()
    narrative = "Melaena on day 38; admitted, transfused two units; endoscopy found a duodenal ulcer."
    page.fill("#id_report-narrative", narrative)
    submit(page, "#sae-report-form")
    assert "SAE report saved." in page.locator(".messages").inner_text()
    assert narrative in page.locator("#sae-report-1").inner_text()

    page.fill("#id_sign-password", "not-my-password")
    submit(page, "#sae-sign-form")
    assert error_at(page, "sign-password") == "The password is not correct."
    assert SaeReport.objects.get().signature_id is None
    page.fill("#id_sign-password", factories.PASSWORD)
    submit(page, "#sae-sign-form")
    assert "SAE report signed." in page.locator(".messages").inner_text()
    assert "Signed by" in page.locator("#sae-report-1").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "safety_sae_signed.png"), full_page=True)

    report = SaeReport.objects.select_related("signature").get()
    assert (report.version, report.complete, report.narrative) == (1, True, narrative)
    assert report.signature.signer == cast.investigator
    assert services.signed_report(serious) == report


@pytest.fixture
def events_in_two_arms(site, cast):
    """A fatigue under TOC and an epistaxis under ASA, the latter serious."""
    toc = dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    asa = dosing_factories.randomized_participant(site, arm_code="ASA", by=cast.coordinator)
    services.ae_record(
        participant=toc,
        recorded_by=cast.coordinator,
        details=services.AeDetails(term="fatigue", grade=1, onset_date=datetime.date(2026, 12, 1)),
    )
    services.ae_record(
        participant=asa,
        recorded_by=cast.coordinator,
        details=services.AeDetails(
            term="epistaxis",
            grade=3,
            onset_date=datetime.date(2026, 12, 10),
            serious=True,
            seriousness=("hospitalisation",),
            awareness_at=NOW - datetime.timedelta(hours=5),
        ),
    )
    return toc, asa


@pytest.mark.browser
def test_the_dsmb_member_opens_the_closed_report_from_the_menu_and_a_blinded_coordinator_cannot(
    trial, site, cast, live_server, browser, events_in_two_arms
):
    toc, asa = (trial.arms.get(code=code) for code in ("TOC", "ASA"))

    page = log_in(browser, live_server, "dsmb")
    menu = page.locator("nav.main")
    assert menu.locator("a[href='/safety/report/']").count() == 1
    menu.locator(f"a[href='{CLOSED_REPORT}']", has_text="Closed safety report").click()
    page.wait_for_url(f"**{CLOSED_REPORT}")
    assert page.locator("h1").inner_text() == "Closed safety report"
    assert page.locator("nav.main a.current").get_attribute("href") == CLOSED_REPORT
    summary = page.locator("#summary").inner_text()
    assert toc.name in summary and asa.name in summary
    # One table by term per arm (and one for all), each holding its own arm's event only.
    by_arm = {}
    for section in page.locator("section.terms").all():
        heading = section.locator("h2").inner_text()
        by_arm[heading.rsplit(" · ", 1)[1]] = section.inner_text()
    assert "Fatigue" in by_arm[toc.name] and "Epistaxis" not in by_arm[toc.name]
    assert "Epistaxis" in by_arm[asa.name] and "Fatigue" not in by_arm[asa.name]
    assert "Fatigue" in by_arm["All participants"] and "Epistaxis" in by_arm["All participants"]
    assert page.locator("a", has_text="Download PDF").get_attribute("href") == f"{CLOSED_REPORT}pdf/"
    page.screenshot(path=str(SCREENSHOTS / "safety_closed_report_dsmb.png"), full_page=True)
    page.context.close()

    page = log_in(browser, live_server, "coordinator")
    menu = page.locator("nav.main")
    assert menu.locator("a[href*='closed-report']").count() == 0
    assert "closed-report" not in page.content()  # nor on the home page's list of what to do
    menu.locator("a[href='/safety/report/']", has_text="Safety").click()
    page.wait_for_url("**/safety/report/")
    assert page.locator("h1").inner_text() == "Open safety report"
    text = page.locator("main").inner_text()
    assert "Fatigue" in text and "Epistaxis" in text
    for arm in (toc, asa):
        assert arm.name not in text and not re.search(rf"\b{arm.code}\b", text)
    assert "closed-report" not in page.content()
    for path in (CLOSED_REPORT, f"{CLOSED_REPORT}pdf/"):
        response = page.goto(f"{live_server.url}{path}")
        assert response.status in (403, 404), path
    page.context.close()

    # The monitor (blinded, with the Reports page) finds the open report there, and only that one.
    page = log_in(browser, live_server, "monitor")
    page.locator("nav.main a[href='/reports/']").click()
    page.wait_for_url("**/reports/")
    links = page.locator("#safety-reports a")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == ["/safety/report/"]
    assert "closed-report" not in page.content()
    links.first.click()
    page.wait_for_url("**/safety/report/")
    assert "Epistaxis" in page.locator("main").inner_text()
    page.context.close()

    # The sponsor's safety officer: the SUSAR list from the menu, the serious event on it; no closed report.
    page = log_in(browser, live_server, "sponsor_safety")
    menu = page.locator("nav.main")
    assert menu.locator("a[href*='closed-report']").count() == 0
    menu.locator("a[href='/safety/susars/']").click()
    page.wait_for_url("**/safety/susars/")
    rows = page.locator("#susars tbody tr")
    assert rows.count() == 1 and "Epistaxis" in rows.inner_text()
    page.context.close()
