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
            zone = request.session.get("site_time_zone")
            if zone is None:
                from trialsite.models import StaffRole

                first = StaffRole.objects.filter(user=user).select_related("site").order_by("site__code").first()
                zone = first.site.time_zone if first else settings.TIME_ZONE
                request.session["site_time_zone"] = zone
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
            request.path.startswith("/api/")
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
        if user is None or not user.is_authenticated or request.path.startswith(self.OPEN_PREFIXES):
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

        if request.path.startswith("/api/"):
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
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            refusal = self._refusal(request)
            if refusal is not None:
                return refusal
        return self.get_response(request)

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
        if content_type == "application/json" and request.path.startswith("/api/"):
            try:
                json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as error:
                return self._answer(
                    request, 400, _("The body is not valid JSON in UTF-8: %(error)s") % {"error": error}
                )
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
        if request.path.startswith("/api/"):
            return JsonResponse({field or "detail": [str(message)] if field else str(message)}, status=status)
        return HttpResponse(
            f"<!doctype html><title>{status}</title><h1>{escape(str(message))}</h1>",
            status=status,
            content_type="text/html; charset=utf-8",
        )
