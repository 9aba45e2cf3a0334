import pytest
from django.conf import settings

from tests import factories
from trialsite.exceptions import PasswordIncorrect
from trialsite.models import Role
from trialsite.reauth import confirm_password


@pytest.fixture
def coordinator(site):
    return factories.make_user(Role.COORDINATOR, site, username="li.na")


def log_in(client, password):
    return client.post("/accounts/login/", {"username": "li.na", "password": password})


def test_a_coordinator_logs_in_and_sees_their_role_and_site(client, coordinator):
    answer = log_in(client, factories.PASSWORD)
    assert answer.status_code == 302
    home = client.get("/")
    assert home.status_code == 200
    assert b"Site coordinator" in home.content
    assert b"NT" in home.content


def test_the_account_locks_after_five_failed_logins_even_for_the_right_password(client, coordinator):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in(client, "wrong password").status_code == 200
    assert log_in(client, "wrong password").status_code == 429
    locked = log_in(client, factories.PASSWORD)
    assert locked.status_code == 429
    assert b"Account locked" in locked.content
    assert client.get("/").status_code == 302


def test_sessions_expire_after_thirty_idle_minutes():
    assert settings.SESSION_COOKIE_AGE == 30 * 60
    assert settings.SESSION_SAVE_EVERY_REQUEST


def test_the_session_cookie_of_a_logged_in_user_carries_the_timeout(client, coordinator):
    log_in(client, factories.PASSWORD)
    assert client.cookies["sessionid"]["max-age"] in ("", 1800, "1800")  # expires at browser close or 30 min


def test_password_re_entry_accepts_the_right_password_and_refuses_a_wrong_one(coordinator):
    confirm_password(user=coordinator, password=factories.PASSWORD)
    with pytest.raises(PasswordIncorrect) as refused:
        confirm_password(user=coordinator, password="not it")
    assert refused.value.field == "password"
    with pytest.raises(PasswordIncorrect):
        confirm_password(user=coordinator, password="")


def test_security_headers_are_sent(client, coordinator):
    log_in(client, factories.PASSWORD)
    page = client.get("/")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"


def test_a_page_renders_in_simplified_chinese(client, coordinator):
    log_in(client, factories.PASSWORD)
    page = client.get("/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert '<html lang="zh-hans">' in page.content.decode()
    assert "您的角色" in page.content.decode()


def test_failed_password_re_entries_never_count_as_failed_logins(client, rf, coordinator):
    """Re-entries are throttled on their own (tests/test_reauth_throttle.py): a PI who mistypes
    while signing is never locked out of logging in."""
    request = rf.post("/")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        with pytest.raises(PasswordIncorrect):
            confirm_password(user=coordinator, password="guess", request=request)
    assert log_in(client, factories.PASSWORD).status_code == 302
