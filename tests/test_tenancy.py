"""The trial is the tenant: /t/<NCT id>/ scopes every page and API call to one trial."""

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from reports.models import Export
from tests import factories
from trialsite.models import Role, Site
from trialsite.protocol import load_protocol

SECOND = "NCT09999999"


@pytest.fixture
def second_trial(trial, tmp_path):
    """A second trial in the same database that also has a site coded NT."""
    path = tmp_path / "second.toml"
    path.write_text(settings.PROTOCOL_FILE.read_text().replace('nct_id = "NCT06442709"', f'nct_id = "{SECOND}"'))
    return load_protocol(path)


@pytest.fixture
def second_site(second_trial) -> Site:
    return second_trial.sites.get(code="NT")


@pytest.fixture
def two_trial_coordinator(site, second_site):
    coordinator = factories.make_user(Role.COORDINATOR, site, username="both_trials")
    coordinator.trial_roles.create(site=second_site, role=Role.COORDINATOR)
    return coordinator


def test_codes_are_unique_per_trial_not_across_trials(site, second_site, cast):
    assert site.code == second_site.code == "NT"
    first = factories.make_participant(site, by=cast.coordinator)
    other_coordinator = factories.make_user(Role.COORDINATOR, second_site, username="second_coordinator")
    second = factories.make_participant(second_site, by=other_coordinator)
    assert first.screening_number == second.screening_number == "S-NT-0001"


def test_inside_a_trial_only_its_participants_exist(site, second_site, cast, two_trial_coordinator, client_for):
    mine = factories.make_participant(site, by=cast.coordinator)
    theirs = factories.make_participant(second_site, by=two_trial_coordinator)
    client = client_for(two_trial_coordinator)
    page = client.get("/t/NCT06442709/participants/")
    assert page.status_code == 200
    body = page.content.decode()
    assert f"/t/NCT06442709/participants/{mine.pk}/" in body
    assert f"/participants/{theirs.pk}/" not in body
    # The other trial's participant does not exist here, whatever roles the user has there.
    assert client.get(f"/t/NCT06442709/participants/{theirs.pk}/").status_code == 404
    assert client.get(f"/t/{SECOND}/participants/{theirs.pk}/").status_code == 200


def test_links_stay_inside_the_chosen_trial(site, cast, two_trial_coordinator, client_for):
    body = client_for(two_trial_coordinator).get("/t/NCT06442709/").content.decode()
    assert 'href="/t/NCT06442709/participants/"' in body
    assert 'class="trial-badge"' in body and "NCT06442709" in body


def test_someone_in_several_trials_chooses_one_before_a_trial_page(two_trial_coordinator, client_for, second_trial):
    client = client_for(two_trial_coordinator)
    answer = client.get("/participants/")
    assert answer.status_code == 302
    assert answer["Location"].startswith("/trials/?next=")
    trials = client.get("/trials/").content.decode()
    assert 'href="/t/NCT06442709/"' in trials and f'href="/t/{SECOND}/"' in trials
    # The home page without a trial is that choice too.
    assert f'href="/t/{SECOND}/"' in client.get("/").content.decode()
    # A form sent without a trial is refused, not applied to one of them.
    assert client.post("/screening/new/", {}).status_code == 400


def test_someone_in_one_trial_needs_no_prefix(site, cast, client_for, second_trial):
    assert client_for(cast.coordinator).get("/participants/").status_code == 200


def test_a_trial_the_user_has_no_role_in_shows_nothing(site, cast, client_for, second_site, second_trial):
    client = client_for(cast.coordinator)
    assert client.get(f"/t/{SECOND}/participants/").status_code == 404
    assert client.get("/t/NCT00000000/participants/").status_code == 404


def test_the_api_works_inside_a_trial_and_asks_for_one_when_ambiguous(site, second_site, cast, two_trial_coordinator):
    factories.make_participant(site, by=cast.coordinator)
    factories.make_participant(second_site, by=two_trial_coordinator)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {factories.api_key(two_trial_coordinator)}")
    mine = api.get("/t/NCT06442709/api/v1/participants/")
    assert mine.status_code == 200
    listed = mine.json()["results"] if isinstance(mine.json(), dict) else mine.json()
    assert len(listed) == 1
    ambiguous = api.get("/api/v1/participants/")
    assert ambiguous.status_code == 400
    assert "more than one trial" in ambiguous.json()["detail"]
    # What belongs to the person works without a trial.
    assert api.get("/api/v1/me/").status_code == 200


def test_a_coordinator_at_two_sites_of_a_trial_names_the_site(site, other_site, client_for, api_for):
    coordinator = factories.make_user(Role.COORDINATOR, site, username="two_sites")
    coordinator.trial_roles.create(site=other_site, role=Role.COORDINATOR)
    page = client_for(coordinator).get("/screening/new/").content.decode()
    assert 'name="site"' in page
    answer = api_for(coordinator).post(
        "/api/v1/screenings/",
        {
            "initials": "LW",
            "date_of_birth": "1970-05-05",
            "sex": "M",
            "hospital_record_number": "SH-77",
            "screening_date": "2026-11-20",
            "consent_version": "2.1",
            "consent_date": "2026-11-20",
            "answers": {"IN1": "yes", "IN2": "yes", "EX1": "no", "EX2": "no", "EX3": "no"},
        },
        format="json",
    )
    assert answer.status_code == 400
    assert "site" in answer.json()


def test_an_export_is_built_in_the_trial_it_was_asked_in(site, cast, client_for, second_site):
    from reports import services as report_services
    from trialsite import tenancy

    token = tenancy.activate(site.trial)
    try:
        export = report_services.export_request(
            user=cast.investigator, kind="enrollment", format="csv", background=False
        )
    finally:
        tenancy.deactivate(token)
    assert Export.objects.get(pk=export.pk).trial == site.trial


def test_the_supply_api_lists_only_the_trials_own_depot(site, cast, second_trial, api_for):
    from tests import dosing_factories

    dosing_factories.make_kit(number="DEPOT-A1", status="in_depot", trial=site.trial)
    second_supply = factories.make_user(Role.SUPPLY_MANAGER, second_trial.sites.get(), username="second_supply")
    listed = api_for(second_supply).get(f"/t/{SECOND}/api/v1/supply/kits/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert "DEPOT-A1" not in {row["kit_number"] for row in rows}
    mine = api_for(cast.supply_manager).get("/t/NCT06442709/api/v1/supply/kits/").json()
    rows = mine["results"] if isinstance(mine, dict) else mine
    assert "DEPOT-A1" in {row["kit_number"] for row in rows}


def test_an_open_label_trial_does_not_open_the_admin_to_someone_blinded_elsewhere(site, client_for):
    from trialsite.protocol import check_file

    open_label_file = next(
        path for path in sorted(settings.PROTOCOLS_DIR.glob("*.toml")) if not check_file(path).blinded
    )
    open_label = load_protocol(open_label_file)
    assert site.trial.protocol.blinded
    coordinator = factories.make_user(Role.COORDINATOR, site, username="blinded_staff", is_staff=True)
    coordinator.trial_roles.create(site=open_label.sites.order_by("code").first(), role=Role.COORDINATOR)
    client = client_for(coordinator)
    assert client.get(f"/t/{open_label.nct_id}/admin/trialsite/arm/").status_code == 404
    assert client.get("/admin/").status_code == 404
