"""The Django admin, for people who hold no blinded role.

Its filters and lists read raw rows, so a blinded user inside it is one query string away from
an allocation (a filter on an audit row's JSON, a future slot's arm). Rather than blind every
corner of it, the whole admin does not exist for them: every admin URL, the login page
included, answers 404 unless the user is an active staff member with no blinded role at any
site (an unblinded role, or no trial role at all). Such users log in at /accounts/login/."""

from __future__ import annotations

import functools

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import Http404
from django.urls import URLPattern, URLResolver


def may_use_admin(user) -> bool:
    from trialsite import access

    return bool(
        getattr(user, "is_authenticated", False)
        and user.is_active
        and user.is_staff
        and not access.holds_blinded_role(user)
    )


def _guarded(view):
    @functools.wraps(view)
    def guarded(request, *args, **kwargs):
        if not may_use_admin(request.user):
            raise Http404("Not found")
        return view(request, *args, **kwargs)

    return guarded


def _guard_all(patterns) -> None:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            _guard_all(pattern.url_patterns)
        elif isinstance(pattern, URLPattern) and not getattr(pattern.callback, "trial_admin_guarded", False):
            pattern.callback = _guarded(pattern.callback)
            pattern.callback.trial_admin_guarded = True


class TrialAdminSite(admin.AdminSite):
    site_header = "Trial site administration"

    def has_permission(self, request):
        return super().has_permission(request) and may_use_admin(request.user)

    def get_urls(self):
        # Every URL, not only the views the admin wraps itself (login, the catch-all, the
        # "view on site" redirect are not), so that none of them exists for a blinded user.
        urls = super().get_urls()
        _guard_all(urls)
        return urls


class TrialAdminConfig(AdminConfig):
    default_site = "trialsite.admin_site.TrialAdminSite"
