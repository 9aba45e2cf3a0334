"""What one randomization costs, and what it leaves for after commit (issue 20).

The request does only what must commit with the allocation: the locked participant, the slot,
the number, the visit plan. A constant number of statements, whatever the length of the list or
the number of participants already randomized. The plan's reminders are planned after commit by
the dispatcher's first step, as of the randomization time, so they are the rows the request used
to write: each once, on time, in the site's time zone."""

from __future__ import annotations

import datetime
import threading
import time

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from dosing.reminders import services as reminders
from dosing.reminders.models import Reminder
from enrollment.services import participant_withdraw
from randomization import services
from schedules.models import Visit
from tests import factories
from trialsite.audit import audit_context
from trialsite.models import AuditEvent

GIVE_UP_AFTER = 60  # seconds; only ever reached when something hangs
NOW = datetime.datetime(2026, 11, 3, 1, 30, tzinfo=datetime.UTC)  # 09:30 in Nantong
SHANGHAI = datetime.timezone(datetime.timedelta(hours=8))
QUERY_BUDGET = 8  # BEGIN and COMMIT included


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def audit_settings() -> tuple:
    """The actor and reason the audit trigger would read now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('trial.actor_id', true), current_setting('trial.reason', true)")
        return cursor.fetchone()


def new_list(trial, cast, *, slots_per_stratum: int, version: int):
    made = services.list_generate(
        trial=trial,
        seed=f"cost-{version}",
        slots_per_stratum=slots_per_stratum,
        created_by=cast.statistician,
        reason="" if version == 1 else "a longer list",
    )
    return services.list_lock(randomization_list=made, locked_by=cast.statistician, password=factories.PASSWORD)


def statements_of_one_randomization(site, cast, assert_max_num_queries=None) -> list[str]:
    participant = factories.make_participant(site, by=cast.coordinator)
    with (
        assert_max_num_queries(QUERY_BUDGET) if assert_max_num_queries else CaptureQueriesContext(connection) as queries
    ):
        services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    return [query["sql"] for query in queries.captured_queries]


@pytest.mark.django_db(transaction=True)
def test_a_randomization_takes_the_same_few_statements_for_a_short_list_or_a_long_one_after_many(
    trial, cast, site, django_assert_max_num_queries
):
    """Outside any enclosing transaction, as a request runs it (the test's own transaction would
    add savepoints)."""
    new_list(trial, cast, slots_per_stratum=4, version=1)
    first = statements_of_one_randomization(site, cast, django_assert_max_num_queries)

    new_list(trial, cast, slots_per_stratum=3000, version=2)
    for _ in range(30):
        statements_of_one_randomization(site, cast)
    later = statements_of_one_randomization(site, cast, django_assert_max_num_queries)

    assert len(first) == len(later) <= QUERY_BUDGET, later
    # The same statements, not merely as many: nothing grows with the list or the participants.
    assert [sql.split()[0] for sql in first] == [sql.split()[0] for sql in later]
    assert not any("SAVEPOINT" in sql for sql in later)
    assert not any("reminders_reminder" in sql for sql in later)


@pytest.mark.django_db(transaction=True)
def test_the_randomize_request_adds_only_the_token_and_the_grants_to_the_randomization(trial, cast, site):
    """Through the API as a client sends it: the token, the user's roles (which also tell the
    trials they work in, so a token request asks no query of its own for that), then the
    randomization's own statements, whose locked read of the participant is also the check that
    the participant is at one of the user's sites."""
    new_list(trial, cast, slots_per_stratum=40, version=1)
    participant = factories.make_participant(site, by=cast.coordinator)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {factories.api_key(cast.coordinator)}")
    # The token's first use is recorded once (trialsite.tokens.LAST_USE_PRECISION), not per request.
    assert api.get("/api/v1/me/").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        answer = api.post(f"/api/v1/participants/{participant.pk}/randomize/", {}, format="json")
    assert answer.status_code == 200, answer.content
    statements = [query["sql"] for query in queries.captured_queries]
    assert len(statements) <= 2 + QUERY_BUDGET, statements
    assert sum(1 for sql in statements if 'FROM "trialsite_staffrole"' in sql) == 1, statements
    # The participant is read once, locked: the access check is a condition of that read.
    reads = [sql for sql in statements if sql.startswith("SELECT") and "enrollment_participant" in sql]
    assert len(reads) == 1 and "FOR UPDATE" in reads[0], statements


