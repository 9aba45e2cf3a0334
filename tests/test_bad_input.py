"""Bad input on every write endpoint and every form, found by enumeration rather than listed by
hand, so a new endpoint or form is swept without anyone remembering to add it.

For each: broken encodings, oversized bodies, wrong types, unknown ids. The answer is a 4xx
(never a 5xx), and nothing is written: every trial table and the audit trail hold the same
number of rows before and after. The user holds every role at the site, so no refusal is
merely "you may not"."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
from functools import partial
from urllib.parse import urlencode

import time_machine
from django.test import Client
from rest_framework.test import APIClient

from tests import dosing_factories
from tests.sweep import fill, record_id, row_counts, web_routes

OVERSIZED = "x" * 3_000_000  # above DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB)
BROKEN_UTF8 = b'{"reason": "\xff\xfe\xfa broken", "password": "\xc3\x28"}'
UNKNOWN_ID = 987654321


def api_write_operations(client) -> list[tuple[str, str, dict]]:
    schema = client.get("/api/v1/schema/?format=json").json()
    operations = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if method in ("post", "put", "patch", "delete"):
                operations.append((method, path, operation))
    return operations


@contextlib.contextmanager
def collected(failures: list[str], name: str):
    """Run one case; an assertion failure is recorded under the case's name and the sweep goes on,
    so one run names every endpoint and case that is wrong."""
    try:
        yield
    except AssertionError as failure:
        failures.append(f"{name}: {failure}")


def assert_refused(response, case: str) -> None:
    assert 400 <= response.status_code < 500, (case, response.status_code, response.content[:300])


def test_every_write_endpoint_of_the_api_refuses_bad_input_and_writes_nothing(world):
    failures: list[str] = []
    api = APIClient()
    api.force_login(world["user"])
    operations = api_write_operations(api)
    components = api.get("/api/v1/schema/?format=json").json()["components"]["schemas"]
    assert len(operations) >= 15
    for method, path, operation in operations:
        route = path.lstrip("/").replace("{id}", "<int:pk>").replace("{pk}", "<int:pk>")
        url = fill(route, record_id(route, world)) if "<int:pk>" in route else "/" + route
        send = getattr(api, method)
        as_json = {"content_type": "application/json"}
        cases = {
            "broken UTF-8 JSON": partial(send, url, BROKEN_UTF8, **as_json),
            "oversized body": partial(send, url, json.dumps({"reason": OVERSIZED}), **as_json),
        }
        if "application/json" in operation.get("requestBody", {}).get("content", {}):
            cases["a list instead of an object"] = partial(send, url, "[1, 2, 3]", **as_json)
            cases["wrong types"] = partial(send, url, wrong_types(operation, components), **as_json)
        if "<int:pk>" in route:
            cases["unknown id"] = partial(send, fill(route, UNKNOWN_ID), {}, format="json")
        for case, request in cases.items():
            with collected(failures, f"{method.upper()} {path}: {case}"):
                before = row_counts()
                response = request()
                assert_refused(response, case)
                assert response["Content-Type"].startswith("application/json"), case
                assert row_counts() == before, case
    assert not failures, "\n".join(failures)


def wrong_types(operation, components) -> str:
    """Every property of the JSON request body with a value no property can take."""
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in body:
        body = components[body["$ref"].rsplit("/", 1)[-1]]
    properties = body.get("properties", {})
    assert properties, operation.get("operationId")
    return json.dumps({name: {"not": ["a", "value"]} for name in properties})


def test_every_api_string_field_has_a_length_limit(cast):
    """An unbounded text field would store a megabyte reason. The schema says every bound."""
    api = APIClient()
    api.force_login(cast.coordinator)
    schema = api.get("/api/v1/schema/?format=json").json()
    components = schema["components"]["schemas"]
    unbounded = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                body = media["schema"]
                if "$ref" in body:
                    body = components[body["$ref"].rsplit("/", 1)[-1]]
                for name, field in body.get("properties", {}).items():
                    if "$ref" in field:
                        field = components[field["$ref"].rsplit("/", 1)[-1]]
                    free_text = field.get("type") == "string" and not ({"format", "enum"} & set(field))
                    if free_text and not field.get("readOnly") and "maxLength" not in field:
                        unbounded.append(f"{method.upper()} {path} {name}")
    assert not unbounded, "\n".join(unbounded)


def test_every_web_form_refuses_bad_input_and_writes_nothing(world):
    failures: list[str] = []
    client = Client()
    client.force_login(world["user"])
    swept = 0
    for route in web_routes():
        url = fill(route, record_id(route, world)) if "<int:pk>" in route else "/" + route
        fields = form_fields(client, url)
        broken = b"reason=%FF%FE&password=%C3%28&" + b"&".join(f"{name}=%FF".encode() for name in fields)
        cases = {
            "broken UTF-8": partial(
                client.generic, "POST", url, broken, content_type="application/x-www-form-urlencoded"
            ),
            # Urlencoded, as a browser sends these forms, so the size guard answers before any view.
            "oversized body": partial(
                client.generic,
                "POST",
                url,
                urlencode({name: OVERSIZED for name in fields or ["reason"]}),
                content_type="application/x-www-form-urlencoded",
            ),
        }
        # A button with no fields (receive this shipment) has no value to get wrong: posting it is
        # the valid request, so only the cases above apply to it.
        if fields:
            cases["wrong types"] = partial(client.post, url, {name: "<script>not-a-value</script>" for name in fields})
        if "<int:pk>" in route:
            cases["unknown id"] = partial(client.post, fill(route, UNKNOWN_ID), {})
        for case, request in cases.items():
            with collected(failures, f"POST /{route}: {case}"):
                before = row_counts()
                response = request()
                # A page may answer 200 (the form again, with the errors), redirect back with a
                # message, or refuse outright; what it may not do is fail or save anything.
                assert response.status_code < 500, (case, response.status_code)
                assert row_counts() == before, case
        swept += 1
    assert swept >= 20
    assert not failures, "\n".join(failures)


def form_fields(client, url) -> list[str]:
    page = client.get(url)
    if page.status_code != 200 or "text/html" not in page.get("Content-Type", ""):
        return []
    names = re.findall(r'<(?:input|select|textarea)[^>]*\sname="([^"]+)"', page.content.decode())
    return sorted({name for name in names if name not in ("csrfmiddlewaretoken", "next", "language")})


def test_every_text_box_of_every_form_says_how_long_it_may_be(world):
    """The browser stops an over-long value before the server has to."""
    client = Client()
    client.force_login(world["user"])
    missing = []
    for route in web_routes():
        url = fill(route, record_id(route, world)) if "<int:pk>" in route else "/" + route
        page = client.get(url)
        if page.status_code != 200 or "text/html" not in page.get("Content-Type", ""):
            continue
        for tag in re.findall(r"<(?:input|textarea)\b[^>]*>", page.content.decode()):
            kind = re.search(r'\stype="([^"]+)"', tag)
            if tag.startswith("<input") and (kind is None or kind.group(1) not in ("text", "search", "email")):
                continue
            if "maxlength=" not in tag:
                missing.append(f"/{route}: {tag[:80]}")
    assert not missing, "\n".join(missing)


SCREENING = {
    "initials": "HM",
    "date_of_birth": "1980-01-01",
    "sex": "M",
    "hospital_record_number": "NT-9",
    "screening_date": "2026-11-20",
    "consent_version": "2.1",
    "consent_date": "2026-11-20",
    "answers": {"IN1": "yes", "IN2": "yes", "EX1": "no", "EX2": "no", "EX3": "no"},
}
LABS = {"neutrophils": 3000, "platelets": 200000, "alt_uln": "1", "ast_uln": "1"}


def test_dates_and_weights_out_of_range_are_refused_at_the_field(world, cast, site):
    failures: list[str] = []
    api = APIClient()
    api.force_login(cast.coordinator)
    with time_machine.travel(datetime.datetime(2026, 11, 21, 2, tzinfo=datetime.UTC), tick=False):
        for day in ("0001-01-01", "9999-12-31", "2026-11-22", "2026-02-30", "1980-13-01", 19800101):
            with collected(failures, f"date of birth {day}"):
                before = row_counts()
                response = api.post("/api/v1/screenings/", {**SCREENING, "date_of_birth": day}, format="json")
                assert response.status_code == 400 and "date_of_birth" in response.json(), response.content
                assert row_counts() == before
        visit = dosing_factories.randomized_participant(
            site, arm_code="TOC", by=cast.coordinator, day0=datetime.date(2026, 11, 20)
        ).visits.get(code="C1")
        for weight in ("-1", "0", "10000", "NaN", "Infinity", "1e400", "seventy", True):
            with collected(failures, f"weight {weight}"):
                before = row_counts()
                response = api.post(
                    f"/api/v1/visits/{visit.pk}/record/",
                    {"actual_date": "2026-11-20", **LABS, "weight_kg": weight},
                    format="json",
                )
                assert response.status_code == 400 and "weight_kg" in response.json(), response.content
                assert row_counts() == before
    assert not failures, "\n".join(failures)


def test_csv_imports_refuse_broken_encodings_and_formula_cells_with_the_line(world, cast):
    failures: list[str] = []
    api = APIClient()
    api.force_login(world["user"])
    from django.core.files.uploadedfile import SimpleUploadedFile

    kit_header = "kit_number,kit_type,content,lot,expiry\n"
    kits = {
        "invalid UTF-8": (kit_header + "K1,INF,active,L1,2028-01-31\n").encode() + b"K2,INF,\xff\xfe,L1,2028-01-31\n",
        "UTF-16": (kit_header + "K3,INF,active,L1,2028-01-31\n").encode("utf-16"),
        "formula cell": (kit_header + "=cmd|' /C calc'!A0,INF,active,L1,2028-01-31\n").encode(),
        "plus formula": (kit_header + "K4,INF,active,+SUM(A1),2028-01-31\n").encode(),
        "not a CSV": b"\x89PNG\r\n\x1a\n\x00\x00",
        "a cell past the CSV field limit": (kit_header + "K5" * 100_000 + ",INF,active,L1,2028-01-31\n").encode(),
        "old Mac line ends": (kit_header + "K6,INF,active,L1,2028-01-31\r=1+1,INF,active,L1,2028-01-31\r").encode(),
    }
    for case, content in kits.items():
        with collected(failures, f"kit import: {case}"):
            before = row_counts()
            response = api.post(
                "/api/v1/supply/kits/import/",
                {"file": SimpleUploadedFile("kits.csv", content, content_type="text/csv")},
                format="multipart",
            )
            assert response.status_code == 400, (case, response.content)
            assert "file" in response.json() or "non_field_errors" in response.json()
            assert row_counts() == before
    lists = {
        "invalid UTF-8": b"stratum,sequence,block,block_size,arm\nNT,1,1,4,\xff\n",
        "formula cell": b"stratum,sequence,block,block_size,arm\n@SUM(1),1,1,4,TOC\n",
        # Found by the fuzzer: a bare carriage return inside a cell was a 500.
        "a bare carriage return": b"stratum,sequence,block,block_size,arm\rNT,1,1,4,T\rOC\n",
        "a cell past the CSV field limit": b"stratum,sequence,block,block_size,arm\n"
        + b"N" * 200_000
        + b",1,1,4,TOC\n",
    }
    web = Client()
    web.force_login(world["user"])
    for case, content in lists.items():
        with collected(failures, f"randomization list import, web form: {case}"):
            before = row_counts()
            response = web.post(
                "/randomization/lists/",
                {
                    "action": "import",
                    "reason": "bad-input sweep",
                    "csv_file": SimpleUploadedFile("list.csv", content, content_type="text/csv"),
                },
            )
            assert response.status_code == 200, (case, response.status_code)
            assert 'class="errorlist' in response.content.decode(), case
            assert row_counts() == before
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            continue  # JSON carries text; the bytes case is the web form's
        with collected(failures, f"randomization list import, API: {case}"):
            before = row_counts()
            response = api.post(
                "/api/v1/randomization/lists/import/", {"csv_text": text, "reason": "sweep"}, format="json"
            )
            assert response.status_code == 400, (case, response.status_code, response.content[:300])
            assert row_counts() == before
    assert not failures, "\n".join(failures)


def test_a_refused_body_is_answered_in_the_users_language_with_the_security_headers(world):
    client = Client()
    client.force_login(world["user"])
    client.cookies["django_language"] = "zh-hans"
    response = client.generic(
        "POST",
        "/screening/new/",
        urlencode({"initials": OVERSIZED}),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 413
    assert "请求过大" in response.content.decode()
    assert "Content-Security-Policy" in response.headers
    broken = client.generic(
        "POST", "/screening/new/", b"initials=%FF", content_type="application/x-www-form-urlencoded"
    )
    assert broken.status_code == 400
    assert "“initials”" in broken.content.decode()


def test_a_screening_dated_in_the_first_centuries_is_refused_at_its_field(cast, site, api_for):
    """Found by the API fuzzer: year 0029 made the plausible-birth check compute year -91 (500)."""
    answer = api_for(cast.coordinator).post(
        "/api/v1/screenings/",
        {
            "initials": "LW",
            "date_of_birth": "2000-02-01",
            "sex": "F",
            "hospital_record_number": "NT-29",
            "screening_date": "0029-01-01",
            "consent_version": "1.0",
            "consent_date": "0029-01-01",
            "answers": {},
        },
        format="json",
    )
    assert answer.status_code == 400
    assert "screening_date" in answer.json()
