"""Issue 16, friction: the screening log in words, reminders grouped by when, the audit trail
a monitor can read (names, people, numbers, masked record numbers, a table list), one menu
item highlighted, no default sex, kits in transit, and the Chinese words that were missing."""

from __future__ import annotations

import datetime
import html
import re

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dosing.models import Kit, KitStatus, Shipment
from dosing.reminders.models import Reminder
from enrollment.models import Outcome, Screening
from tests import dosing_factories as df
from tests import factories
from trialsite.audit import audit_context


def text_of(response) -> str:
    """The page as read: inline tags dropped, block tags a space, white space collapsed."""
    body = re.sub(r"</?(span|code|a|small|b|strong|label)\b[^>]*>", "", response.content.decode())
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def reader(client_for, user, language: str):
    client = client_for(user)
    client.cookies["django_language"] = language
    return client


# --- Screening log --------------------------------------------------------------------------


@pytest.fixture
def screen_failure(site, cast):
    screening = factories.make_screening(site, by=cast.coordinator, eligible=False, record_number="NT-88412")
    with audit_context(actor=cast.coordinator, reason="test: two reasons"):
        Screening.objects.filter(pk=screening.pk).update(
            reasons=[{"code": "AGE", "text": "Age 76 ..."}, {"code": "EX1", "text": "Exclusion applies: Liver disease"}]
        )
    return screening


def test_the_screening_log_gives_reasons_in_words_and_links_the_participant(site, cast, client_for, screen_failure):
    participant = factories.make_participant(site, by=cast.coordinator)
    english = client_for(cast.coordinator).get("/screening/")
    assert english.status_code == 200
    page = text_of(english)
    # The protocol's code stays, as on the reports, in front of the words.
    assert "AGE · Age outside 20 to 70 years" in page and "EX1 · Liver disease" in page
    assert f'href="/participants/{participant.pk}/">{participant.label}</a>' in english.content.decode()
    # The record number stays masked, as before.
    assert "NT-88412" not in page and "412" in page

    chinese = text_of(reader(client_for, cast.coordinator, "zh-hans").get("/screening/"))
    assert "年龄不在 20 至 70 岁之间" in chinese and "肝脏疾病" in chinese
    assert "病历号" in chinese and "已筛查" in chinese
    assert "录入" not in chinese and "已筛选" not in chinese


def test_the_screening_page_gives_the_verdict_reasons_in_the_readers_language(site, cast, client_for):
    from enrollment import services

    # Saved in English: the sentences stored are English ones.
    screening = factories.make_screening(site, by=cast.coordinator)
    with audit_context(actor=cast.coordinator, reason="test: exclusion applies"):
        screening.answers.filter(criterion_code="EX1").update(answer="yes")
    services._verdict(
        screening, screening.screening_date, dict(screening.answers.values_list("criterion_code", "answer"))
    )
    with audit_context(actor=cast.coordinator, reason="test: verdict"):
        Screening.objects.filter(pk=screening.pk).update(outcome=screening.outcome, reasons=screening.reasons)
    assert screening.outcome == Outcome.INELIGIBLE
    assert screening.reasons[0]["text"] == "Exclusion applies: Liver disease"
    chinese = text_of(reader(client_for, cast.coordinator, "zh-hans").get(f"/screening/{screening.pk}/"))
    assert "符合排除标准\uff1a肝脏疾病" in chinese
    assert "Exclusion applies" not in chinese


# --- Reminders ------------------------------------------------------------------------------

# Randomized on 3 November; the page is read on Thursday 19 November at 10:00 in Shanghai.
READ_AT = datetime.datetime(2026, 11, 19, 2, 0, tzinfo=datetime.UTC)


