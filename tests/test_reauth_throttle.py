"""Wrong signature passwords are throttled on their own and never lock anyone out of logging in
or of emergency unblinding beyond a short wait."""

from __future__ import annotations

import datetime
import logging

import pytest
import time_machine
from axes.models import AccessAttempt
from django.core import mail
from django.test import Client

from enrollment.models import Participant
from randomization.models import Unblinding
from tests import dosing_factories, factories
from trialsite.exceptions import PasswordIncorrect
from trialsite.reauth import ReentryThrottled, confirm_password, seconds_to_wait

NOW = datetime.datetime(2026, 11, 21, 2, 0, tzinfo=datetime.UTC)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def sign(client, participant, password):
    return client.post(f"/participants/{participant.pk}/", {"action": "sign", "password": password})


def test_five_wrong_signatures_then_the_pi_logs_in_and_unblinds(
    cast, site, client_for, clock, caplog, django_capture_on_commit_callbacks
):
    unsigned = factories.make_participant(site, by=cast.coordinator)
    randomized = dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    pi = client_for(cast.investigator)
    caplog.set_level(logging.WARNING, logger="trialsite.security")

    errors = []
    for _ in range(5):
        page = sign(pi, unsigned, "mistyped")
        assert page.status_code == 200
        errors.append(page.context["sign_form"].errors["password"][0])
    assert errors[:2] == ["The password is not correct."] * 2
    # The third wrong one starts a one-minute wait, shown at the field; later tries are not checked.
    assert errors[2] == "Too many wrong passwords. Wait 60 seconds, then try again."
    assert errors[4] == "Too many wrong passwords. Wait 60 seconds, then try again."
    assert "mistyped" not in caplog.text and "user=investigator" in caplog.text
    assert not AccessAttempt.objects.exists()  # never a failed login

    # The emergency waits the rest of the minute, no longer; the password is then checked.
    clock.shift(datetime.timedelta(seconds=20))
    too_soon = pi.post(f"/participants/{randomized.pk}/unblind/", {"reason": "anaphylaxis", "password": "x"})
    assert too_soon.context["form"].errors["password"] == ["Too many wrong passwords. Wait 40 seconds, then try again."]
    clock.shift(datetime.timedelta(seconds=41))
    with django_capture_on_commit_callbacks(execute=True):
        page = pi.post(
            f"/participants/{randomized.pk}/unblind/", {"reason": "anaphylaxis", "password": factories.PASSWORD}
        )
    assert page.context["arm"].code == "TOC"
    assert Participant.objects.get(pk=randomized.pk).unblinded_at is not None
    assert Unblinding.objects.filter(participant=randomized).count() == 1
    assert len(mail.outbox) == 1

    # Logging in (elsewhere, with the right password) is not locked.
    fresh = Client()
    answer = fresh.post("/accounts/login/", {"username": "investigator", "password": factories.PASSWORD})
    assert answer.status_code == 302
    assert fresh.get("/").status_code == 200


def test_the_count_starts_again_after_a_right_password_and_at_login(cast, clock, rf):
    pi = cast.investigator
    for _ in range(2):
        with pytest.raises(PasswordIncorrect) as refused:
            confirm_password(user=pi, password="guess")
        assert not isinstance(refused.value, ReentryThrottled)
    confirm_password(user=pi, password=factories.PASSWORD)
    for _ in range(2):
        with pytest.raises(PasswordIncorrect) as refused:
            confirm_password(user=pi, password="guess")
        assert not isinstance(refused.value, ReentryThrottled)
    with pytest.raises(ReentryThrottled) as throttled:
        confirm_password(user=pi, password="guess")
    assert throttled.value.status_code == 429 and throttled.value.field == "password"
    # Even the right password waits: guessing is not checked during the wait.
    with pytest.raises(ReentryThrottled):
        confirm_password(user=pi, password=factories.PASSWORD)
    assert seconds_to_wait(pi) == 60
    Client().post("/accounts/login/", {"username": "investigator", "password": factories.PASSWORD})
    assert seconds_to_wait(pi) == 0
    confirm_password(user=pi, password=factories.PASSWORD)


def test_one_users_wrong_passwords_do_not_slow_another(cast, clock):
    for _ in range(3):
        with pytest.raises(PasswordIncorrect):
            confirm_password(user=cast.investigator, password="guess")
    assert seconds_to_wait(cast.investigator) == 60
    assert seconds_to_wait(cast.coordinator) == 0
    confirm_password(user=cast.coordinator, password=factories.PASSWORD)


def test_the_api_answers_429_while_the_wait_lasts(cast, site, api_for, clock):
    participant = factories.make_participant(site, by=cast.coordinator)
    api = api_for(cast.investigator)
    path = f"/api/v1/participants/{participant.screening.pk}/sign-eligibility/"
    codes = [api.post(path, {"password": "nope"}).status_code for _ in range(3)]
    assert codes == [403, 403, 429]
    answer = api.post(path, {"password": factories.PASSWORD})
    assert answer.status_code == 429 and "Wait 60 seconds" in answer.content.decode()
    clock.shift(datetime.timedelta(seconds=60))
    # The password is checked again (the participant may already be signed: then 409, not 403).
    assert api.post(path, {"password": factories.PASSWORD}).status_code in (200, 201, 409)
