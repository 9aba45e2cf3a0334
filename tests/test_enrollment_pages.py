"""Screening, sign-off and withdrawal through the coordinator's and PI's pages and the API:
same services underneath, refusals at the field, other sites see nothing, lists in a constant
number of queries."""

import datetime

import pytest
import time_machine
from django.conf import settings

from enrollment.models import Participant, Screening, Withdrawal
from tests import factories
from trialsite.models import AuditEvent, Signature

ALL_GOOD = {"IN1": "yes", "IN2": "yes", "EX1": "no", "EX2": "no", "EX3": "no"}
NOW = datetime.datetime(2026, 11, 21, 2, 0, tzinfo=datetime.UTC)
FORM = {
    "initials": "ZQ",
    "date_of_birth": "1965-03-02",
    "sex": "F",
    "hospital_record_number": "NT-555123",
    "screening_date": "2026-11-20",
    "consent_version": "2.1",
    "consent_date": "2026-11-19",
    **{f"answer_{code}": answer for code, answer in ALL_GOOD.items()},
}
API_SCREENING = {
    "initials": "HM",
    "date_of_birth": "1980-01-01",
    "sex": "M",
    "hospital_record_number": "NT-9",
    "screening_date": "2026-11-20",
    "consent_version": "2.1",
    "consent_date": "2026-11-20",
    "answers": ALL_GOOD,
}


@pytest.fixture(autouse=True)
def _the_day_after_screening():
    with time_machine.travel(NOW, tick=False):
        yield


def test_the_screen_a_patient_form_asks_every_item_with_no_answer_chosen(cast, site, client_for):
    page = client_for(cast.coordinator).get("/screening/new/").content.decode()
    for code in ALL_GOOD:
        assert f'name="answer_{code}"' in page
    assert "checked" not in page
    assert "Screen a patient" in page and 'href="/screening/"' in page and 'href="/participants/"' in page