@pytest.fixture
def reminders(site, cast):
    with time_machine.travel(datetime.datetime(2026, 11, 3, 1, tzinfo=datetime.UTC), tick=False):
        participants = [
            df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=datetime.date(2026, 11, 3))
            for _ in range(2)
        ]
    # One should have gone out on Tuesday and did not (the broker was down); one this Sunday
    # night at the site (Sunday 23:30 Shanghai is Sunday 15:30 UTC); one on Monday 00:30 there.
    first = participants[0]
    visit = first.visits.order_by("window_start").first()
    with audit_context(reason="test: due times"):
        Reminder.objects.filter(participant__in=participants).update(
            due_at=datetime.datetime(2027, 3, 1, tzinfo=datetime.UTC)
        )
        made = Reminder.objects.filter(participant=first).order_by("id")
        overdue, sunday, monday = made[0], made[1], made[2]
        Reminder.objects.filter(pk=overdue.pk).update(due_at=datetime.datetime(2026, 11, 17, 1, tzinfo=datetime.UTC))
        Reminder.objects.filter(pk=sunday.pk).update(
            due_at=datetime.datetime(2026, 11, 22, 15, 30, tzinfo=datetime.UTC)
        )
        Reminder.objects.filter(pk=monday.pk).update(
            due_at=datetime.datetime(2026, 11, 22, 16, 30, tzinfo=datetime.UTC)
        )
        gone = Reminder.objects.filter(participant=participants[1]).order_by("id").first()
        Reminder.objects.filter(pk=gone.pk).update(
            status=Reminder.Status.CANCELLED,
            status_reason="the visit happened",
            due_at=datetime.datetime(2026, 11, 10, tzinfo=datetime.UTC),
        )
    return {"overdue": overdue, "sunday": sunday, "monday": monday, "gone": gone, "visit": visit}


def group_section(page: str, key: str) -> str:
    match = re.search(rf'<section class="reminder-group" id="group-{key}">(.*?)</section>', page, re.S)
    assert match, key
    return match.group(1)


def test_reminders_are_grouped_overdue_this_week_later_in_the_sites_week(site, cast, client_for, reminders):
    pending = Reminder.objects.filter(site=site).exclude(status=Reminder.Status.CANCELLED).count()
    with time_machine.travel(READ_AT, tick=False):
        response = client_for(cast.coordinator).get("/reminders/")
    page = response.content.decode()
    overdue, week, later = (group_section(page, key) for key in ("overdue", "week", "later"))
    assert f"/participants/{reminders['overdue'].participant_id}/" in overdue
    assert "2026-11-17 09:00" in overdue
    assert "2026-11-22 23:30" in week and "2026-11-22 23:30" not in later
    assert "2026-11-23 00:30" in later and "2026-11-23 00:30" not in week
    # A few of each, and how many there are; the rest a click away.
    assert '<span class="badge flag">1</span>' in overdue
    assert f">{pending - 2}</span>" in later
    assert later.count("<tr>") == 1 + 10
    assert f'href="?group=later">Show all {pending - 2}</a>' in later
    # Sent and cancelled reminders are history, not on the grouped page.
    assert "the visit happened" not in page
    with time_machine.travel(READ_AT, tick=False):
        all_later = client_for(cast.coordinator).get("/reminders/?group=later").content.decode()
    assert all_later.count("<tr>") == 1 + min(pending - 2, 50)
    assert "2026-11-22 23:30" not in all_later


def test_the_grouped_reminders_take_the_same_queries_for_ten_participants_as_for_two(site, cast, client_for, reminders):
    client = client_for(cast.coordinator)

    def queries() -> int:
        with time_machine.travel(READ_AT, tick=False), CaptureQueriesContext(connection) as captured:
            assert client.get("/reminders/").status_code == 200
        return len(captured)

    queries()  # the first request of a session also saves the session
    few = queries()
    with time_machine.travel(datetime.datetime(2026, 11, 3, 1, tzinfo=datetime.UTC), tick=False):
        for _ in range(8):
            df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=datetime.date(2026, 11, 3))
    assert queries() == few