@pytest.mark.django_db(transaction=True)
def test_the_api_randomizes_nobody_at_a_site_the_user_cannot_randomize_at(trial, cast, site, other_site):
    """The access check made by the locked read refuses as the separate read did: 404 alike for a
    participant elsewhere and for none at all, and nothing written, the slots untouched."""
    new_list(trial, cast, slots_per_stratum=4, version=1)
    elsewhere = factories.make_participant(other_site, by=cast.other_coordinator)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {factories.api_key(cast.coordinator)}")
    events_before = AuditEvent.objects.count()

    refused = api.post(f"/api/v1/participants/{elsewhere.pk}/randomize/", {}, format="json")
    missing = api.post(f"/api/v1/participants/{elsewhere.pk + 10_000}/randomize/", {}, format="json")

    assert refused.status_code == missing.status_code == 404
    assert refused.json() == missing.json()
    elsewhere.refresh_from_db()
    assert elsewhere.randomization_number in ("", None) and elsewhere.randomized_at is None
    assert not Visit.objects.filter(participant=elsewhere).exists()
    assert not trial.randomization_lists.get().slots.filter(participant__isnull=False).exists()
    assert AuditEvent.objects.count() == events_before
    # The participant's own coordinator randomizes them.
    own = APIClient()
    own.credentials(HTTP_AUTHORIZATION=f"Token {factories.api_key(cast.other_coordinator)}")
    assert own.post(f"/api/v1/participants/{elsewhere.pk}/randomize/", {}, format="json").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_an_exhausted_stratum_through_the_api_alerts_the_statistician_of_the_participants_site(
    trial, cast, site, mailoutbox
):
    cast.statistician.email = "stats@sponsor.example"
    cast.statistician.save()
    new_list(trial, cast, slots_per_stratum=1, version=1)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {factories.api_key(cast.coordinator)}")
    first, second = (factories.make_participant(site, by=cast.coordinator) for _ in range(2))
    assert api.post(f"/api/v1/participants/{first.pk}/randomize/", {}, format="json").status_code == 200

    refused = api.post(f"/api/v1/participants/{second.pk}/randomize/", {}, format="json")

    assert refused.status_code == 409, refused.content
    [alert] = mailoutbox
    assert alert.to == ["stats@sponsor.example"] and site.code in alert.subject


@pytest.mark.django_db(transaction=True)
def test_the_randomization_is_audited_as_before_by_its_actor_and_reason(trial, cast, site):
    new_list(trial, cast, slots_per_stratum=4, version=1)
    participant = factories.make_participant(site, by=cast.coordinator)
    services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    participant.refresh_from_db()
    assert participant.randomization_number == "NT-0001"

    rows = AuditEvent.objects.filter(reason="Randomized")
    assert set(rows.values_list("actor_id", flat=True)) == {cast.coordinator.pk}
    written = {(row.table_name, row.action) for row in rows}
    assert written == {
        ("randomization_slot", "UPDATE"),
        ("trialsite_site", "UPDATE"),
        ("enrollment_participant", "UPDATE"),
        ("dosing_visit", "INSERT"),
    }
    changed = rows.get(table_name="enrollment_participant")
    assert changed.changed_fields == ["randomization_number", "randomized_at", "status"]
    assert rows.filter(table_name="dosing_visit").count() == participant.visits.count() > 10
    # No savepoint was left to restore the settings: the transaction ended with them.
    assert audit_settings() in {(None, None), ("", "")}


