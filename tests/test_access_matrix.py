"""Who gets 200 and who gets 404, role by role and site by site, on the web pages and API
endpoints that read trial data. A refusal is always 404 (existence does not leak), never 403 or
a 500. Records belong to the Nantong site; the "other_*" users work at another site."""

import pytest

from tests import dosing_factories

ALL = [
    "coordinator",
    "pharmacist",
    "investigator",
    "monitor",
    "statistician",
    "supply_manager",
    "dsmb",
    "sponsor_safety",
    "other_coordinator",
    "other_monitor",
    "nobody",
]

# (url, the users who get 200; everyone else gets 404). {visit} is a Nantong visit.
LIST_SURFACES = [
    ("/audit/", {"investigator", "monitor", "other_monitor"}),
    ("/api/v1/audit-events/", {"investigator", "monitor", "other_monitor"}),
    ("/pharmacy/", {"pharmacist"}),
    ("/api/v1/pharmacy/queue/", {"pharmacist"}),
    ("/supply/", {"supply_manager"}),
    ("/api/v1/supply/stock/", {"supply_manager"}),
    # Whoever sees participants, the sponsor safety officer (blinded, to assess SAEs) included.
    (
        "/reminders/",
        {
            "coordinator",
            "pharmacist",
            "investigator",
            "monitor",
            "sponsor_safety",
            "other_coordinator",
            "other_monitor",
        },
    ),
    ("/reports/", {"investigator", "monitor", "statistician", "other_monitor"}),
    ("/api/v1/reports/enrollment/", {"investigator", "monitor", "statistician", "other_monitor"}),
    # The open safety report: whoever sees participants, and the safety report readers.
    (
        "/safety/report/",
        {
            "coordinator",
            "pharmacist",
            "investigator",
            "monitor",
            "statistician",
            "dsmb",
            "sponsor_safety",
            "other_coordinator",
            "other_monitor",
        },
    ),
    # The closed (by-arm) report: safety report readers who see allocation at every site.
    ("/safety/closed-report/", {"statistician", "dsmb"}),
    ("/safety/closed-report/pdf/", {"statistician", "dsmb"}),
    # SAEs to assess and SUSARs: the sponsor safety officer only.
    ("/safety/susars/", {"sponsor_safety"}),
]
RECORD_SURFACES = [
    ("/visits/{visit}/", {"coordinator", "pharmacist", "investigator", "monitor", "sponsor_safety"}),
    ("/api/v1/visits/{visit}/", {"coordinator", "pharmacist", "investigator", "monitor", "sponsor_safety"}),
]


@pytest.fixture
def nantong_visit(cast, site):
    participant = dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    return participant.visits.get(code="C2")


@pytest.mark.parametrize(("url", "allowed"), LIST_SURFACES, ids=[url for url, _ in LIST_SURFACES])
def test_list_surfaces_answer_200_to_their_roles_and_404_to_everyone_else(cast, client_for, url, allowed):
    answers = {name: client_for(cast[name]).get(url).status_code for name in ALL}
    assert answers == {name: 200 if name in allowed else 404 for name in ALL}


@pytest.mark.parametrize(("url", "allowed"), RECORD_SURFACES, ids=[url for url, _ in RECORD_SURFACES])
def test_a_record_exists_only_for_its_own_site_and_roles(cast, client_for, nantong_visit, url, allowed):
    url = url.format(visit=nantong_visit.pk)
    answers = {name: client_for(cast[name]).get(url).status_code for name in ALL}
    assert answers == {name: 200 if name in allowed else 404 for name in ALL}


def test_a_record_that_does_not_exist_and_one_at_another_site_look_the_same(cast, client_for, nantong_visit):
    other = client_for(cast.other_coordinator)
    mine = other.get(f"/api/v1/visits/{nantong_visit.pk}/")
    missing = other.get("/api/v1/visits/987654/")
    assert (mine.status_code, mine.json()) == (missing.status_code, missing.json())


def test_writes_to_another_sites_records_are_404_and_change_nothing(cast, api_for, nantong_visit):
    answer = api_for(cast.other_coordinator).post(
        f"/api/v1/visits/{nantong_visit.pk}/record/", {"actual_date": "2026-12-01", "weight_kg": "70"}, format="json"
    )
    assert answer.status_code == 404
    nantong_visit.refresh_from_db()
    assert nantong_visit.actual_date is None
