import json
import zoneinfo
from urllib.parse import unquote_plus

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.html import escape
from django.utils.translation import gettext_lazy as _


class SecurityHeadersMiddleware:
    """Headers `check --deploy` does not cover: a strict Content-Security-Policy (every asset is
    served from this site; there is no inline script) and a Permissions-Policy."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return response


class SiteTimezoneMiddleware:
    """Show times in the zone of the site the user works at (the first of their sites)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        zone = None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            from trialsite.models import StaffRole
            from trialsite.tenancy import current_trial

            # Per trial: the same person may work at a Shanghai site in one trial and elsewhere in another.
            trial = current_trial()
            key = f"site_time_zone:{trial.pk}" if trial else "site_time_zone"
            zone = request.session.get(key)
            if zone is None:
                roles = StaffRole.objects.filter(user=user).select_related("site").order_by("site__code")
                first = (roles if trial is None else roles.filter(site__trial=trial)).first()
                zone = first.site.time_zone if first else settings.TIME_ZONE
                request.session[key] = zone
        if zone:
            timezone.activate(zoneinfo.ZoneInfo(zone))
        else:
            timezone.deactivate()
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()


class ApiJsonErrorsMiddleware:
    """Under /api/, an error Django answers itself (a URL that matches no route, a server
    error page) is JSON like every other API answer, not an HTML page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.path_info.startswith("/api/")
            and response.status_code >= 400
            and response.get("Content-Type", "").startswith("text/html")
        ):
            return JsonResponse({"detail": response.reason_phrase}, status=response.status_code)
        return response


class TwoFactorMiddleware:
    """After django-otp's middleware: a logged-in user with a device who has not entered the
    code this session, or an unblinded user who must enrol (TWO_FACTOR_FOR_UNBLINDED) and has
    not, can reach only the two-factor pages, logging out and the language switch. Pages
    redirect there; the API answers a JSON 403 saying why."""

    OPEN_PREFIXES = ("/accounts/two-factor/", "/accounts/logout/", "/accounts/login/", "/i18n/", "/static/")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or request.path_info.startswith(self.OPEN_PREFIXES):
            return self.get_response(request)
        from trialsite import two_factor

        if two_factor.is_verified(user):
            return self.get_response(request)
        if two_factor.is_enrolled(request):
            return self._stop(request, "two-factor-verify", _("Enter your two-factor code to continue."))
        if two_factor.required_for(user):
            return self._stop(
                request, "two-factor", _("Your role can reveal allocations: set up two-factor authentication first.")
            )
        return self.get_response(request)

    def _stop(self, request, url_name, message):
        from django.shortcuts import redirect
        from django.urls import reverse
        from django.utils.http import urlencode

        if request.path_info.startswith("/api/"):
            return JsonResponse({"detail": str(message)}, status=403)
        return redirect(f"{reverse(url_name)}?{urlencode({'next': request.get_full_path()})}")


class RequestBodyGuardMiddleware:
    """Refuse, before any view runs, a body no form or endpoint could use: larger than the
    limits (413), or not readable as UTF-8 (a form) or as JSON in UTF-8 (the API) (400). The
    message names the field whose value could not be read. Without this a broken byte became
    U+FFFD in a saved reason, and an endpoint that reads no body acted on one it could not parse.
    Multipart uploads (CSV imports) are left to their own checks, which report the line."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        refusal = self._query_refusal(request)
        if refusal is None and request.method in ("POST", "PUT", "PATCH", "DELETE"):
            refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return self.get_response(request)

    def _query_refusal(self, request):
        # PostgreSQL text cannot hold NUL: a search or filter with one failed with 500.
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                field = name.replace("\x00", "")
                return self._answer(
                    request,
                    400,
                    _("“%(field)s” in the address holds a NUL character, which no search or filter accepts.")
                    % {"field": field},
                    field=field,
                )
        return None

    def _refusal(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        multipart = content_type == "multipart/form-data"
        limit = settings.REQUEST_UPLOAD_MAX_BYTES if multipart else settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if length > limit:
            return self._answer(
                request,
                413,
                _("The request is too large (%(size)s bytes; at most %(limit)s).") % {"size": length, "limit": limit},
            )
        if multipart or not length:
            return None
        body = request.body
        if content_type == "application/x-www-form-urlencoded":
            return self._check_form(request, body)
        if content_type == "application/json" and request.path_info.startswith("/api/"):
            try:
                data = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as error:
                return self._answer(
                    request, 400, _("The body is not valid JSON in UTF-8: %(error)s") % {"error": error}
                )
            except RecursionError:
                return self._answer(request, 400, self._too_deep())
            return self._check_json(request, data)
        return None

    def _too_deep(self):
        return _("The body is nested more than %(depth)s levels deep; no endpoint reads that.") % {
            "depth": self.MAX_JSON_DEPTH
        }

    def _not_unicode(self):
        return _("The body holds text that is not valid Unicode (a lone surrogate); nothing was saved.")

    # No endpoint reads more than three levels; well below where parsing or the serializers
    # would hit Python's recursion limit (a RecursionError was a 500).
    MAX_JSON_DEPTH = 32

    def _check_json(self, request, data):
        """Walk the parsed body without recursion: refuse nesting deeper than any endpoint reads,
        and text that is not Unicode (a lone surrogate such as "\\ud800", valid JSON but not
        encodable, failed as a 500 when a key echoed in an error answer)."""
        if isinstance(data, str) and not _encodable(data):
            return self._answer(request, 400, self._not_unicode())
        stack = [(data, 1, None)]
        while stack:
            value, depth, field = stack.pop()
            if depth > self.MAX_JSON_DEPTH:
                return self._answer(request, 400, self._too_deep(), field=field)
            if isinstance(value, dict):
                pairs = value.items()
            elif isinstance(value, list):
                pairs = ((None, item) for item in value)
            else:
                continue
            for key, item in pairs:
                # Named by the top-level field, as the API's other answers name fields.
                here = key if field is None else field
                if any(isinstance(text, str) and not _encodable(text) for text in (key, item)):
                    return self._answer(request, 400, self._not_unicode(), field=_encodable_or(here))
                if isinstance(item, (dict, list)):
                    stack.append((item, depth + 1, here))
        return None

    def _check_form(self, request, body: bytes):
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            return self._answer(request, 400, _("The form could not be read: it was not sent as UTF-8."))
        for pair in text.split("&"):
            name, _separator, value = pair.partition("=")
            try:
                unquote_plus(value, errors="strict")
                field = unquote_plus(name, errors="strict")
            except UnicodeDecodeError:
                field = unquote_plus(name, errors="replace")
                return self._answer(
                    request,
                    400,
                    _("“%(field)s” holds characters that could not be read (not UTF-8). Nothing was saved.")
                    % {"field": field},
                    field=field,
                )
        return None

    def _answer(self, request, status, message, field=None):
        if request.path_info.startswith("/api/"):
            return JsonResponse({field or "detail": [str(message)] if field else str(message)}, status=status)
        return HttpResponse(
            f"<!doctype html><title>{status}</title><h1>{escape(str(message))}</h1>",
            status=status,
            content_type="text/html; charset=utf-8",
        )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _encodable_or(field):
    """The field to name in an answer, if it can be written at all."""
    return field if field is None or _encodable(field) else None
