"""Input that answered 500: each is now a 400, JSON for the API, a page or a field error on the
web, and nothing is written."""

from __future__ import annotations

import datetime
import json

import pytest
import time_machine

from enrollment.models import Screening
from randomization import services as randomization_services
from trialsite.models import AuditEvent

SCREENED = "2026-11-20"
SCREENING = {
    "initials": "LW",
    "date_of_birth": "1970-05-05",
    "sex": "M",
    "hospital_record_number": "NT-77",
    "screening_date": SCREENED,
    "consent_version": "2.1",
    "consent_date": SCREENED,
    "answers": {"IN1": "yes", "IN2": "yes", "EX1": "no", "EX2": "no", "EX3": "no"},
}


@pytest.fixture(autouse=True)
def _today():
    with time_machine.travel(datetime.datetime(2026, 11, 21, 2, tzinfo=datetime.UTC), tick=False):
        yield


def assert_json_400(answer, field=None):
    assert answer.status_code == 400, answer.content[:300]
    assert answer["Content-Type"].startswith("application/json")
    if field is not None:
        assert field in answer.json(), answer.json()


@pytest.mark.parametrize("depth", [100_000, 1_000, 40])
def test_deeply_nested_json_is_refused(cast, api_for, depth):
    body = '{"initials": ' + "[" * depth + "]" * depth + "}"
    answer = api_for(cast.coordinator).post("/api/v1/screenings/", body, content_type="application/json")
    assert_json_400(answer)
    assert "nested" in str(answer.json())
    assert not Screening.objects.exists()


def test_json_nested_as_deep_as_an_endpoint_reads_still_reaches_the_endpoint(cast, api_for):
    answer = api_for(cast.coordinator).post("/api/v1/screenings/", SCREENING, format="json")
    assert answer.status_code == 201, answer.content


@pytest.mark.parametrize(
    "stratification", ['{"\\ud800": "x"}', '{"ok": "\\udfff"}', '{"a": [{"\\ud83d": 1}]}'], ids=["key", "value", "deep"]
)
def test_a_lone_surrogate_in_the_body_is_refused_at_its_field(cast, api_for, stratification):
    body = '{"initials": "LW", "stratification": ' + stratification + "}"
    answer = api_for(cast.coordinator).post("/api/v1/screenings/", body, content_type="application/json")
    assert_json_400(answer, "stratification")
    assert not Screening.objects.exists()


def test_a_paired_surrogate_is_a_character_like_any_other(cast, api_for):
    # "\ud83d\ude00" is one emoji, valid in JSON: refused for what it says, not as unreadable.
    body = json.dumps({**SCREENING, "initials": "\U0001f600"})
    assert "\\ud83d\\ude00" in body
    answer = api_for(cast.coordinator).post("/api/v1/screenings/", body, content_type="application/json")
    assert_json_400(answer, "initials")


@pytest.mark.parametrize("subject", ["\u00b2", "\u2460", "12a", "-1", "\u0661"])
def test_a_subject_that_is_not_a_whole_number_is_a_400(cast, client_for, api_for, subject):
    page = client_for(cast.monitor).get("/audit/", {"subject": subject})
    assert page.status_code == 400
    assert "whole number" in page.content.decode()
    assert 'id="subject-error"' in page.content.decode()
    answer = api_for(cast.monitor).get("/api/v1/audit-events/", {"subject": subject})
    assert_json_400(answer, "subject")


def test_a_subject_beyond_any_id_finds_nothing(cast, client_for, api_for):
    huge = "9" * 30
    assert client_for(cast.monitor).get("/audit/", {"subject": huge}).status_code == 200
    answer = api_for(cast.monitor).get("/api/v1/audit-events/", {"subject": huge})
    assert answer.status_code == 200 and answer.json()["results"] == []


def test_a_good_subject_still_filters(cast, site, client_for, api_for):
    from tests import factories

    screening = factories.make_screening(site, by=cast.coordinator)
    answer = api_for(cast.monitor).get("/api/v1/audit-events/", {"subject": f" {screening.pk}"})
    assert answer.status_code == 200
    assert answer.json()["results"]
    assert {event["subject_id"] for event in answer.json()["results"]} == {screening.pk}


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/participants/", "q"),
        ("/audit/", "table"),
        ("/audit/", "pk"),
        ("/audit/", "subject"),
    ],
)
def test_a_nul_in_a_query_parameter_is_a_400_page(cast, client_for, path, parameter):
    before = AuditEvent.objects.count()
    page = client_for(cast.monitor).get(path, {parameter: "S-NT\x00"})
    assert page.status_code == 400
    assert "NUL" in page.content.decode()
    assert AuditEvent.objects.count() == before


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v1/participants/", "q"),
        ("/api/v1/audit-events/", "table"),
        ("/api/v1/audit-events/", "pk"),
    ],
)
def test_a_nul_in_a_query_parameter_is_a_json_400(cast, api_for, path, parameter):
    assert_json_400(api_for(cast.monitor).get(path, {parameter: "\x00x"}), parameter)


def test_a_superscript_digit_in_a_randomization_list_names_its_line(trial, cast):
    with pytest.raises(randomization_services.InvalidList) as refused:
        randomization_services.list_import(
            trial=trial,
            csv_text="stratum,sequence,block,block_size,arm\nNT,\u00b2,1,4,TOC\n",
            created_by=cast.statistician,
        )
    assert str(refused.value.message).startswith("Line 2: sequence, block and block size must be whole numbers")
