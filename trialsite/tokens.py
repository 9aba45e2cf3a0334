"""API tokens of our own: expiring, revocable, audited, and for unblinded users only from a
session verified by the second factor.

- A token is a random key shown once; only its SHA-256 is stored (ApiTokenKey, outside the
  audit trail). It lives API_TOKEN_HOURS (8 by default) and its user can revoke it sooner.
- Anyone who can view allocation or break the blind (`access.is_unblinded`) makes a token only
  from a session verified by the two-factor code; without an authenticator app they must set one
  up first. A token is refused at use when its user is unblinded and it was not made that way
  (made before a role was added, for instance).
- A token cannot make another token, so a stolen one does not outlive its expiry.
- Even a token made with the code does not count as a verified session for the two acts that
  ask for the code each time (breaking the blind, locking a randomization list)."""

from __future__ import annotations

import datetime
import hashlib
import secrets

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from trialsite import access, two_factor
from trialsite.audit import audit_context
from trialsite.exceptions import TokenNeedsSecondFactor, TokenNeedsSecondFactorSetUp, TokenNeedsSession
from trialsite.models import ApiToken, ApiTokenKey

KEYWORD = "Token"
# How stale `last_used_at` may get: one write per token per minute at most, not per request.
LAST_USE_PRECISION = datetime.timedelta(minutes=1)


def lifetime() -> datetime.timedelta:
    return datetime.timedelta(hours=settings.API_TOKEN_HOURS)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def made_with_token(request) -> bool:
    return isinstance(getattr(request, "auth", None), ApiToken)


def token_create(*, request, name: str = "") -> tuple[ApiToken, str]:
    """A new token for the request's user, and its key (returned once, never stored)."""
    user = request.user
    if made_with_token(request):
        raise TokenNeedsSession()
    verified = two_factor.is_verified(user)
    if access.is_unblinded(user) and not verified:
        if two_factor.confirmed_device(user) is None:
            raise TokenNeedsSecondFactorSetUp()
        raise TokenNeedsSecondFactor()
    return token_issue(user=user, name=name, second_factor=verified)


def token_issue(*, user, name: str = "", second_factor: bool = False) -> tuple[ApiToken, str]:
    """Store a new token and return it with its key. The checks are token_create's; this is
    for it, and for scripts and tests that hand a known user a token."""
    key = secrets.token_urlsafe(32)
    now = timezone.now()
    with audit_context(actor=user, reason="API token created"):
        token = ApiToken.objects.create(
            user=user,
            name=(name or "").strip(),
            created_at=now,
            expires_at=now + lifetime(),
            second_factor=second_factor,
        )
        ApiTokenKey.objects.create(token=token, key_hash=key_hash(key))
    return token, key


def token_revoke(*, token: ApiToken, revoked_by) -> ApiToken:
    """Revoke now (a token already revoked keeps its first revocation)."""
    with audit_context(actor=revoked_by, reason="API token revoked"):
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_by=revoked_by
        )
    token.refresh_from_db()
    return token


def tokens_of(user):
    return ApiToken.objects.filter(user=user).select_related("stored_key")


def token_of(user, pk) -> ApiToken:
    """One of the user's own tokens, or 404 (another user's token does not exist for them)."""
    return access.get_object_or_404(ApiToken.objects.filter(user=user), pk=pk)


def is_live(token: ApiToken, now: datetime.datetime | None = None) -> bool:
    return token.revoked_at is None and (now or timezone.now()) < token.expires_at


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Token <key>`. Refused with 401 and a message saying why: unknown,
    revoked, expired, or made without the second factor for an unblinded user."""

    def authenticate(self, request):
        words = authentication.get_authorization_header(request).split()
        if not words or words[0].lower() != KEYWORD.lower().encode():
            return None
        if len(words) != 2:
            raise exceptions.AuthenticationFailed(_("Send the token as “Authorization: Token <key>”."))
        try:
            key = words[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(_("This token is not valid.")) from None
        user, token = self.authenticate_key(key)
        self._require_chosen_trial(user, request)
        return user, token

    @staticmethod
    def _require_chosen_trial(user, request) -> None:
        """As trialsite.tenancy's middleware does for a signed-in browser (which knows the user
        before the view; a token is read only here): an account with roles in several trials
        names the trial in the address."""
        from trialsite import tenancy

        if tenancy.current_trial() is None and not tenancy.is_personal(request.path_info):
            if len(tenancy.trial_ids_of(user)) > 1:
                raise exceptions.ParseError(
                    _("You work in more than one trial. Choose one: put /t/<NCT id> before the address.")
                )

    def authenticate_key(self, key: str):
        stored = ApiTokenKey.objects.select_related("token__user").filter(key_hash=key_hash(key)).first()
        if stored is None:
            raise exceptions.AuthenticationFailed(_("This token is not valid."))
        token, user = stored.token, stored.token.user
        now = timezone.now()
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed(_("This token was revoked. Make a new one at /accounts/tokens/."))
        if now >= token.expires_at:
            raise exceptions.AuthenticationFailed(
                _("This token expired (tokens last %(hours)s hours). Make a new one at /accounts/tokens/.")
                % {"hours": settings.API_TOKEN_HOURS}
            )
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("This account is disabled."))
        if access.is_unblinded(user) and not token.second_factor:
            raise exceptions.AuthenticationFailed(
                _(
                    "Your role can reveal allocations and this token was made without your two-factor "
                    "code. Make a new one at /accounts/tokens/ after entering your code."
                )
            )
        if stored.last_used_at is None or now - stored.last_used_at >= LAST_USE_PRECISION:
            ApiTokenKey.objects.filter(pk=stored.pk).update(last_used_at=now)
        return user, token

    def authenticate_header(self, request):
        return KEYWORD


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes the token header (as DRF's tokenAuth did)."""

    target_class = ApiTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>`; make one at /accounts/tokens/ (it expires).",
        }