@pytest.mark.django_db
def test_a_nested_audit_context_restores_the_enclosing_actor_and_reason(cast, site):
    with audit_context(actor=cast.coordinator, reason="outer"):
        with audit_context(actor=cast.investigator, reason="inner"):
            assert audit_settings() == (str(cast.investigator.pk), "inner")
        assert audit_settings() == (str(cast.coordinator.pk), "outer")
        with audit_context(actor=cast.coordinator, reason="outer"):
            pass
        assert audit_settings() == (str(cast.coordinator.pk), "outer")
        with pytest.raises(LookupError), audit_context(actor=None, reason="failing"):
            raise LookupError("refused")
        assert audit_settings() == (str(cast.coordinator.pk), "outer")


@pytest.mark.django_db
def test_a_nested_audit_context_without_a_savepoint_leaves_the_rollback_to_the_callers_block(cast, site):
    with audit_context(actor=cast.coordinator, reason="outer"):
        with CaptureQueriesContext(connection) as queries, audit_context(reason="inner", savepoint=False):
            assert audit_settings() == ("", "inner")
        assert audit_settings() == (str(cast.coordinator.pk), "outer")
        assert not [query for query in queries.captured_queries if "SAVEPOINT" in query["sql"]]
        # A failure inside: the caller's atomic block rolls back to its savepoint, settings and all.
        with pytest.raises(LookupError), transaction.atomic():
            with audit_context(actor=cast.investigator, reason="failing", savepoint=False):
                assert audit_settings() == (str(cast.investigator.pk), "failing")
                raise LookupError("refused")
        assert audit_settings() == (str(cast.coordinator.pk), "outer")


def reminder_rows(participant):
    return sorted(
        (reminder.visit.code, reminder.kind, reminder.audience, reminder.due_at)
        for reminder in Reminder.objects.filter(participant=participant).select_related("visit")
    )


def randomized(site, cast):
    participant = factories.make_participant(site, by=cast.coordinator)
    return services.participant_randomize(participant=participant, randomized_by=cast.coordinator)


@pytest.mark.django_db(transaction=True)
def test_the_reminders_are_planned_after_commit_as_the_request_would_have_planned_them(trial, cast, site, _frozen):
    new_list(trial, cast, slots_per_stratum=4, version=1)
    participant = randomized(site, cast)
    assert not Reminder.objects.filter(participant=participant).exists()
    expected = sorted(
        (reminder.visit.code, reminder.kind, reminder.audience, reminder.due_at)
        for visit in Visit.objects.filter(participant=participant)
        for reminder in reminders.planned_reminders(visit, participant=participant, now=NOW)
    )
    assert len(expected) > 2 * participant.visits.count()

    # The dispatcher runs late: C2's 7-day reminder fell due meanwhile. It is planned all the
    # same (and handed over at once), as the request would have planned it.
    c2_seven = datetime.datetime(2026, 11, 21, 9, 0, tzinfo=SHANGHAI)
    _frozen.move_to(c2_seven + datetime.timedelta(hours=1))
    assert reminders.reminders_plan_pending() == len(expected)
    assert reminder_rows(participant) == expected
    assert ("C2", Reminder.Kind.WINDOW_OPENS_7_DAYS, Reminder.Audience.SITE_STAFF, c2_seven) in expected
    assert reminders.due_reminder_ids(now=datetime.datetime.now(datetime.UTC), batch_size=100)

    # Again, and by the dispatcher: nothing more.
    assert reminders.reminders_plan_pending() == 0
    reminders.reminders_cancel_stale()
    assert reminder_rows(participant) == expected
    assert AuditEvent.objects.filter(table_name="reminders_reminder", subject_id=participant.pk).count() == len(
        expected
    )


@pytest.mark.django_db(transaction=True)
def test_the_dispatcher_plans_before_it_hands_over_and_skips_a_participant_who_withdrew(trial, cast, site):
    new_list(trial, cast, slots_per_stratum=4, version=1)
    staying, leaving = randomized(site, cast), randomized(site, cast)
    participant_withdraw(
        participant=leaving, withdrawn_by=cast.coordinator, withdrawn_on=NOW.date(), reason="moved away"
    )
    assert reminders.reminders_dispatch() == 0  # nothing due yet
    assert Reminder.objects.filter(participant=staying).exists()
    assert not Reminder.objects.filter(participant=leaving).exists()