def test_a_cancelled_reminders_note_is_in_chinese(site, cast, client_for, reminders):
    page = text_of(reader(client_for, cast.coordinator, "zh-hans").get("/reminders/?status=cancelled"))
    assert "访视已完成" in page and "the visit happened" not in page


# --- Audit trail ----------------------------------------------------------------------------


@pytest.fixture
def corrected(site, cast):
    cast.coordinator.first_name, cast.coordinator.last_name = "Li", "Wei"
    cast.coordinator.save()
    participant = factories.make_participant(site, by=cast.coordinator, record_number="NT-88412")
    with audit_context(actor=cast.coordinator, reason="typo on the paper CRF"):
        Screening.objects.filter(pk=participant.pk).update(
            date_of_birth=datetime.date(1968, 3, 14), hospital_record_number="NT-88413"
        )
    return participant


def test_the_audit_page_names_tables_fields_and_people_and_masks_record_numbers(site, cast, client_for, corrected):
    response = client_for(cast.monitor).get("/audit/", {"table": "enrollment_screening", "pk": corrected.pk})
    assert response.status_code == 200
    page, words = response.content.decode(), text_of(response)
    assert "changed Screening" in words and "Date of birth: 1970-06-01 → 1968-03-14" in words
    assert "Li Wei (coordinator)" in words
    assert "hospital_record_number" not in words and "date_of_birth" not in words
    assert "NT-88412" not in page and "NT-88413" not in page
    assert "•••••412 → •••••413" in words
    # The monitor audits the system: the database role is there, in its own column.
    assert "<th>Database role</th>" in page
    # The PI reads who did it, not the database role.
    pi_page = client_for(cast.investigator).get("/audit/", {"table": "enrollment_screening"}).content.decode()
    assert "Li Wei" in pi_page and "Database role" not in pi_page


def test_the_audit_page_in_chinese_names_tables_and_fields_in_chinese(site, cast, client_for, corrected):
    words = text_of(
        reader(client_for, cast.monitor, "zh-hans").get(
            "/audit/", {"table": "enrollment_screening", "pk": corrected.pk}
        )
    )
    assert "筛选" in words and "出生日期" in words and "Date of birth" not in words


def test_the_table_is_picked_from_a_list_and_junk_is_a_400(cast, client_for, corrected):
    page = client_for(cast.monitor).get("/audit/").content.decode()
    picker = re.search(r'<select id="id_table" name="table".*?</select>', page, re.S).group(0)
    assert '<option value="enrollment_screening">Screening</option>' in picker
    assert '<option value="dosing_kit">Kit</option>' in picker
    assert "reports_export" not in picker and "randomization_randomizationlist" not in picker
    junk = client_for(cast.monitor).get("/audit/", {"table": "auth_user"})
    assert junk.status_code == 400 and 'id="table-error"' in junk.content.decode()


def test_a_subject_by_randomization_or_screening_number(site, other_site, cast, client_for, api_for):
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    client = client_for(cast.monitor)
    for number in (
        participant.randomization_number,
        participant.screening_number,
        participant.randomization_number.lower(),
    ):
        response = client.get("/audit/", {"subject": number, "table": "enrollment_participant"})
        assert response.status_code == 200, number
        assert f"enrollment_participant #{participant.pk}" in response.content.decode()
    # Another site's participant reads like no participant: a 400 at the field, nothing listed.
    elsewhere = df.randomized_participant(other_site, arm_code="TOC", by=cast.other_coordinator)
    refused = client.get("/audit/", {"subject": elsewhere.randomization_number})
    assert refused.status_code == 400
    assert 'id="subject-error"' in refused.content.decode() and "No events." in refused.content.decode()
    assert client.get("/audit/", {"subject": "NT-9999"}).status_code == 400
    # The API reads the subject alike.
    api = api_for(cast.monitor)
    answer = api.get("/api/v1/audit-events/", {"subject": participant.randomization_number})
    assert answer.status_code == 200 and {event["subject_id"] for event in answer.json()["results"]} == {participant.pk}
    refused = api.get("/api/v1/audit-events/", {"subject": elsewhere.randomization_number})
    assert refused.status_code == 400 and "subject" in refused.json()


