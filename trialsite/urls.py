from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic.base import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from trialsite import api, token_views, views

api_patterns = [
    path("me/", api.MeView.as_view(), name="api-me"),
    path("sites/", api.SiteList.as_view(), name="api-sites"),
    path("sites/<int:pk>/", api.SiteDetail.as_view(), name="api-site"),
    path("audit-events/", api.AuditEventList.as_view(), name="api-audit-events"),
    path("tokens/", token_views.ApiTokenList.as_view(), name="api-token-list"),
    path("tokens/<int:pk>/", token_views.ApiTokenRevoke.as_view(), name="api-token-revoke"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script as a file: the CSP allows no inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("enrollment.api_urls")),
    path("", include("randomization.api_urls")),
    path("", include("dosing.api_urls")),
    path("", include("reports.api_urls")),
    path("", include("crf.api_urls")),
    path("", include("safety.api_urls")),
]


class FaviconView(RedirectView):
    """Browsers and bookmarks still ask for /favicon.ico; the icon is the static SVG (its
    hashed name in production, so resolved per request)."""

    permanent = False

    def get_redirect_url(self, *args, **kwargs):
        return static("favicon.svg")


urlpatterns = [
    path("", views.home, name="home"),
    path("trials/", views.trials, name="trials"),
    path("favicon.ico", FaviconView.as_view(), name="favicon"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/two-factor/", views.two_factor_setup, name="two-factor"),
    path("accounts/two-factor/verify/", views.two_factor_verify, name="two-factor-verify"),
    path("accounts/tokens/", token_views.api_tokens, name="api-tokens"),
    path("audit/", views.audit_trail, name="audit-trail"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_patterns)),
    path("", include("enrollment.urls")),
    path("", include("randomization.urls")),
    path("", include("dosing.urls")),
    path("", include("reports.urls")),
    path("", include("crf.urls")),
    path("", include("safety.urls")),
]
