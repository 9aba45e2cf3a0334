"""The reporting layer: the counts the PI reads, per site and trial-wide, blinded and not, and
a CONSORT flow that adds up."""

import datetime

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reports import selectors
from tests import factories, reports_data
from trialsite.audit import audit_context
from trialsite.models import Role


@pytest.fixture
def frozen():
    with time_machine.travel(datetime.datetime(2026, 12, 15, 4, tzinfo=datetime.UTC), tick=False):
        yield


@pytest.fixture
def data(trial, site, other_site, cast, frozen):
    return reports_data.build(trial, site, other_site, cast)


@pytest.fixture
def two_site_monitor(site, other_site):
    user = factories.make_user(Role.MONITOR, site, username="monitor-both")
    with audit_context(reason="second site"):
        user.trial_roles.create(site=other_site, role=Role.MONITOR)
    return user


@pytest.fixture
def two_site_statistician(site, other_site):
    user = factories.make_user(Role.STATISTICIAN, site, username="statistician-both")
    with audit_context(reason="second site"):
        user.trial_roles.create(site=other_site, role=Role.STATISTICIAN)
    return user


def test_the_counts_per_site_follow_the_definitions(data, two_site_monitor):
    report = selectors.enrollment_report(selectors.report_scope(two_site_monitor))
    by_site = {entry["site"].code: entry["counts"] for entry in report.sites}
    for code, expected in data.expected.items():
        assert {key: by_site[code][key] for key in expected} == expected, code


def test_trial_wide_totals_are_the_sum_over_the_sites_the_user_may_see(data, two_site_monitor, cast):
    both = selectors.enrollment_report(selectors.report_scope(two_site_monitor))
    for key in selectors.COUNT_KEYS:
        assert both.total[key] == data.expected["NT"][key] + data.expected["SH"][key]
    # The PI works at Nantong only: their trial-wide total is Nantong's.
    investigator = selectors.enrollment_report(selectors.report_scope(cast.investigator))
    assert [entry["site"].code for entry in investigator.sites] == ["NT"]
    assert investigator.total["screened"] == data.expected["NT"]["screened"]


def test_screen_failures_by_reason_count_each_failed_reason_but_people_once(data, cast):
    report = selectors.enrollment_report(selectors.report_scope(cast.investigator))
    reasons = {reason["code"]: reason["total"] for reason in report.failure_reasons}
    assert reasons == {"IN2": 1, "EX1": 2, "EX2": 1}
    assert sum(reasons.values()) == 4
    assert report.total["screen_failures"] == 3


def test_the_consort_flow_adds_up(data, two_site_statistician):
    scope = selectors.report_scope(two_site_statistician)
    flow = selectors.consort_flow(scope)
    assert flow.assessed == 17
    assert flow.assessed == flow.excluded + flow.randomized
    assert flow.excluded == (
        flow.excluded_not_eligible + flow.excluded_incomplete + flow.excluded_eligible_not_randomized
    )
    assert (flow.excluded_not_eligible, flow.excluded_incomplete, flow.excluded_eligible_not_randomized) == (4, 1, 2)
    assert flow.randomized == 10 == sum(group.allocated for group in flow.groups)
    assert [group.code for group in flow.groups] == ["TOC", "ASA", "COMBO", "PBO"]
    assert sum(group.discontinued for group in flow.groups) == 1
    for group in flow.groups:
        # Intention to treat: everyone allocated is analysed.
        assert group.analysed == group.allocated
        assert group.lost_to_follow_up + group.discontinued <= group.allocated
    allocated = {group.code: group.allocated for group in flow.groups}
    assert allocated == {code: list(data.arms.values()).count(code) for code in allocated}


def test_a_blinded_consort_has_one_allocation_box_with_the_total(data, cast):
    flow = selectors.consort_flow(selectors.report_scope(cast.investigator))
    assert flow.blinded
    [group] = flow.groups
    assert group.code is None
    assert group.allocated == flow.randomized == 8
    assert flow.assessed == flow.excluded + flow.randomized


def test_a_blinded_report_does_not_even_query_the_arms(data, cast):
    scope = selectors.report_scope(cast.investigator)
    with CaptureQueriesContext(connection) as queries:
        selectors.consort_flow(scope)
        selectors.enrollment_by_month(scope)
    sql = " ".join(query["sql"] for query in queries.captured_queries)
    assert "randomization_slot" not in sql
    assert "trialsite_arm" not in sql
    with pytest.raises(PermissionError):
        scope.arms()


def test_allocation_is_shown_only_when_the_user_may_see_it_at_every_site_in_scope(data, site, other_site, cast):
    assert selectors.report_scope(cast.statistician).unblinded
    # Unblinded at Nantong, but only a monitor (blinded) at Shanghai: the whole report is blinded.
    user = factories.make_user(Role.STATISTICIAN, site)
    with audit_context(reason="second site"):
        user.trial_roles.create(site=other_site, role=Role.MONITOR)
    assert not selectors.report_scope(user).unblinded
    assert selectors.report_scope(user, site_id=site.pk).unblinded


def test_enrollment_by_month_is_cumulative_with_empty_months_present(data, cast):
    months = selectors.enrollment_by_month(selectors.report_scope(cast.investigator))
    assert [(m["month"].isoformat(), m["randomized"], m["cumulative"]) for m in months] == [
        ("2026-09-01", 6, 6),
        ("2026-10-01", 0, 6),
        ("2026-11-01", 2, 8),
        ("2026-12-01", 0, 8),
    ]


def test_the_counts_take_a_constant_number_of_queries(data, two_site_statistician, django_assert_max_num_queries):
    scope = selectors.report_scope(two_site_statistician)
    with django_assert_max_num_queries(6):
        selectors.consort_flow(scope)
    for _ in range(5):
        factories.make_screening(data.randomized[0].site, by=two_site_statistician)
    with django_assert_max_num_queries(6):
        selectors.consort_flow(scope)


@pytest.mark.parametrize("role", ["coordinator", "pharmacist", "supply_manager", "nobody"])
def test_roles_without_export_reports_have_no_report(cast, role):
    from django.http import Http404

    with pytest.raises(Http404):
        selectors.report_scope(cast[role])


def test_a_site_outside_the_users_sites_is_not_found(cast, other_site):
    from django.http import Http404

    with pytest.raises(Http404):
        selectors.report_scope(cast.investigator, site_id=other_site.pk)
