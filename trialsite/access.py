"""Who may do what, where: the one place permissions are decided.

Web views, API views, exports and the admin all ask these functions. A user's roles are held
per site; a capability is granted at a site by any role the user has there. Records of a site
the user has no matching role at do not exist for them: `get_for_user` raises Http404, never
403, so that existence does not leak."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models
from django.db.models import QuerySet
from django.http import Http404
from django.utils.translation import gettext_lazy as _

from trialsite.models import Role, Site, StaffRole
from trialsite.tenancy import current_trial


class Capability(models.TextChoices):
    VIEW_PARTICIPANTS = "view_participants", _("See participants (blinded)")
    SCREEN = "screen", _("Screen, consent, enroll and withdraw participants")
    SIGN_ELIGIBILITY = "sign_eligibility", _("Sign off eligibility")
    RANDOMIZE = "randomize", _("Randomize participants")
    RECORD_VISITS = "record_visits", _("Record visits and doses")
    DISPENSE = "dispense", _("Dispense and receive kits")
    MANAGE_RANDOMIZATION = "manage_randomization", _("Generate, import and lock randomization lists")
    MANAGE_SUPPLY = "manage_supply", _("Import, ship and release kits")
    VIEW_ALLOCATION = "view_allocation", _("View allocation (unblinded)")
    EMERGENCY_UNBLIND = "emergency_unblind", _("Break the blind for one participant in an emergency")
    EXPORT_REPORTS = "export_reports", _("Export reports")
    READ_AUDIT = "read_audit", _("Read the audit trail")
    RAISE_QUERIES = "raise_queries", _("Raise data queries")
    VIEW_SAFETY_REPORTS = "view_safety_reports", _("Read the DSMB safety reports")
    ASSESS_SAE = "assess_sae", _("Assess serious adverse events for expedited reporting (SUSAR)")


# The protocol file may override these per trial (`[roles]`); these are the defaults
# TRIAL.md describes: only the statistician and the supply manager see arms.
DEFAULT_ROLE_CAPABILITIES: dict[str, frozenset[str]] = {
    Role.COORDINATOR: frozenset(
        {Capability.VIEW_PARTICIPANTS, Capability.SCREEN, Capability.RANDOMIZE, Capability.RECORD_VISITS}
    ),
    Role.PHARMACIST: frozenset({Capability.VIEW_PARTICIPANTS, Capability.DISPENSE}),
    Role.INVESTIGATOR: frozenset(
        {
            Capability.VIEW_PARTICIPANTS,
            Capability.SIGN_ELIGIBILITY,
            Capability.EXPORT_REPORTS,
            Capability.EMERGENCY_UNBLIND,
            Capability.READ_AUDIT,
        }
    ),
    Role.MONITOR: frozenset(
        {Capability.VIEW_PARTICIPANTS, Capability.READ_AUDIT, Capability.RAISE_QUERIES, Capability.EXPORT_REPORTS}
    ),
    Role.STATISTICIAN: frozenset(
        {
            Capability.MANAGE_RANDOMIZATION,
            Capability.VIEW_ALLOCATION,
            Capability.EXPORT_REPORTS,
            Capability.VIEW_SAFETY_REPORTS,
        }
    ),
    Role.SUPPLY_MANAGER: frozenset({Capability.MANAGE_SUPPLY, Capability.VIEW_ALLOCATION}),
    # Read-only and unblinded: the closed safety report by arm, and no capability that writes.
    Role.DSMB: frozenset({Capability.VIEW_ALLOCATION, Capability.VIEW_SAFETY_REPORTS}),
    # Sees participants blinded to assess their SAEs; breaks the blind only of a SUSAR's participant,
    # through the emergency unblinding (for this user only), so it is an unblinded role (two-factor).
    Role.SPONSOR_SAFETY: frozenset({Capability.VIEW_PARTICIPANTS, Capability.ASSESS_SAE, Capability.EMERGENCY_UNBLIND}),
}


def role_capabilities(site: Site, role: str) -> frozenset[str]:
    protocol = site.trial.protocol
    overrides = protocol.roles.get(role)
    capabilities = (
        frozenset(overrides.capabilities) if overrides is not None else DEFAULT_ROLE_CAPABILITIES.get(role, frozenset())
    )
    if not protocol.blinded:
        # Open label: nobody is blinded, so every role may see the arm.
        capabilities |= {Capability.VIEW_ALLOCATION}
    return capabilities


def _all_grants(user) -> dict[int, tuple[int, frozenset[str]]]:
    """(trial id, capabilities) per site id, every trial; computed once per user object (one query)."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return {}
    cached = getattr(user, "_trial_capabilities", None)
    if cached is None:
        cached = {}
        user._blinded_site_ids = set()
        for staff_role in StaffRole.objects.filter(user=user).select_related("site__trial"):
            if staff_role.site.trial.protocol.blinded:
                user._blinded_site_ids.add(staff_role.site_id)
            site_id = staff_role.site_id
            previous = cached.get(site_id, (staff_role.site.trial_id, frozenset()))[1]
            capabilities = previous | role_capabilities(staff_role.site, staff_role.role)
            cached[site_id] = (staff_role.site.trial_id, capabilities)
        user._trial_capabilities = cached
    return cached


