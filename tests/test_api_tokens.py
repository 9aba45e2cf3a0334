"""API tokens (issue 13, attack 6): a supply manager whose sessions need a TOTP code read every
arm through a DRF token made without it, and the token never expired. Tokens are now our own:
made from a session (verified by the code for anyone who can see an arm), 8 hours long,
revocable, audited, and only a hash of the key is kept, outside the audit trail."""

from __future__ import annotations

import datetime
import hashlib
import re

import pytest
import time_machine
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from randomization import services as randomization_services
from tests import factories
from tests.test_two_factor import code_for, log_in
from trialsite import tokens
from trialsite.audit import audit_context
from trialsite.models import ApiToken, ApiTokenKey, AuditEvent, Role

NOW = datetime.datetime(2026, 11, 25, 3, 0, tzinfo=datetime.UTC)
KEY = re.compile(r'<code id="new-token-key">([A-Za-z0-9_-]+)</code>')


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def api_with(key: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return api


def make_token_on_the_page(client: Client, name: str = "script") -> str:
    page = client.post("/accounts/tokens/", {"name": name})
    assert page.status_code == 200, page.content.decode()
    [key] = KEY.findall(page.content.decode())
    return key


def test_a_supply_manager_who_needs_two_factor_gets_no_token_without_the_code(cast, frozen, settings):
    settings.TWO_FACTOR_FOR_UNBLINDED = True
    supply_manager = cast.supply_manager

    # No authenticator yet: sent to set one up, on the page and over the API.
    client = log_in(supply_manager)
    answer = client.post("/accounts/tokens/", {"name": "stock script"})
    assert answer.status_code == 302 and answer["Location"].startswith("/accounts/two-factor/")
    assert client.post("/api/v1/tokens/", {"name": "stock script"}).status_code == 403
    # (Enrolled as tests/test_two_factor.py shows; here the device is simply stored.)
    device = TOTPDevice.objects.create(user=supply_manager, name="Authenticator app", confirmed=True)

    # A new login with the password only: the code is asked before any token is made.
    password_only = log_in(supply_manager)
    answer = password_only.post("/accounts/tokens/", {"name": "stock script"})
    assert answer.status_code == 302 and answer["Location"].startswith("/accounts/two-factor/verify/")
    refused = password_only.post("/api/v1/tokens/", {"name": "stock script"}, content_type="application/json")
    assert refused.status_code == 403
    assert not ApiToken.objects.filter(user=supply_manager).exists()

    password_only.post("/accounts/two-factor/verify/", {"token": code_for(device)})
    key = make_token_on_the_page(password_only)
    token = ApiToken.objects.get(user=supply_manager)
    assert token.second_factor
    assert api_with(key).get("/api/v1/me/").status_code == 200


def test_an_unblinded_user_without_an_authenticator_is_told_to_set_one_up(cast, frozen):
    client = log_in(cast.supply_manager)
    page = client.post("/accounts/tokens/", {"name": "stock script"})
    assert page.status_code == 400
    assert "/accounts/two-factor/" in page.content.decode()
    api = APIClient()
    api.force_login(cast.statistician)
    refused = api.post("/api/v1/tokens/", {"name": "export script"}, format="json")
    assert refused.status_code == 403 and "/accounts/two-factor/" in str(refused.json())
    assert not ApiToken.objects.exists()


def test_a_token_made_without_the_code_is_refused_once_its_user_can_see_arms(site, cast, frozen):
    # Made by a blinded coordinator from a plain session: allowed, and it works.
    coordinator = cast.coordinator
    key = make_token_on_the_page(log_in(coordinator))
    assert not ApiToken.objects.get(user=coordinator).second_factor
    assert api_with(key).get("/api/v1/me/").status_code == 200

    # The coordinator is then made the site's supply manager: the token stops working.
    with audit_context(reason="test: new role"):
        coordinator.trial_roles.create(site=site, role=Role.SUPPLY_MANAGER)
    refused = api_with(key).get("/api/v1/me/")
    assert refused.status_code == 401
    assert "two-factor" in refused.json()["detail"]

    # So is any token of an unblinded user that was not made from a verified session.
    _token, unverified_key = tokens.token_issue(user=cast.supply_manager, second_factor=False)
    assert api_with(unverified_key).get("/api/v1/me/").status_code == 401


def test_a_token_works_for_eight_hours_and_not_a_minute_more(cast, frozen):
    key = make_token_on_the_page(log_in(cast.coordinator))
    api = api_with(key)
    frozen.shift(datetime.timedelta(hours=7, minutes=59))
    assert api.get("/api/v1/me/").status_code == 200
    frozen.shift(datetime.timedelta(minutes=2))
    expired = api.get("/api/v1/me/")
    assert expired.status_code == 401
    assert "expired" in expired.json()["detail"] and "/accounts/tokens/" in expired.json()["detail"]
    assert expired["WWW-Authenticate"] == "Token"


def test_the_lifetime_is_a_setting(cast, frozen, settings):
    settings.API_TOKEN_HOURS = 1
    token, _key = tokens.token_issue(user=cast.monitor)
    assert token.expires_at == NOW + datetime.timedelta(hours=1)


def test_a_revoked_token_is_refused_at_once(cast, frozen):
    client = log_in(cast.monitor)
    key = make_token_on_the_page(client)
    token = ApiToken.objects.get(user=cast.monitor)
    assert api_with(key).get("/api/v1/me/").status_code == 200
    assert client.post("/accounts/tokens/", {"revoke": token.pk}).status_code == 302
    refused = api_with(key).get("/api/v1/me/")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    token.refresh_from_db()
    assert token.revoked_at == NOW and token.revoked_by == cast.monitor


def test_tokens_over_the_api_list_revoke_and_never_make_another_token(cast, frozen):
    api = APIClient()
    api.force_login(cast.pharmacist)
    made = api.post("/api/v1/tokens/", {"name": "label printer"}, format="json")
    assert made.status_code == 201
    key, token_id = made.json()["key"], made.json()["id"]
    listed = api.get("/api/v1/tokens/").json()["results"]
    assert [entry["name"] for entry in listed] == ["label printer"]
    assert "key" not in listed[0] and "key_hash" not in str(listed)

    # A token cannot make a token: a stolen one would never expire.
    refused = api_with(key).post("/api/v1/tokens/", {"name": "forever"}, format="json")
    assert refused.status_code == 403
    assert ApiToken.objects.filter(user=cast.pharmacist).count() == 1

    # Revoked from a session too; another user's token does not exist for them.
    assert api_with(key).delete(f"/api/v1/tokens/{token_id}/").status_code == 403
    other = APIClient()
    other.force_login(cast.coordinator)
    assert other.delete(f"/api/v1/tokens/{token_id}/").status_code == 404
    assert api_with(key).get("/api/v1/me/").status_code == 200
    revoked = api.delete(f"/api/v1/tokens/{token_id}/")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert api_with(key).get("/api/v1/me/").status_code == 401


def test_unknown_and_drf_style_tokens_are_refused_with_401(db):
    for header in ("Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", "Token a b", "token"):
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=header)
        answer = api.get("/api/v1/me/")
        assert answer.status_code == 401, header


