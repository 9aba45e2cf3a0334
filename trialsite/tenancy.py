"""The trial a request works in: the tenant.

Every page and API address can be reached inside a trial, `/t/<NCT id>/...` (for example
`/t/<NCT id>/participants/` or `/t/<NCT id>/api/v1/participants/`). The middleware strips
that prefix before the URL is resolved and makes it the script prefix, so every link the page
builds with `reverse()` or `{% url %}` stays inside the same trial without any view knowing.
Inside a trial, `trialsite.access` counts only the user's roles at that trial's sites: records of
another trial do not exist there, whatever roles the user holds elsewhere.

Without the prefix the user has not chosen a trial. That is unambiguous for someone whose roles
are all in one trial (the address works as before); someone with roles in several trials is sent
to the list of their trials (pages) or told to choose (API), never shown two trials mixed."""

from __future__ import annotations

import re
from contextvars import ContextVar

from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.urls import get_script_prefix, set_script_prefix
from django.utils.http import urlencode
from django.utils.translation import gettext as _

PREFIX = re.compile(r"^/t/(?P<nct_id>NCT\d{8})(?P<rest>/.*)$")
# Addresses that belong to the person, not to a trial: sign-in, second factor, API tokens, the
# language switch, the admin (it scopes itself), the API schema and the list of trials.
PERSONAL_PREFIXES = (
    "/accounts/",
    "/i18n/",
    "/admin/",
    "/static/",
    "/favicon.ico",
    "/trials/",
    "/api/v1/me/",
    "/api/v1/tokens/",
    "/api/v1/schema/",
    "/api/v1/docs/",
)

_current_trial: ContextVar = ContextVar("current_trial", default=None)


def current_trial():
    """The trial this request works in, or None when the address names none."""
    return _current_trial.get()


def activate(trial):
    """Work inside `trial` (tests and commands use it like the middleware); returns a token."""
    return _current_trial.set(trial)


def deactivate(token) -> None:
    _current_trial.reset(token)


def trial_ids_of(user) -> set[int]:
    """The trials where the user holds any role, read off the user's grants, which nearly every
    request reads anyway to check a permission (no query of its own)."""
    from trialsite import access

    return access.trial_ids(user)


def trial_for(user):
    """The one trial `user` works in here: the chosen one, or their only trial. Http404 when they
    have none, or several and chose none (a page to choose is at /trials/)."""
    from trialsite.models import Trial

    trial = current_trial()
    if trial is not None:
        return trial
    trial_ids = trial_ids_of(user)
    if len(trial_ids) != 1:
        raise Http404("Choose a trial")
    return Trial.objects.get(pk=next(iter(trial_ids)))


def trial_url(trial, path: str = "/") -> str:
    return f"/t/{trial.nct_id}{path}"


class ChooseTrial(Exception):
    """An unprefixed trial address from someone whose roles span several trials."""


def is_personal(path: str) -> bool:
    return path == "/" or path.startswith(PERSONAL_PREFIXES)


class TrialMiddleware:
    """Binds the request to the trial its address names (see the module docstring)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from trialsite.models import Trial

        matched = PREFIX.match(request.path_info)
        if matched is None:
            request.trial = None
            user = getattr(request, "user", None)
            if not is_personal(request.path_info) and len(trial_ids_of(user)) > 1:
                return self._choose(request)
            return self.get_response(request)
        trial = Trial.objects.filter(nct_id=matched["nct_id"]).first()
        if trial is None:
            raise Http404("No such trial")
        request.trial = trial
        request.path_info = matched["rest"]
        old_prefix = get_script_prefix()
        set_script_prefix(f"{old_prefix.rstrip('/')}/t/{trial.nct_id}/")
        token = activate(trial)
        try:
            return self.get_response(request)
        finally:
            deactivate(token)
            set_script_prefix(old_prefix)

    @staticmethod
    def _choose(request):
        message = _(
            "You work in more than one trial. Choose one: put /t/<NCT id> before the address, e.g. /t/<NCT id>%(path)s"
        ) % {"path": request.path_info}
        if request.path_info.startswith("/api/"):
            return JsonResponse({"detail": message}, status=400)
        if request.method in ("GET", "HEAD"):
            return HttpResponseRedirect("/trials/?" + urlencode({"next": request.get_full_path()}))
        return JsonResponse({"detail": message}, status=400)