# --- Layout, forms and supply ---------------------------------------------------------------


def test_one_menu_item_is_highlighted_on_the_new_screening_page(cast, client_for):
    page = client_for(cast.coordinator).get("/screening/new/").content.decode()
    current = re.findall(r'<a href="([^"]+)" class="current" aria-current="page">', page)
    assert current == ["/screening/new/"]
    log = client_for(cast.coordinator).get("/screening/").content.decode()
    assert re.findall(r'<a href="([^"]+)" class="current"', log) == ["/screening/"]


def test_sex_has_no_default(cast, client_for):
    page = client_for(cast.coordinator).get("/screening/new/").content.decode()
    select = re.search(r'<select name="sex".*?</select>', page, re.S).group(0)
    assert '<option value="" selected>' in select
    assert "selected" not in select.replace('<option value="" selected>', "")
    refused = client_for(cast.coordinator).post("/screening/new/", {"initials": "LW"})
    assert "sex" in refused.context["form"].errors


def test_favicon_and_no_inline_style_on_the_login_page(client):
    login = client.get("/accounts/login/").content.decode()
    assert 'style="' not in login and 'class="card narrow login-card"' in login
    assert 'rel="icon"' in login
    from django.contrib.staticfiles import finders

    icon = client.get("/favicon.ico")
    assert icon.status_code == 302 and icon["Location"].endswith(".svg")
    assert finders.find("favicon.svg")


def test_the_supply_page_counts_kits_in_transit(site, cast, client_for, api_for):
    with audit_context(reason="test shipment"):
        shipment = Shipment.objects.create(site=site, shipped_by=cast.supply_manager)
    for content in ("active", "placebo"):
        for _ in range(3):
            kit = df.make_kit(site=site, content=content, status=KitStatus.SHIPPED)
            with audit_context(reason="test shipment"):
                Kit.objects.filter(pk=kit.pk).update(shipment=shipment)
    df.make_kit(site=site, content="active", status=KitStatus.AT_SITE)
    page = client_for(cast.supply_manager).get("/supply/").content.decode()
    rows = re.findall(
        r"<tr><td>NT</td><td>Infusion</td><td>(\w+)</td>\s*<td class=\"in-transit\">(\d+)</td>\s*<td>(\d+)", page
    )
    assert ("Active", "3", "1") in rows and ("Placebo", "3", "0") in rows
    chinese = text_of(reader(client_for, cast.supply_manager, "zh-hans").get("/supply/"))
    assert "在途" in chinese and "安慰剂" in chinese and "Placebo" not in chinese
    stock = api_for(cast.supply_manager).get("/api/v1/supply/stock/").json()
    assert {(line["kit_type"], line["content"], line["in_transit"]) for line in stock if line["site"] == "NT"} >= {
        ("INF", "active", 3),
        ("INF", "placebo", 3),
    }
    pharmacy = client_for(cast.pharmacist).get("/pharmacy/").content.decode()
    assert "Mark shipment received" in pharmacy


def test_the_remaining_english_words_are_chinese(site, cast, client_for):
    df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, schedule=False)
    reports = text_of(reader(client_for, cast.investigator, "zh-hans").get("/reports/"))
    # The enrollment chart: its legend, target line and title.
    assert "当月随机化" in reports and "目标 100" in reports and "已随机化 1 例" in reports
    for english in ("Randomized in the month", "Target", "Enrollment by month", "Excel (XLSX)"):
        assert english not in reports, english
    from django.utils import translation

    with translation.override("zh-hans"):
        assert translation.gettext("Excel (XLSX)") != "Excel (XLSX)"
        assert translation.gettext("the visit happened") == "访视已完成"
        assert translation.gettext("Record") == "录入"  # the button that records a visit
        assert translation.gettext("Screened") == "已筛查"