def test_the_form_shows_the_protocols_chinese_text_to_a_chinese_reader(cast, site, client_for):
    client = client_for(cast.coordinator)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    page = client.get("/screening/new/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    criterion = site.trial.protocol.eligibility.criteria[0]
    assert criterion.text_zh in page
    assert "筛选患者" in page and "保存并判断入选资格" in page


def test_an_eligible_patient_gets_the_verdict_in_words_and_a_screening_number(cast, site, client_for):
    answer = client_for(cast.coordinator).post("/screening/new/", FORM, follow=True)
    content = answer.content.decode()
    assert '<div class="verdict eligible" id="verdict">' in content
    assert "Eligible" in content and "S-NT-0001" in content
    assert Participant.objects.get().screening_number == "S-NT-0001"


def test_an_incomplete_screening_says_so_and_lists_the_unanswered_items(cast, site, client_for):
    form = {key: value for key, value in FORM.items() if key not in ("answer_IN2", "answer_EX1")}
    content = client_for(cast.coordinator).post("/screening/new/", form, follow=True).content.decode()
    assert "Incomplete" in content
    assert content.count("Not answered:") == 2
    assert not Participant.objects.exists()


def test_consent_after_the_screening_date_is_refused_at_the_consent_date(cast, site, client_for):
    page = client_for(cast.coordinator).post("/screening/new/", {**FORM, "consent_date": "2026-11-21"})
    assert page.status_code == 200
    assert "Consent must be signed on or before the screening date." in str(page.context["form"].errors["consent_date"])
    assert not Screening.objects.exists()


def test_the_screening_log_masks_record_numbers_and_keeps_screen_failures(cast, site, client_for):
    coordinator = client_for(cast.coordinator)
    coordinator.post("/screening/new/", {**FORM, "answer_EX2": "yes"})
    log = client_for(cast.monitor).get("/screening/").content.decode()
    assert "NT-555123" not in log and "123" in log
    assert "Not eligible" in log and "EX2" in log
    detail = client_for(cast.monitor).get(f"/screening/{Screening.objects.get().pk}/").content.decode()
    assert "NT-555123" not in detail


def test_a_re_screen_without_a_reason_is_refused_at_the_reason_and_saves_nothing(cast, site, client_for):
    coordinator = client_for(cast.coordinator)
    coordinator.post("/screening/new/", {**FORM, "answer_EX3": "yes"})
    screening = Screening.objects.get()
    page = coordinator.post(f"/screening/{screening.pk}/", {**FORM, "answer_EX3": "no", "reason": ""})
    assert "reason" in page.context["form"].errors
    screening.refresh_from_db()
    assert screening.outcome == "ineligible" and not Participant.objects.exists()
    fixed = coordinator.post(
        f"/screening/{screening.pk}/", {**FORM, "answer_EX3": "no", "reason": "drug list re-checked"}, follow=True
    )
    assert b"Screening updated." in fixed.content
    screening.refresh_from_db()
    assert screening.outcome == "eligible" and screening.participant.screening_number == "S-NT-0001"
    assert AuditEvent.objects.filter(table_name="enrollment_eligibilityanswer", reason="drug list re-checked").exists()


def test_the_pi_signs_off_eligibility_on_the_page_seeing_the_meaning(cast, site, client_for):
    participant = factories.make_participant(site, by=cast.coordinator, signed=False)
    pi = client_for(cast.investigator)
    page = pi.get(f"/participants/{participant.pk}/").content.decode()
    assert 'id="meaning"' in page and "meet all criteria of protocol NCT06442709" in page
    wrong = pi.post(f"/participants/{participant.pk}/", {"action": "sign", "password": "nope"})
    assert "password" in wrong.context["sign_form"].errors
    assert not Signature.objects.exists()
    pi.post(f"/participants/{participant.pk}/", {"action": "sign", "password": factories.PASSWORD})
    signature = Signature.objects.get()
    assert signature.signer == cast.investigator and "meet all criteria" in signature.meaning
    # A coordinator may not sign: refused like any page they may not use.
    refused = client_for(cast.coordinator).post(
        f"/participants/{participant.pk}/", {"action": "sign", "password": factories.PASSWORD}
    )
    assert refused.status_code == 404
    assert Signature.objects.count() == 1


def test_a_coordinator_withdraws_a_participant_on_the_page(cast, site, client_for):
    participant = factories.make_participant(site, by=cast.coordinator, screening_date=datetime.date(2026, 11, 1))
    coordinator = client_for(cast.coordinator)
    future = coordinator.post(
        f"/participants/{participant.pk}/", {"action": "withdraw", "withdrawn_on": "2026-11-30", "reason": "moved"}
    )
    assert "withdrawn_on" in future.context["withdraw_form"].errors
    coordinator.post(
        f"/participants/{participant.pk}/", {"action": "withdraw", "withdrawn_on": "2026-11-20", "reason": "moved"}
    )
    assert Participant.objects.get(pk=participant.pk).status == "withdrawn"
    assert Withdrawal.objects.get().withdrawn_on == datetime.date(2026, 11, 20)
    listed = coordinator.get("/participants/?status=withdrawn").content.decode()
    assert participant.screening_number in listed


def test_a_coordinator_at_another_site_cannot_see_or_edit_screenings_web_or_api(
    cast, site, other_site, client_for, api_for
):
    client_for(cast.coordinator).post("/screening/new/", FORM)
    screening = Screening.objects.get()
    other_web, other_api = client_for(cast.other_coordinator), api_for(cast.other_coordinator)
    assert other_web.post(f"/screening/{screening.pk}/", {**FORM, "initials": "XX", "reason": "x"}).status_code == 404
    assert (
        other_web.post(
            f"/participants/{screening.pk}/", {"action": "withdraw", "withdrawn_on": "2026-11-20", "reason": "x"}
        ).status_code
        == 404
    )
    # Not the initials alone: two letters turn up by chance in the page's random CSRF token.
    listed = other_web.get("/screening/").content
    assert b"NT-555123" not in listed and b">ZQ<" not in listed and screening.subject_key.encode() not in listed
    assert b"S-NT-0001" not in other_web.get("/participants/?q=S-NT").content
    assert other_api.get(f"/api/v1/screenings/{screening.pk}/").status_code == 404
    assert other_api.get("/api/v1/screenings/").json()["count"] == 0
    pi_elsewhere = factories.make_user("investigator", other_site, username="pi2")
    assert (
        api_for(pi_elsewhere)
        .post(f"/api/v1/participants/{screening.pk}/sign-eligibility/", {"password": factories.PASSWORD})
        .status_code
        == 404
    )
    screening.refresh_from_db()
    assert screening.initials == "ZQ" and not Signature.objects.exists() and not Withdrawal.objects.exists()


def test_the_api_refuses_a_duplicate_record_number_at_the_field(cast, site, api_for):
    api = api_for(cast.coordinator)
    assert api.post("/api/v1/screenings/", API_SCREENING, format="json").status_code == 201
    again = api.post("/api/v1/screenings/", {**API_SCREENING, "initials": "AB"}, format="json")
    assert again.status_code == 400
    assert list(again.json()) == ["hospital_record_number"]
    future = api.post(
        "/api/v1/screenings/",
        {**API_SCREENING, "hospital_record_number": "N2", "date_of_birth": "2027-01-01"},
        format="json",
    )
    assert future.status_code == 400 and list(future.json()) == ["date_of_birth"]
    assert Screening.objects.count() == 1


def test_the_api_re_screens_with_a_reason_and_refuses_without_one(cast, site, api_for):
    api = api_for(cast.coordinator)
    created = api.post(
        "/api/v1/screenings/", {**API_SCREENING, "answers": {**ALL_GOOD, "IN1": None}}, format="json"
    ).json()
    assert created["outcome"] == "incomplete" and created["participant"] is None
    path = f"/api/v1/screenings/{created['id']}/"
    refused = api.patch(path, {"answers": {"IN1": "yes"}}, format="json")
    assert refused.status_code == 400 and "reason" in refused.json()
    assert Screening.objects.get().outcome == "incomplete"
    done = api.patch(path, {"answers": {"IN1": "yes"}, "reason": "asked the patient"}, format="json")
    assert done.status_code == 200
    assert done.json()["outcome"] == "eligible" and done.json()["participant"] == "S-NT-0001"


def test_the_api_signs_off_and_withdraws_through_the_same_services(cast, site, api_for):
    created = api_for(cast.coordinator).post("/api/v1/screenings/", API_SCREENING, format="json").json()
    path = f"/api/v1/participants/{created['id']}/"
    pi = api_for(cast.investigator)
    assert pi.post(path + "sign-eligibility/", {"password": "nope"}).status_code == 403
    signed = pi.post(path + "sign-eligibility/", {"password": factories.PASSWORD})
    assert signed.status_code == 200 and signed.json()["eligibility_signed"] is True
    assert pi.post(path + "sign-eligibility/", {"password": factories.PASSWORD}).status_code == 409
    coordinator = api_for(cast.coordinator)
    early = coordinator.post(path + "withdraw/", {"withdrawn_on": "2026-11-19", "reason": "moved"})
    assert early.status_code == 400 and list(early.json()) == ["withdrawn_on"]
    withdrawn = coordinator.post(path + "withdraw/", {"withdrawn_on": "2026-11-21", "reason": "moved"})
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    assert "arm" not in str(withdrawn.json()).lower()
    listed = coordinator.get("/api/v1/participants/?status=withdrawn").json()
    assert [row["screening_number"] for row in listed["results"]] == ["S-NT-0001"]


def test_the_participant_search_finds_by_number_or_initials(cast, site, client_for, api_for):
    factories.make_participant(site, by=cast.coordinator)  # initials TS
    api_for(cast.coordinator).post("/api/v1/screenings/", API_SCREENING, format="json")  # initials HM
    page = client_for(cast.coordinator).get("/participants/?q=hm").content.decode()
    assert "S-NT-0002" in page and "S-NT-0001" not in page
    found = api_for(cast.coordinator).get("/api/v1/participants/?q=S-NT-0001").json()
    assert [row["initials"] for row in found["results"]] == ["TS"]


@pytest.mark.parametrize("path", ["/screening/", "/api/v1/screenings/", "/api/v1/participants/"])
def test_lists_take_the_same_number_of_queries_for_3_or_30_rows(
    cast, site, client_for, django_assert_max_num_queries, path
):
    client = client_for(cast.coordinator)
    for _ in range(3):
        factories.make_participant(site, by=cast.coordinator)
    with django_assert_max_num_queries(15) as few:
        client.get(path)
    for _ in range(27):
        factories.make_participant(site, by=cast.coordinator)
    with django_assert_max_num_queries(len(few.captured_queries)):
        answer = client.get(path)
    assert answer.status_code == 200
    assert answer.content.count(b"S-NT-") >= 30


def test_the_screening_log_filters_by_verdict_on_the_page_and_in_the_api(cast, site, client_for, api_for):
    coordinator = client_for(cast.coordinator)
    coordinator.post("/screening/new/", FORM)
    coordinator.post(
        "/screening/new/", {**FORM, "hospital_record_number": "NT-2", "initials": "FA", "answer_EX1": "yes"}
    )
    failures = coordinator.get("/screening/?outcome=ineligible").content.decode()
    assert "<td>FA</td>" in failures and "<td>ZQ</td>" not in failures
    listed = api_for(cast.monitor).get("/api/v1/screenings/?outcome=eligible").json()
    assert [row["initials"] for row in listed["results"]] == ["ZQ"]


def test_a_withdrawn_participant_shows_the_date_and_reason(cast, site, client_for):
    participant = factories.make_participant(site, by=cast.coordinator)
    client_for(cast.coordinator).post(
        f"/participants/{participant.pk}/", {"action": "withdraw", "withdrawn_on": "2026-11-20", "reason": "moved away"}
    )
    page = client_for(cast.monitor).get(f"/participants/{participant.pk}/").content.decode()
    assert "20 Nov 2026" in page and "moved away" in page
    assert 'name="action" value="withdraw"' not in page