class Planner(threading.Thread):
    """Plans pending reminders on its own connection; `hold` keeps its transaction open after
    planning until released."""

    def __init__(self, *, hold: threading.Event | None = None):
        super().__init__(daemon=True)
        self.hold = hold
        self.planned = self.error = self.pid = None
        self.done_planning = threading.Event()

    def run(self):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                self.pid = cursor.fetchone()[0]
            with transaction.atomic():
                self.planned = reminders.reminders_plan_pending()
                self.done_planning.set()
                if self.hold is not None:
                    assert self.hold.wait(GIVE_UP_AFTER)
        except Exception as error:  # asserted by the test
            self.error = error
        finally:
            self.done_planning.set()
            connection.close()


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_planning_at_once_write_each_reminder_once(trial, cast, site):
    new_list(trial, cast, slots_per_stratum=4, version=1)
    participant = randomized(site, cast)
    release = threading.Event()
    first = Planner(hold=release)
    first.start()
    assert first.done_planning.wait(GIVE_UP_AFTER), first.error
    # The first has written the rows and not committed: the second must wait on them.
    second = Planner()
    second.start()
    deadline = time.monotonic() + GIVE_UP_AFTER
    while second.is_alive():
        with connection.cursor() as cursor:
            cursor.execute("SELECT cardinality(pg_blocking_pids(%s)) > 0", [second.pid or 0])
            if cursor.fetchone()[0]:
                break
        assert time.monotonic() < deadline, "the second planner neither finished nor waited"
        second.join(0.005)
    release.set()
    first.join(GIVE_UP_AFTER)
    second.join(GIVE_UP_AFTER)
    assert first.error is None and second.error is None, (first.error, second.error)

    rows = reminder_rows(participant)
    assert rows and len(rows) == len(set(rows)) == first.planned


@pytest.mark.django_db
def test_the_participant_locked_for_randomization_is_the_orms_participant_with_everything_read(cast, site):
    """The statement is written from the models, not compiled by the ORM: every field of the five
    models reads back as the ORM reads it (JSON, dates, times, choices), and nothing randomization
    asks of the participant needs another query."""
    from django.forms.models import model_to_dict

    from enrollment.models import Participant
    from enrollment.selectors import participant_locked_for_randomization

    stayed = factories.make_participant(site, by=cast.coordinator, stratification={"ecog": "0"})
    withdrawn = factories.make_participant(site, by=cast.coordinator)
    participant_withdraw(
        participant=withdrawn, withdrawn_by=cast.coordinator, withdrawn_on=datetime.date(2026, 11, 3), reason="moved"
    )

    def everything(participant) -> list[dict]:
        withdrawal = getattr(participant, "withdrawal", None)
        return [
            {field.attname: getattr(one, field.attname) for field in type(one)._meta.concrete_fields}
            for one in (participant, participant.screening, participant.site, participant.site.trial, withdrawal)
            if one is not None
        ]

    for expected in (stayed, withdrawn):
        orm = Participant.objects.select_related("screening", "site__trial").get(pk=expected.pk)
        with CaptureQueriesContext(connection) as queries:
            locked = participant_locked_for_randomization(expected.pk)
            read = everything(locked)
            assert locked.screening.participant is locked
            assert locked.consented is True
            assert locked.site.trial.protocol.randomization.method
        assert len(queries.captured_queries) == 1
        assert read == everything(orm)
        assert model_to_dict(locked.screening) == model_to_dict(orm.screening)
    assert hasattr(participant_locked_for_randomization(withdrawn.pk), "withdrawal")
    assert not hasattr(participant_locked_for_randomization(stayed.pk), "withdrawal")
    assert participant_locked_for_randomization(10**9) is None
