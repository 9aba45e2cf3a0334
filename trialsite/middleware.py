import zoneinfo

from django.conf import settings
from django.utils import timezone
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
            from django.http import JsonResponse

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
        from django.http import JsonResponse
        from django.shortcuts import redirect
        from django.urls import reverse
        from django.utils.http import urlencode

        if request.path.startswith("/api/"):
            return JsonResponse({"detail": str(message)}, status=403)
        return redirect(f"{reverse(url_name)}?{urlencode({'next': request.get_full_path()})}")
