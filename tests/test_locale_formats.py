"""Every screen in each language, and dates and numbers as the reader's language writes them.

Screens are found from the URL resolver, as in the bad-input sweep, so a new page is rendered
in both languages without anyone listing it."""

from __future__ import annotations

import datetime
import re
from decimal import Decimal

import time_machine
from django.conf import settings
from django.test import Client
from django.utils import translation

from dosing import services as dosing_services
from tests import dosing_factories
from tests.sweep import fill, record_id, web_routes

CJK = re.compile(r"[\u4e00-\u9fff]")


def reader(user, language: str) -> Client:
    client = Client()
    client.force_login(user)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = language
    return client


def title_of(page: str) -> str:
    return re.search(r"<title>(.*?)</title>", page, re.S).group(1)


def test_every_screen_renders_in_english_and_in_simplified_chinese(world):
    rendered, failures = 0, []
    for language in ("en", "zh-hans"):
        client = reader(world["user"], language)
        for route in ["", *web_routes()]:
            url = fill(route, record_id(route, world)) if "<int:pk>" in route else "/" + route
            response = client.get(url)
            if response.status_code != 200 or "text/html" not in response.get("Content-Type", ""):
                continue
            page = response.content.decode()
            title = title_of(page)
            if f'<html lang="{language}">' not in page:
                failures.append(f"{language} {url}: html lang")
            # The title names the screen; in Chinese it is Chinese, in English it holds none.
            if bool(CJK.search(title)) != (language == "zh-hans"):
                failures.append(f"{language} {url}: title {title!r}")
            rendered += 1
    assert rendered >= 2 * 15, rendered
    assert not failures, "\n".join(failures)


def test_dates_and_numbers_are_written_as_the_readers_language_writes_them(cast, site):
    participant = dosing_factories.randomized_participant(
        site, arm_code="TOC", by=cast.coordinator, day0=datetime.date(2026, 11, 20)
    )
    visit = participant.visits.get(code="C1")
    with time_machine.travel(datetime.datetime(2026, 11, 20, 3, tzinfo=datetime.UTC), tick=False):
        dosing_services.visit_record(
            visit=visit,
            actual_date=datetime.date(2026, 11, 20),
            recorded_by=cast.coordinator,
            weight_kg=Decimal("70.5"),
            neutrophils=2500,
            platelets=185000,
            alt_uln=Decimal("0.8"),
            ast_uln=Decimal("0.9"),
        )
    english = reader(cast.coordinator, "en").get(f"/visits/{visit.pk}/").content.decode()
    chinese = reader(cast.coordinator, "zh-hans").get(f"/visits/{visit.pk}/").content.decode()
    assert "20 Nov 2026" in english and "2026-11-20" not in english
    assert "2026年11月20日" in chinese and "2026-11-20" not in chinese
    for page in (english, chinese):
        assert "185,000" in page and "2,500" in page
        assert "70.5" in page
    # The participant's page, whose schedule is a column of dates, follows the same rule.
    schedule = reader(cast.coordinator, "zh-hans").get(f"/participants/{participant.pk}/").content.decode()
    second = participant.visits.get(code="C2").target_date
    assert f"{second.year}年{second.month}月{second.day}日" in schedule
    assert second.isoformat() not in schedule


def test_exports_and_the_audit_trail_stay_iso_whatever_the_language(cast, site):
    dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    with translation.override("zh-hans"):
        trail = reader(cast.monitor, "zh-hans").get("/audit/").content.decode()
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", trail), "auditors compare the trail to ISO exports"
