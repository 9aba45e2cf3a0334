"""Optional TOTP two-factor authentication: enrolment with a real code, login needing the code,
forced enrolment of unblinded roles when the trial asks for it, and the two most sensitive acts
(breaking the blind, locking a list) refused without a verified session."""

from __future__ import annotations

import datetime
import time

import pytest
import time_machine
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from randomization import services as randomization_services
from tests import factories
from trialsite.models import AuditEvent

NOW = datetime.datetime(2026, 11, 25, 3, 0, tzinfo=datetime.UTC)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def code_for(device: TOTPDevice) -> str:
    """What the authenticator app shows now (RFC 6238, from the device's own secret; the clock
    is frozen by time-machine)."""
    generator = TOTP(device.bin_key, step=device.step, t0=device.t0, digits=device.digits)
    generator.time = time.time()
    return f"{generator.token():0{device.digits}d}"


def log_in(user) -> Client:
    client = Client()
    response = client.post("/accounts/login/", {"username": user.username, "password": factories.PASSWORD})
    assert response.status_code == 302
    return client


def enrol(client: Client, user, frozen) -> TOTPDevice:
    page = client.get("/accounts/two-factor/")
    assert page.status_code == 200 and b"<svg" in page.content
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    response = client.post("/accounts/two-factor/", {"token": code_for(device)})
    assert response.status_code == 302, response.content.decode()
    device.refresh_from_db()
    assert device.confirmed
    # The next code comes from the next 30-second step (a code is accepted once).
    frozen.shift(datetime.timedelta(seconds=30))
    return device


def test_enrolling_needs_a_code_from_the_scanned_secret_and_is_audited(cast, frozen):
    statistician = cast.statistician
    client = log_in(statistician)
    page = client.get("/accounts/two-factor/").content.decode()
    device = TOTPDevice.objects.get(user=statistician, confirmed=False)
    assert "<svg" in page and 'id="two-factor-secret"' in page
    # Reloading shows the same secret: the pending device is reused.
    client.get("/accounts/two-factor/")
    assert TOTPDevice.objects.filter(user=statistician).count() == 1

    wrong = client.post("/accounts/two-factor/", {"token": "000000" if code_for(device) != "000000" else "111111"})
    assert wrong.status_code == 200
    assert "The code is not correct" in wrong.content.decode()
    assert not TOTPDevice.objects.get(pk=device.pk).confirmed
    malformed = client.post("/accounts/two-factor/", {"token": "12ab"})
    assert "Enter the 6 digits" in malformed.content.decode()

    frozen.shift(datetime.timedelta(seconds=60))  # past django-otp's throttle delay
    enrol(client, statistician, frozen)
    event = AuditEvent.objects.get(table_name="otp_totp_totpdevice", action="INSERT")
    assert event.actor == statistician and event.reason == "two-factor device enrolled"
    assert "key" not in event.new_values  # the secret never enters the audit trail


def test_a_user_with_a_device_must_enter_the_code_after_the_password(cast, frozen):
    statistician = cast.statistician
    device = enrol(log_in(statistician), statistician, frozen)

    client = log_in(statistician)
    page = client.get("/randomization/lists/")
    assert page.status_code == 302 and page.url.startswith("/accounts/two-factor/verify/")
    api = client.get("/api/v1/me/")
    assert api.status_code == 403 and "two-factor code" in api.json()["detail"]

    wrong = client.post("/accounts/two-factor/verify/", {"token": "999999", "next": "/randomization/lists/"})
    assert "The code is not correct" in wrong.content.decode()
    assert client.get("/randomization/lists/").status_code == 302

    frozen.shift(datetime.timedelta(seconds=60))
    right = client.post(
        "/accounts/two-factor/verify/",
        {"token": code_for(device), "next": "/randomization/lists/"},
    )
    assert right.status_code == 302 and right.url == "/randomization/lists/"
    assert client.get("/randomization/lists/").status_code == 200
    assert client.get("/api/v1/me/").status_code == 200


def test_the_next_parameter_cannot_send_the_user_to_another_site(cast, frozen):
    statistician = cast.statistician
    device = enrol(log_in(statistician), statistician, frozen)
    client = log_in(statistician)
    response = client.post(
        "/accounts/two-factor/verify/",
        {"token": code_for(device), "next": "https://evil.example/"},
    )
    assert response.status_code == 302 and response.url == "/"


