"""What recording a dosing visit costs (issue 20): the same statements whatever the stock of kits,
the number of participants or the visits already recorded. The kits are chosen and claimed in one
statement (dosing.services._kits_claim); everything else the visit reads is read once.

Outside any enclosing transaction, as a request runs it (the test's own transaction would add
savepoints)."""

from __future__ import annotations

import datetime
import itertools
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from dosing import services
from dosing.models import Kit, KitStatus
from schedules.models import Visit
from tests import dosing_factories as df
from tests import factories
from trialsite.audit import audit_context

DAY0 = datetime.date(2026, 11, 3)
LABS = {"neutrophils": 3000, "platelets": 200000, "alt_uln": Decimal("1"), "ast_uln": Decimal("1")}
# BEGIN and COMMIT included. Seven are the two case report forms the dose reads its weight and
# labs from (crf.forms_save: both at once, audited item by item, in the visit's transaction); the
# kits are one statement.
QUERY_BUDGET = 22
_numbers = itertools.count(1)


def stock(site, *, per_content: int, lots: int) -> None:
    """`per_content` kits of every content of every kit type in each of `lots` packaging lots."""
    kits = [
        Kit(
            trial=site.trial,
            kit_number=f"S{next(_numbers):07d}",
            kit_type=kit_type,
            content=content,
            lot=f"LOT-{lot}",
            expiry=datetime.date(2028, 1, 31) + datetime.timedelta(days=lot),
            packaging_lot=f"PL-{lot}",
            label_expiry=datetime.date(2028, 1, 31) + datetime.timedelta(days=lot),
            status=KitStatus.AT_SITE,
            site=site,
        )
        for lot in range(lots)
        for kit_type in ("INF", "TAB")
        for content in ("active", "placebo")
        for _ in range(per_content)
    ]
    with audit_context(reason="test stock"):
        Kit.objects.bulk_create(kits)


def record(visit: Visit, user, *, on=DAY0):
    with time_machine.travel(datetime.datetime.combine(on, datetime.time(4, 0), tzinfo=datetime.UTC), tick=False):
        return services.visit_record(visit=visit, actual_date=on, recorded_by=user, weight_kg=Decimal("60"), **LABS)


def statements_of_one_recording(visit: Visit, user) -> tuple[list[str], services.VisitOutcome]:
    # A fresh user, as each request has: its roles are read once per request, and the cached
    # roles of an earlier recording would hide that read.
    user = type(user).objects.get(pk=user.pk)
    with CaptureQueriesContext(connection) as queries:
        outcome = record(visit, user)
    return [query["sql"] for query in queries.captured_queries], outcome


def kinds(statements: list[str]) -> list[str]:
    return [sql.split()[0] for sql in statements]


@pytest.mark.django_db(transaction=True)
def test_recording_a_dosing_visit_with_its_kits_takes_the_same_statements_whatever_the_stock_and_participants(
    site, cast
):
    first = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    stock(site, per_content=10, lots=1)
    small, outcome = statements_of_one_recording(first.visits.get(code="C1"), cast.coordinator)
    assert len(outcome.kits) == 2 and not outcome.no_kit

    # Twenty times the stock over four packaging lots, twenty participants of every arm, most of
    # them recorded already.
    stock(site, per_content=200, lots=4)
    others = [
        df.randomized_participant(site, arm_code=arm, by=cast.coordinator, day0=DAY0)
        for arm in ("TOC", "ASA", "COMBO", "PBO") * 5
    ]
    for participant in others[:-1]:
        record(participant.visits.get(code="C1"), cast.coordinator)
    large, outcome = statements_of_one_recording(others[-1].visits.get(code="C1"), cast.coordinator)
    assert len(outcome.kits) == 2 and not outcome.no_kit

    assert len(small) == len(large) <= QUERY_BUDGET, large
    # The same statements, not merely as many: nothing is read kit by kit, lot by lot or visit by visit.
    assert kinds(small) == kinds(large)
    # The kits: one statement, besides the kit types the visit already has, read with the visit.
    touching_kits = [sql for sql in large if "dosing_kit" in sql and not sql.startswith('SELECT "dosing_visit"')]
    assert len(touching_kits) == 1 and touching_kits[0].startswith("WITH chosen_0"), touching_kits


@pytest.mark.django_db(transaction=True)
def test_assigning_kits_again_takes_the_same_statements_whatever_the_stock(site, cast):
    """The pharmacist's "assign kits again" after a stock-out (services.kits_assign)."""
    participants = [df.randomized_participant(site, arm_code="COMBO", by=cast.coordinator, day0=DAY0) for _ in range(2)]
    for participant in participants:
        outcome = record(participant.visits.get(code="C1"), cast.coordinator)
        assert outcome.no_kit
    stock(site, per_content=5, lots=1)
    with CaptureQueriesContext(connection) as small:
        assert len(services.kits_assign(visit=participants[0].visits.get(code="C1"), assigned_by=cast.pharmacist)) == 2
    stock(site, per_content=300, lots=3)
    with CaptureQueriesContext(connection) as large:
        assert len(services.kits_assign(visit=participants[1].visits.get(code="C1"), assigned_by=cast.pharmacist)) == 2
    assert kinds([q["sql"] for q in small.captured_queries]) == kinds([q["sql"] for q in large.captured_queries])
    assert len(large.captured_queries) <= 8, [q["sql"] for q in large.captured_queries]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stocked", [True, False], ids=["kits assigned", "no kit"])