def trial_ids(user) -> set[int]:
    """The trials where the user holds any role (none for a disabled account, like every grant)."""
    return {trial_id for trial_id, _capabilities in _all_grants(user).values()}


def _grants(user) -> dict[int, frozenset[str]]:
    """Capabilities per site id, at the sites of the trial this request works in (every trial
    when the address names none: a user whose roles span trials is then refused by the
    tenancy middleware before any view asks)."""
    trial = current_trial()
    return {
        site_id: capabilities
        for site_id, (trial_id, capabilities) in _all_grants(user).items()
        if trial is None or trial_id == trial.pk
    }


def forget_grants(user) -> None:
    """Drop the cached capabilities, after roles change."""
    if hasattr(user, "_trial_capabilities"):
        del user._trial_capabilities


def site_ids(user) -> set[int]:
    """Every site the user holds any role at."""
    return set(_grants(user))


def get_object_or_404(queryset: QuerySet, **lookup):
    """Like Django's, but a malformed id is a 404 too rather than a 500."""
    try:
        return queryset.get(**lookup)
    except (queryset.model.DoesNotExist, ValueError, TypeError):
        raise Http404("Not found") from None


def site_ids_with(user, capability: str) -> set[int]:
    return {site_id for site_id, capabilities in _grants(user).items() if capability in capabilities}


def can(user, capability: str, site: Site | int | None = None) -> bool:
    """May `user` use `capability` at `site` (or, with no site, at any site)?"""
    if site is None:
        return bool(site_ids_with(user, capability))
    site_id = site if isinstance(site, int) else site.pk
    return capability in _grants(user).get(site_id, frozenset())


def sites_for(user, capability: str) -> QuerySet[Site]:
    return Site.objects.filter(pk__in=site_ids_with(user, capability))


def _staff_roles(user):
    staff_roles = StaffRole.objects.filter(user=user)
    trial = current_trial()
    return staff_roles if trial is None else staff_roles.filter(site__trial=trial)


def roles_of(user) -> set[str]:
    if not getattr(user, "is_authenticated", False):
        return set()
    return set(_staff_roles(user).values_list("role", flat=True))


def scope(queryset: QuerySet, user, capability: str, site_field: str = "site") -> QuerySet:
    """Only the rows at sites where `user` has `capability`."""
    return queryset.filter(**{f"{site_field}__in": site_ids_with(user, capability)})


def get_for_user(queryset: QuerySet, user, capability: str, *, site_field: str = "site", **lookup):
    """The one row matching `lookup` that `user` may use with `capability`, or Http404 whether
    the row does not exist or belongs to a site the user cannot see."""
    return get_object_or_404(scope(queryset, user, capability, site_field), **lookup)


def require(user, capability: str, site: Site | int | None = None) -> None:
    """Refuse a site-less page (a list, a form) with 404 when the user lacks `capability`."""
    if not can(user, capability, site):
        raise Http404("Not found")


# Capabilities that reveal allocation; their holders are the "unblinded" users.
UNBLINDING_CAPABILITIES = frozenset({Capability.VIEW_ALLOCATION, Capability.EMERGENCY_UNBLIND})


def is_unblinded(user) -> bool:
    """Does `user` hold, at any site of a blinded trial, a capability that can reveal an arm?
    (In an open-label trial everyone sees arms: nothing there needs guarding by a second factor.)"""
    chosen = _grants(user)
    blinded_sites = getattr(user, "_blinded_site_ids", set())
    return any(
        capabilities & UNBLINDING_CAPABILITIES for site_id, capabilities in chosen.items() if site_id in blinded_sites
    )


def holds_blinded_role(user) -> bool:
    """Does `user` hold any role, at any site, that does not see allocation there? Judged per
    role, not per site: a coordinator who is also the site's statistician still works blinded."""
    if not getattr(user, "is_authenticated", False):
        return False
    # Every trial, whatever the address: a blinded role in one trial is not lifted by entering
    # another (an open-label trial's prefix must not open the admin to a blinded coordinator).
    staff_roles = StaffRole.objects.filter(user=user).select_related("site__trial")
    return any(
        Capability.VIEW_ALLOCATION not in role_capabilities(staff_role.site, staff_role.role)
        for staff_role in staff_roles
    )


def capabilities_anywhere(user) -> set[str]:
    return set().union(*_grants(user).values()) if _grants(user) else set()


def users_with(capability: str, site: Site) -> Iterable:
    from django.contrib.auth import get_user_model

    roles = [role for role in Role.values if capability in role_capabilities(site, role)]
    return (
        get_user_model().objects.filter(trial_roles__site=site, trial_roles__role__in=roles, is_active=True).distinct()
    )


class SiteNotChosen(Exception):
    """Several sites allow the action and none was named."""


def choose_site(user, capability: str, code: str | None = None) -> Site:
    """The site an action happens at, in the trial this request works in: the one named by
    `code`, or the user's only site with `capability`. Http404 when the user has none (or names
    one they cannot use); SiteNotChosen when several qualify and none is named."""
    sites = list(sites_for(user, capability).select_related("trial").order_by("code"))
    if code:
        for site in sites:
            if site.code == code:
                return site
        raise Http404("Not found")
    if not sites:
        raise Http404("Not found")
    if len(sites) > 1:
        raise SiteNotChosen()
    return sites[0]
