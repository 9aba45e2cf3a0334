"""Password re-entry for actions that must be attributable beyond a session: e-signatures,
locking a randomization list and emergency unblinding. The password is checked again at the
moment of the act.

Wrong re-entries are throttled on their own, per user, and never count as failed logins: a PI
who mistypes while signing or in an emergency must not be locked out of logging in for half an
hour (django-axes guards the login form only). After REAUTH_FREE_TRIES wrong passwords in a row
the next try waits REAUTH_WAIT_SECONDS, which is slow enough to defeat guessing from a stolen
session and short enough for an emergency."""

from __future__ import annotations

import logging
import math

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from django.utils.translation import ngettext

from trialsite.exceptions import PasswordIncorrect
from trialsite.security_events import REAUTHENTICATION, security_event

logger = logging.getLogger("trialsite.security")


class ReentryThrottled(PasswordIncorrect):
    """Too many wrong re-entries in a row: the password is not even checked until the wait ends."""

    status_code = 429

    def __init__(self, seconds: int):
        self.seconds = seconds
        super().__init__(
            ngettext(
                "Too many wrong passwords. Wait %(seconds)d second, then try again.",
                "Too many wrong passwords. Wait %(seconds)d seconds, then try again.",
                seconds,
            )
            % {"seconds": seconds}
        )


def _free_tries() -> int:
    return int(getattr(settings, "REAUTH_FREE_TRIES", 3))


def _wait_seconds() -> int:
    return int(getattr(settings, "REAUTH_WAIT_SECONDS", 60))


def _user_key(user) -> str:
    # The session hash (an HMAC of the password hash) as well as the id: a new password starts
    # afresh, and a count left in Redis never lands on another account that reuses an id after
    # a restore (or in a recreated test database).
    return f"{user.pk}:{user.get_session_auth_hash()[:16]}"


def _failures_key(user) -> str:
    return f"reauth:failures:{_user_key(user)}"


def _wait_until_key(user) -> str:
    return f"reauth:wait-until:{_user_key(user)}"


# Kept well beyond the wait so a count is not forgotten between tries; the wait itself is
# measured against the clock, not the cache's expiry.
_REMEMBER_SECONDS = 60 * 60


def seconds_to_wait(user) -> int:
    """How long `user` must wait before the next re-entry is checked (0: not throttled)."""
    wait_until = cache.get(_wait_until_key(user))
    if wait_until is None:
        return 0
    return max(0, math.ceil(wait_until - timezone.now().timestamp()))


def throttle_clear(user) -> None:
    """Forget wrong re-entries: after a right one, and at each log-in with the password."""
    cache.delete_many([_failures_key(user), _wait_until_key(user)])


def _record_failure(user, *, request) -> None:
    key = _failures_key(user)
    cache.add(key, 0, _REMEMBER_SECONDS)
    failures = cache.incr(key)
    logger.warning(
        "password re-entry refused: user=%s (id %s) path=%s address=%s failures in a row=%d",
        user.get_username(),
        user.pk,
        getattr(request, "path", "-"),
        (request.META.get("REMOTE_ADDR") if request is not None else None) or "-",
        failures,
    )
    # In the audit trail too (never the password): a monitor sees who was refused, where, how often.
    security_event(
        actor=user,
        table=REAUTHENTICATION,
        record_pk=str(user.pk),
        action="INSERT",
        reason="password re-entry refused",
        new_values={"path": getattr(request, "path", ""), "failures_in_a_row": failures},
    )
    if failures >= _free_tries():
        cache.set(_wait_until_key(user), timezone.now().timestamp() + _wait_seconds(), _REMEMBER_SECONDS)
        cache.set(key, 0, _REMEMBER_SECONDS)


def confirm_password(*, user, password: str, request=None) -> None:
    """Raise PasswordIncorrect unless `password` is `user`'s current password, or
    ReentryThrottled while `user` must wait after too many wrong ones.

    The hash is checked directly, not through the authentication backends, so a wrong
    re-entry is never a failed login (and an account locked at the login form can still sign
    in a session it already has). Refusals are logged without the password."""
    if not user.is_active:
        raise PasswordIncorrect()
    wait = seconds_to_wait(user)
    if wait:
        logger.warning(
            "password re-entry throttled: user=%s (id %s) path=%s wait=%ds",
            user.get_username(),
            user.pk,
            getattr(request, "path", "-"),
            wait,
        )
        raise ReentryThrottled(wait)
    if not password or not user.check_password(password):
        _record_failure(user, request=request)
        wait = seconds_to_wait(user)
        if wait:
            raise ReentryThrottled(wait)
        raise PasswordIncorrect()
    throttle_clear(user)
