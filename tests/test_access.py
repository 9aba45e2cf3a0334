"""Role and site isolation, on a web view and an API view."""

import pytest

from tests import factories
from trialsite import access
from trialsite.access import Capability
from trialsite.audit import audit_context
from trialsite.models import Role


def test_capabilities_follow_the_role_at_the_site(cast, site, other_site):
    assert access.can(cast.coordinator, Capability.SCREEN, site)
    assert not access.can(cast.coordinator, Capability.SCREEN, other_site)
    assert not access.can(cast.coordinator, Capability.VIEW_ALLOCATION, site)
    assert not access.can(cast.pharmacist, Capability.VIEW_ALLOCATION, site)
    assert not access.can(cast.investigator, Capability.VIEW_ALLOCATION, site)
    assert not access.can(cast.monitor, Capability.VIEW_ALLOCATION, site)
    assert access.can(cast.statistician, Capability.VIEW_ALLOCATION, site)
    assert access.can(cast.supply_manager, Capability.VIEW_ALLOCATION, site)
    assert access.can(cast.investigator, Capability.EMERGENCY_UNBLIND, site)
    assert access.capabilities_anywhere(cast.nobody) == set()


def test_a_user_can_hold_roles_at_several_sites(site, other_site):
    user = factories.make_user(Role.COORDINATOR, site)
    with audit_context(reason="second site"):
        user.trial_roles.create(site=other_site, role=Role.MONITOR)
    access.forget_grants(user)
    assert access.can(user, Capability.SCREEN, site)
    assert access.can(user, Capability.READ_AUDIT, other_site)
    assert not access.can(user, Capability.SCREEN, other_site)


def test_the_protocol_file_can_change_what_a_role_may_do(trial, site):
    trial.definition["roles"] = {"investigator": {"capabilities": ["view_participants", "view_allocation"]}}
    with audit_context(reason="open-label amendment"):
        trial.save()
    investigator = factories.make_user(Role.INVESTIGATOR, site)
    assert access.can(investigator, Capability.VIEW_ALLOCATION, site)


def test_api_site_detail_is_404_at_a_site_the_user_has_no_role_at(cast, api_for, site, other_site):
    assert api_for(cast.coordinator).get(f"/api/v1/sites/{site.pk}/").status_code == 200
    assert api_for(cast.coordinator).get(f"/api/v1/sites/{other_site.pk}/").status_code == 404
    assert api_for(cast.coordinator).get("/api/v1/sites/999999/").status_code == 404
    codes = [entry["code"] for entry in api_for(cast.coordinator).get("/api/v1/sites/").json()["results"]]
    assert codes == ["NT"]


def test_the_audit_trail_page_shows_a_monitor_only_their_sites(cast, client_for, site, other_site):
    nantong_screening = factories.make_screening(site, by=cast.coordinator, record_number="NT-RECORD-1")
    shanghai_screening = factories.make_screening(other_site, by=cast.other_coordinator, record_number="SH-RECORD-1")

    def shows(page, screening) -> bool:
        return f"enrollment_screening #{screening.pk}".encode() in page.content

    page = client_for(cast.monitor).get("/audit/")
    assert page.status_code == 200
    assert shows(page, nantong_screening)
    assert not shows(page, shanghai_screening)
    # Record numbers are masked on the trail as on every other page.
    assert b"NT-RECORD-1" not in page.content

    # Asking for the other site's record by id finds nothing, as if it did not exist.
    page = client_for(cast.monitor).get(f"/audit/?subject={shanghai_screening.pk}")
    assert not shows(page, shanghai_screening)
    page = client_for(cast.other_monitor).get(f"/audit/?subject={shanghai_screening.pk}")
    assert shows(page, shanghai_screening)
    assert nantong_screening.pk != shanghai_screening.pk


@pytest.mark.parametrize("role", ["coordinator", "pharmacist", "statistician", "supply_manager", "nobody"])
def test_roles_without_audit_access_get_404_on_the_audit_trail(cast, client_for, api_for, role):
    assert client_for(cast[role]).get("/audit/").status_code == 404
    assert api_for(cast[role]).get("/api/v1/audit-events/").status_code == 404


def test_the_audit_api_gives_the_monitor_old_and_new_values(cast, api_for, site):
    screening = factories.make_screening(site, by=cast.coordinator)
    answer = api_for(cast.monitor).get(f"/api/v1/audit-events/?subject={screening.pk}&table=enrollment_screening")
    assert answer.status_code == 200
    [created] = answer.json()["results"]
    assert created["action"] == "INSERT"
    assert created["actor"] == "coordinator"
    assert created["new_values"]["initials"] == "TS"


def test_anonymous_users_are_sent_to_log_in(client, db):
    assert client.get("/").status_code == 302
    assert client.get("/api/v1/me/").status_code in (401, 403)