def test_making_and_revoking_a_token_are_audited_without_the_key_or_its_hash(cast, frozen):
    client = log_in(cast.monitor)
    key = make_token_on_the_page(client, name="monthly report")
    token = ApiToken.objects.get(user=cast.monitor)
    client.post("/accounts/tokens/", {"revoke": token.pk})

    made, revoked = AuditEvent.objects.filter(table_name="trialsite_apitoken", record_pk=str(token.pk)).order_by("id")
    assert made.action == "INSERT" and made.actor == cast.monitor and made.reason == "API token created"
    assert made.new_values["name"] == "monthly report"
    assert revoked.action == "UPDATE" and revoked.changed_fields == ["revoked_at", "revoked_by_id"]
    assert revoked.reason == "API token revoked"

    stored = ApiTokenKey.objects.get(token=token)
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert not AuditEvent.objects.filter(table_name="trialsite_apitokenkey").exists()
    trail = str(list(AuditEvent.objects.values_list("old_values", "new_values")))
    assert key not in trail and stored.key_hash not in trail


def test_the_page_lists_tokens_without_their_keys(cast, frozen):
    client = log_in(cast.monitor)
    key = make_token_on_the_page(client, name="nightly")
    page = client.get("/accounts/tokens/").content.decode()
    assert "nightly" in page and key not in page
    assert "It works for 8 hours" in page
    assert client.get("/accounts/tokens/")["Cache-Control"].startswith("max-age=0")


def test_anonymous_users_get_no_token_page(client, db):
    assert client.get("/accounts/tokens/").status_code == 302
    assert client.get("/api/v1/tokens/").status_code == 401


def test_a_factory_user_token_still_reaches_the_api(site, db):
    user = factories.make_user(Role.COORDINATOR, site)
    _token, key = tokens.token_issue(user=user)
    assert api_with(key).get("/api/v1/sites/").status_code == 200


def test_even_a_token_made_with_the_code_cannot_lock_a_list_or_unblind(trial, cast, frozen):
    statistician = cast.statistician
    TOTPDevice.objects.create(user=statistician, name="Authenticator app", confirmed=True)
    randomization_list = randomization_services.list_generate(
        trial=trial, seed="token", slots_per_stratum=4, created_by=statistician
    )
    _token, key = tokens.token_issue(user=statistician, second_factor=True)
    api = api_with(key)
    assert api.get("/api/v1/randomization/lists/").status_code == 200
    refused = api.post(f"/api/v1/randomization/lists/{randomization_list.pk}/lock/", {"password": factories.PASSWORD})
    assert refused.status_code == 403 and "verified with your two-factor code" in str(refused.json())