def test_the_setting_makes_unblinded_roles_enrol_but_not_blinded_ones(cast, settings, frozen):
    settings.TWO_FACTOR_FOR_UNBLINDED = True
    for unblinded in (cast.statistician, cast.supply_manager, cast.investigator):
        response = log_in(unblinded).get("/")
        assert response.status_code == 302 and response.url.startswith("/accounts/two-factor/"), unblinded
    for blinded in (cast.coordinator, cast.pharmacist, cast.monitor):
        assert log_in(blinded).get("/").status_code == 200, blinded

    client = log_in(cast.statistician)
    assert "set up two-factor authentication" in client.get("/accounts/two-factor/").content.decode()
    assert client.get("/api/v1/me/").status_code == 403
    enrol(client, cast.statistician, frozen)
    assert client.get("/").status_code == 200


def test_unblinding_and_locking_need_a_verified_session_when_the_user_has_a_device(trial, site, cast, frozen):
    investigator, statistician = cast.investigator, cast.statistician
    randomization_list = randomization_services.list_generate(
        trial=trial, seed="2fa", slots_per_stratum=8, created_by=statistician
    )
    statistician_device = enrol(log_in(statistician), statistician, frozen)

    # Over a token (never verified, even one made from a verified session) the list cannot be
    # locked, whatever the password.
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {factories.api_key(statistician)}")
    refused = api.post(f"/api/v1/randomization/lists/{randomization_list.pk}/lock/", {"password": factories.PASSWORD})
    assert refused.status_code == 403 and "verified with your two-factor code" in str(refused.json())
    randomization_list.refresh_from_db()
    assert randomization_list.locked_at is None

    client = log_in(statistician)
    client.post(
        "/accounts/two-factor/verify/",
        {"token": code_for(statistician_device)},
    )
    locked = client.post(
        f"/randomization/lists/{randomization_list.pk}/", {"password": factories.PASSWORD}, follow=True
    )
    assert locked.status_code == 200
    randomization_list.refresh_from_db()
    assert randomization_list.locked_at is not None

    participant = factories.make_participant(site, by=cast.coordinator)
    randomization_services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    investigator_device = enrol(log_in(investigator), investigator, frozen)
    pi = log_in(investigator)
    # Logged in with the password only: sent to the code page, and the service refuses too.
    assert pi.post(f"/participants/{participant.pk}/unblind/", {"password": factories.PASSWORD}).status_code == 302
    with pytest.raises(Exception, match="verified with your two-factor code"):
        randomization_services.participant_unblind(
            participant=participant, unblinded_by=investigator, password=factories.PASSWORD, reason="sepsis"
        )
    assert not participant.unblindings.exists()
    pi.post(
        "/accounts/two-factor/verify/",
        {"token": code_for(investigator_device)},
    )
    unblinded = pi.post(
        f"/participants/{participant.pk}/unblind/",
        {"password": factories.PASSWORD, "reason": "suspected anaphylaxis"},
        follow=True,
    )
    assert unblinded.status_code == 200
    participant.refresh_from_db()
    assert participant.unblinded_at is not None


def test_removing_the_device_needs_the_password_and_is_audited(cast, frozen):
    statistician = cast.statistician
    client = log_in(statistician)
    enrol(client, statistician, frozen)
    wrong = client.post("/accounts/two-factor/", {"remove": "1", "password": "not-it"})
    assert "The password is not correct" in wrong.content.decode()
    assert TOTPDevice.objects.filter(user=statistician, confirmed=True).exists()

    client.post("/accounts/two-factor/", {"remove": "1", "password": factories.PASSWORD})
    assert not TOTPDevice.objects.filter(user=statistician).exists()
    removed = AuditEvent.objects.get(table_name="otp_totp_totpdevice", action="DELETE")
    assert removed.actor == statistician and removed.reason == "two-factor device removed"
    # With no device the next login needs no code.
    assert log_in(statistician).get("/").status_code == 200


def test_the_two_factor_pages_speak_simplified_chinese(cast, frozen):
    client = log_in(cast.statistician)
    client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    page = client.get("/accounts/two-factor/").content.decode()
    assert "双重验证" in page and "6 位验证码" in page
