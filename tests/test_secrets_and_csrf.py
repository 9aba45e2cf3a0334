"""Every form refuses a post without its CSRF token, and no password, code or token reaches
the logs or an error report. Forms are found from the URL resolver (tests/sweep.py), so a new
form is covered without anyone listing it."""

from __future__ import annotations

import logging
import re

from django.test import Client
from django.views.debug import SafeExceptionReporterFilter

from tests import factories
from tests.sweep import fill, record_id, row_counts, web_routes

SECRET_PASSWORD = "Wr0ng-but-secret-passphrase"
SECRET_CODE = "913377"
# Account pages are not trial data, so the sweep leaves them out; they take a password or code.
ACCOUNT_FORMS = ["accounts/two-factor/"]


def page_of(client, route, world):
    url = fill(route, record_id(route, world)) if "<int:pk>" in route else "/" + route
    response = client.get(url)
    if response.status_code != 200 or "text/html" not in response.get("Content-Type", ""):
        return url, None
    return url, response.content.decode()


def test_every_form_carries_a_csrf_token_and_a_post_without_one_is_refused(world):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(world["user"])
    forms_seen, failures = 0, []
    for route in web_routes():
        url, page = page_of(strict, route, world)
        for form in re.findall(r"<form\b[^>]*method=\"post\"[^>]*>.*?</form>", page or "", re.S | re.I):
            forms_seen += 1
            if 'name="csrfmiddlewaretoken"' not in form:
                failures.append(f"{url}: a form without the token")
        before = row_counts()
        response = strict.post(url, {"reason": "no token", "password": "x"})
        if response.status_code != 403:
            failures.append(f"POST {url} without a token answered {response.status_code}")
        if row_counts() != before:
            failures.append(f"POST {url} without a token wrote rows")
    login = Client(enforce_csrf_checks=True).post("/accounts/login/", {"username": "everyone", "password": "x"})
    assert login.status_code == 403
    assert forms_seen >= 10, forms_seen
    assert not failures, "\n".join(failures)


def test_every_view_that_takes_a_password_or_code_hides_it_from_error_reports(world):
    client = Client()
    client.force_login(world["user"])
    checked, failures = 0, []
    for route in web_routes() + ACCOUNT_FORMS + [f"participants/{world['unsigned_participant']}/"]:
        url, page = page_of(client, route, world)
        if page is None or not re.search(r'name="(password|token)"', page):
            continue
        checked += 1
        response = client.post(url, {"password": SECRET_PASSWORD, "token": SECRET_CODE, "reason": "check"})
        request = response.wsgi_request
        hidden = SafeExceptionReporterFilter().get_post_parameters(request)
        for name in ("password", "token"):
            if hidden.get(name) not in (None, SafeExceptionReporterFilter.cleansed_substitute):
                failures.append(f"{url}: {name} would appear in an error report")
    # Signature, unblinding, list lock and the two-factor setup at least.
    assert checked >= 4, checked
    assert not failures, "\n".join(failures)


def test_no_password_code_or_token_reaches_the_logs(world, cast, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    Client().post("/accounts/login/", {"username": cast.coordinator.username, "password": SECRET_PASSWORD})
    client = Client()
    client.force_login(world["user"])
    for route in web_routes() + ACCOUNT_FORMS:
        url, page = page_of(client, route, world)
        if page is not None and re.search(r'name="(password|token)"', page):
            client.post(url, {"password": SECRET_PASSWORD, "token": SECRET_CODE, "reason": "check"})
    token = factories.api_key(cast.investigator)
    api = Client(HTTP_AUTHORIZATION=f"Token {token}")
    api.get("/api/v1/me/")
    api.post(
        f"/api/v1/participants/{world['participant']}/unblind/",
        {"password": SECRET_PASSWORD, "reason": "check"},
        content_type="application/json",
    )
    Client(HTTP_AUTHORIZATION="Token " + "f" * 40).get("/api/v1/me/")
    logged = "\n".join(
        f"{record.getMessage()} {record.args!r} {record.exc_text or ''} {record.__dict__!r}"
        for record in caplog.records
    )
    printed = "".join(capfd.readouterr())
    assert caplog.records, "the flows above log something (a refused login at least)"
    for secret in (SECRET_PASSWORD, SECRET_CODE, token, "f" * 40):
        assert secret not in logged
        assert secret not in printed
