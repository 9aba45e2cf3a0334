"""Tamper evidence: the audit chain and its seals. A superuser working behind the application's
back (its own connection, triggers switched off) changes, removes or inserts an audit row, or
rewrites a row and recomputes every hash after it; `audit_verify` names what was done."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from enrollment.models import Screening
from tests import dbsetup, factories
from trialsite import audit
from trialsite.models import AuditEvent, Role

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db(transaction=True)

BEHIND_THE_BACK = "SET session_replication_role = replica; "


@pytest.fixture
def seals(settings, tmp_path):
    settings.AUDIT_SEAL_FILE = tmp_path / "audit-seals.jsonl"
    return settings.AUDIT_SEAL_FILE


@pytest.fixture
def coordinator(site):
    return factories.make_user(Role.COORDINATOR, site)


@pytest.fixture
def trail(site, coordinator, seals):
    """A few committed screenings and changes, chained."""
    for number in range(3):
        screening = factories.make_screening(site, by=coordinator)
        with audit_context(coordinator, f"correction {number}"):
            Screening.objects.filter(pk=screening.pk).update(hospital_record_number=f"MRN-{number}")
    audit.chain_extend()
    return list(AuditEvent.objects.order_by("id").values_list("id", flat=True))


def audit_context(actor, reason):
    return audit.audit_context(actor=actor, reason=reason)


def verify(**options) -> str:
    try:
        call_command("audit_verify", **options)
    except CommandError as error:
        return str(error)
    return "OK"


def test_an_untouched_trail_verifies_and_a_seal_is_published(trail, seals, site):
    record = audit.seal(occasion="test")
    assert record["rows"] == len(trail) and record["last_event_id"] == trail[-1]
    assert json.loads(seals.read_text().splitlines()[-1]) == record
    notice = mail.outbox[-1]
    assert notice.to == [site.trial.sponsor_contact_email]
    assert record["head"] in notice.body
    assert verify() == "OK"


def test_a_changed_row_is_named(trail, superuser_sql):
    changed = trail[len(trail) // 2]
    superuser_sql(BEHIND_THE_BACK + f"UPDATE trialsite_auditevent SET reason = 'kit dispensed' WHERE id = {changed}")
    assert verify() == f"the audit trail was tampered with: first, audit row {changed} " + (
        f"(link {trail.index(changed) + 1}) was changed"
    )


def test_a_removed_row_is_named(trail, superuser_sql):
    removed = trail[3]
    superuser_sql(BEHIND_THE_BACK + f"DELETE FROM trialsite_auditevent WHERE id = {removed}")
    assert f"first, audit row {removed} (link 4) was removed" in verify()


def test_an_inserted_row_is_named(site, coordinator, seals, superuser_sql):
    factories.make_screening(site, by=coordinator)
    # A write that rolled back leaves ids unused: a forger can slip a backdated row in there.
    with pytest.raises(RuntimeError), transaction.atomic():
        factories.make_screening(site, by=coordinator)
        raise RuntimeError
    factories.make_screening(site, by=coordinator)
    audit.chain_extend()
    ids = list(AuditEvent.objects.order_by("id").values_list("id", flat=True))
    gap = next(number for number in range(ids[0], ids[-1]) if number not in ids)
    superuser_sql(
        BEHIND_THE_BACK
        + "INSERT INTO trialsite_auditevent (id, occurred_at, table_name, record_pk, action, changed_fields,"
        f" reason, database_user) VALUES ({gap}, now() - interval '1 day', 'randomization_unblinding', '1',"
        " 'DELETE', '{}', 'never happened', 'trialsite_app')"
    )
    assert f"first, audit row {gap} was inserted: it is not in the chain" in verify()


def test_a_rewrite_with_every_hash_recomputed_is_caught_by_a_seal_from_before(trail, seals, superuser_sql):
    audit.seal(occasion="before the rewrite")
    changed = trail[2]
    superuser_sql(
        BEHIND_THE_BACK
        + f"UPDATE trialsite_auditevent SET reason = 'kit dispensed' WHERE id = {changed}; "
        + "DO $$ DECLARE link record; head bytea; BEGIN "
        f"SELECT chain_hash INTO head FROM trialsite_auditchain WHERE position = {trail.index(changed)}; "
        f"FOR link IN SELECT c.position, {audit.CHAIN_CONTENT_SQL} AS content FROM trialsite_auditchain c "
        f"JOIN trialsite_auditevent e ON e.id = c.event_id WHERE c.position > {trail.index(changed)} "
        "ORDER BY c.position LOOP "
        "head := sha256(head || sha256(link.content)); "
        "UPDATE trialsite_auditchain SET row_hash = sha256(link.content), chain_hash = head "
        "WHERE position = link.position; END LOOP; END $$;"
    )
    empty = seals.with_name("no-seals.jsonl")
    assert verify(seal=empty) == "OK", "the rewritten chain is consistent in itself"
    message = verify()
    assert "no longer matches: the trail was rewritten and rehashed" in message
    assert f"and audit row {trail[-1]}" in message


def test_rows_committed_out_of_id_order_are_chained_once_every_earlier_writer_has_finished(site, coordinator, seals):
    """A transaction that drew an audit id and has not committed holds the chain back (only the
    chain: other writers go on), so its row is chained in id order, never skipped."""
    slow = psycopg.connect(dbsetup.database_url().replace("postgres://", "postgresql://", 1))
    with slow.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('trial.actor_id', %s, false), set_config('trial.reason', 'slow', false)",
            [str(coordinator.pk)],
        )
        cursor.execute("UPDATE trialsite_site SET name = name || ' (slow)' WHERE id = %s", [site.pk])
    factories.make_screening(site, by=coordinator)  # commits after the slow writer drew its id
    with pytest.raises(DatabaseError, match="audit chain not extended"):
        audit.chain_extend(wait_seconds=0.2)
    finished = threading.Timer(0.3, slow.commit)
    finished.start()
    audit.chain_extend(wait_seconds=30)
    finished.join()
    slow.close()
    chained = AuditEvent.objects.order_by("id").values_list("id", flat=True)
    assert verify() == "OK"
    with connection.cursor() as cursor:
        cursor.execute("SELECT array_agg(event_id ORDER BY position) FROM trialsite_auditchain")
        assert cursor.fetchone()[0] == list(chained)


def test_audit_verify_exits_non_zero_on_a_tampered_trail(trail, superuser_sql, seals):
    superuser_sql(BEHIND_THE_BACK + f"DELETE FROM trialsite_auditevent WHERE id = {trail[0]}")
    result = subprocess.run(
        [sys.executable, "manage.py", "audit_verify", "--seal", str(seals)],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": dbsetup.database_url()},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert f"audit row {trail[0]} (link 1) was removed" in result.stderr
