"""Optional TOTP two-factor authentication (django-otp), for the users who can see arms.

- Anyone may enrol an authenticator app at /accounts/two-factor/. From then on a login is
  complete only after the 6-digit code: until then every page sends the user to the code page
  and the API answers 403.
- With TWO_FACTOR_FOR_UNBLINDED on, a user who can reveal an arm (see access.is_unblinded)
  must enrol before using anything else.
- Breaking the blind and locking a randomization list need a session verified by the code when
  the user has a device. An API token is never verified, so these two acts are refused over a
  token for such a user; everything else a token may do is unchanged.

django-otp's device table is not trial data and holds the secret key, so it has no audit
trigger (its JSON would carry the key into the trail). Enrolment and removal are written to the
audit trail here instead, without the key."""

from __future__ import annotations

import django_otp
import segno
from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext_lazy as _
from django_otp.plugins.otp_totp.models import TOTPDevice

from trialsite import access
from trialsite.exceptions import TokenIncorrect, TwoFactorRequired
from trialsite.models import AuditEvent
from trialsite.reauth import confirm_password
from trialsite.security_events import TWO_FACTOR_DEVICE, security_event

DEVICE_NAME = "Authenticator app"
# The session remembers whether the user has a confirmed device, so that pages do not ask the
# database on every request; it is set at login and whenever the device changes.
SESSION_ENROLLED = "two_factor_enrolled"


def required_for(user) -> bool:
    return bool(getattr(settings, "TWO_FACTOR_FOR_UNBLINDED", False)) and access.is_unblinded(user)


def confirmed_device(user) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def is_verified(user) -> bool:
    """Verified by a code in this session (django-otp's middleware sets `is_verified`; a user
    authenticated by an API token has no such session and is not)."""
    check = getattr(user, "is_verified", None)
    return bool(check and check())


def remember_enrolment(request, enrolled: bool) -> None:
    if hasattr(request, "session"):
        request.session[SESSION_ENROLLED] = enrolled


def on_login(sender, request, user, **kwargs) -> None:
    if request is not None and hasattr(request, "session"):
        request.session[SESSION_ENROLLED] = TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def is_enrolled(request) -> bool:
    """From the session when known, else asked once and remembered."""
    enrolled = request.session.get(SESSION_ENROLLED)
    if enrolled is None:
        enrolled = TOTPDevice.objects.filter(user=request.user, confirmed=True).exists()
        request.session[SESSION_ENROLLED] = enrolled
    return enrolled


def _audit(*, user, device: TOTPDevice, action: str, reason: str) -> None:
    # Never the secret: the device's id, owner, name and whether it was confirmed.
    values = {"id": device.pk, "user_id": user.pk, "name": device.name, "confirmed": device.confirmed}
    security_event(
        actor=user,
        table=TWO_FACTOR_DEVICE,
        record_pk=str(device.pk),
        action=action,
        reason=reason,
        old_values=values if action == AuditEvent.Action.DELETE else None,
        new_values=None if action == AuditEvent.Action.DELETE else values,
    )


def enrolment_start(user) -> TOTPDevice:
    """The unconfirmed device whose secret the user is about to scan (made once, then reused
    until confirmed, so reloading the page does not change the QR code)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    return device or TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)


def qr_svg(device: TOTPDevice) -> str:
    """The otpauth:// URL as inline SVG markup (no image URL, so the strict CSP holds)."""
    return segno.make(device.config_url, error="m").svg_inline(
        scale=4, title=str(_("Scan with your authenticator app"))
    )


def enrolment_confirm(*, request, token: str) -> TOTPDevice:
    """Confirm the pending device with a code it produced; the session counts as verified."""
    user = request.user
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).order_by("pk").first()
        if device is None or not device.verify_is_allowed()[0] or not device.verify_token((token or "").strip()):
            raise TokenIncorrect()
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        # Only one authenticator per user: a previous one stops working now.
        for previous in TOTPDevice.objects.filter(user=user, confirmed=True).exclude(pk=device.pk):
            _audit(user=user, device=previous, action=AuditEvent.Action.DELETE, reason="two-factor device replaced")
            previous.delete()
        _audit(user=user, device=device, action=AuditEvent.Action.INSERT, reason="two-factor device enrolled")
    django_otp.login(request, device)
    remember_enrolment(request, True)
    return device


def verify(*, request, token: str) -> TOTPDevice:
    """The second step of a login: check the code (django-otp throttles repeated failures)."""
    device = confirmed_device(request.user)
    verified = device and django_otp.verify_token(request.user, device.persistent_id, (token or "").strip())
    if not verified:
        raise TokenIncorrect()
    django_otp.login(request, verified)
    return verified


def device_remove(*, request, password: str) -> None:
    """Turn two-factor off for oneself; the password is asked again."""
    user = request.user
    confirm_password(user=user, password=password, request=request)
    with transaction.atomic():
        for device in TOTPDevice.objects.filter(user=user):
            if device.confirmed:
                _audit(user=user, device=device, action=AuditEvent.Action.DELETE, reason="two-factor device removed")
            device.delete()
    request.session.pop(django_otp.DEVICE_ID_SESSION_KEY, None)
    remember_enrolment(request, False)


def require_verified(*, user, request=None) -> None:
    """Refuse a sensitive act by a user who has a device unless this session entered the code."""
    if not TOTPDevice.objects.filter(user=user, confirmed=True).exists():
        if required_for(user):
            raise TwoFactorRequired()
        return
    if request is None or not is_verified(getattr(request, "user", None)):
        raise TwoFactorRequired()
