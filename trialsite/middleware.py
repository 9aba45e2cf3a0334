import zoneinfo

from django.conf import settings
from django.utils import timezone


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