def test_the_record_request_answers_the_visit_as_it_is_then_read_with_one_statement(site, cast, stocked):
    """The API answers from what the recording did (its kits from the claiming statement, no
    repeated labs yet) after one read of the visit and its dose: the same visit a GET then gives,
    the token and the roles besides the recording's own statements."""
    participant = df.randomized_participant(site, arm_code="COMBO", by=cast.coordinator, day0=DAY0)
    if stocked:
        stock(site, per_content=3, lots=2)
    visit = participant.visits.get(code="C1")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {factories.api_key(cast.coordinator)}")
    body = {"actual_date": DAY0.isoformat(), "weight_kg": "61.4", **{name: str(value) for name, value in LABS.items()}}
    with time_machine.travel(datetime.datetime.combine(DAY0, datetime.time(4, 0), tzinfo=datetime.UTC), tick=False):
        # The token's first use is recorded once (trialsite.tokens.LAST_USE_PRECISION), not per request.
        assert api.get("/api/v1/me/").status_code == 200
        with CaptureQueriesContext(connection) as queries:
            answer = api.post(f"/api/v1/visits/{visit.pk}/record/", body, format="json")
        assert answer.status_code == 200, answer.content
        # Read now: the next request's start clears the connection's log of queries.
        statements = [query["sql"] for query in queries.captured_queries]
        assert answer.json()["no_kit"] is not stocked
        shown = api.get(f"/api/v1/visits/{visit.pk}/").json()
    assert answer.json()["visit"] == shown
    assert len(shown["kits"]) == (2 if stocked else 0) and shown["dose"]["weight_kg"] == "61.4"
    assert not [sql for sql in statements if "dosing_repeatlabs" in sql]
    if stocked:
        # The token, the roles and the visit for the access check; the recording (whose roles the
        # request has read already); the one read back. The kits are not read again.
        assert len(statements) <= 3 + QUERY_BUDGET - 1 + 1, statements
        assert not [sql for sql in statements if sql.startswith('SELECT "dosing_kit"')]


@pytest.mark.django_db(transaction=True)
def test_a_form_saved_as_part_of_a_locked_recording_needs_the_recordings_transaction(site, cast):
    """form_save(participant_locked=True) takes no lock of its own: outside a transaction that
    holds one, it is refused rather than run unlocked."""
    from crf.services import form_save

    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    with pytest.raises(transaction.TransactionManagementError):
        form_save(
            user=cast.coordinator,
            values={"weight": "60"},
            participant=participant,
            form_code="vitals",
            visit_code="C1",
            participant_locked=True,
        )


@pytest.mark.django_db(transaction=True)
def test_the_record_request_finds_no_visit_at_a_site_the_user_cannot_record_at(site, cast):
    """The access check is a condition of the participant's locked read: another site's visit
    and a visit that does not exist are the same 404, valid body or not, with nothing written."""
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    stock(site, per_content=2, lots=1)
    visit = participant.visits.get(code="C1")
    body = {"actual_date": DAY0.isoformat(), "weight_kg": "61.4", **{name: str(value) for name, value in LABS.items()}}
    with time_machine.travel(datetime.datetime.combine(DAY0, datetime.time(4, 0), tzinfo=datetime.UTC), tick=False):
        for user in (cast.other_coordinator, cast.monitor):
            api = APIClient()
            api.credentials(HTTP_AUTHORIZATION=f"Token {factories.api_key(user)}")
            elsewhere = api.post(f"/api/v1/visits/{visit.pk}/record/", body, format="json")
            missing = api.post(f"/api/v1/visits/{visit.pk + 10_000}/record/", body, format="json")
            invalid = api.post(f"/api/v1/visits/{visit.pk}/record/", {"weight_kg": "x"}, format="json")
            assert elsewhere.status_code == missing.status_code == invalid.status_code == 404, user.username
            assert elsewhere.json() == missing.json()
        visit.refresh_from_db()
        assert visit.status == "scheduled" and not Kit.objects.filter(visit=visit).exists()
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {factories.api_key(cast.coordinator)}")
        invalid = api.post(f"/api/v1/visits/{visit.pk}/record/", {"weight_kg": "x"}, format="json")
        assert invalid.status_code == 400 and "actual_date" in invalid.json()
        assert api.post(f"/api/v1/visits/{visit.pk}/record/", body, format="json").status_code == 200
