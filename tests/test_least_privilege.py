"""The application's database role cannot try: every tamper of issue 14, done through the
application's own connection (`django.db.connection`, the restricted role the whole suite runs
as), is refused by PostgreSQL."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import DatabaseError, connection, transaction

from enrollment.models import Screening
from tests import dbsetup, factories
from trialsite import dbroles
from trialsite.audit import audit_context
from trialsite.models import AuditEvent, Role

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _restricted(db):
    if dbsetup.plan.superuser is None:
        pytest.skip("DATABASE_URL is not a superuser, so the tests do not run as the restricted role")


@pytest.fixture
def coordinator(site):
    return factories.make_user(Role.COORDINATOR, site)


@pytest.fixture
def screening(site, coordinator):
    return factories.make_screening(site, by=coordinator)


def refused(statement: str, parameters=None, match: str = "permission denied|must be owner"):
    with pytest.raises(DatabaseError, match=match), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, parameters)


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE trialsite_auditevent DISABLE TRIGGER trial_audit_immutable_rows",
        "ALTER TABLE trialsite_auditevent DISABLE TRIGGER ALL",
        "ALTER TABLE enrollment_screening DISABLE TRIGGER trial_audit",
        "DROP TRIGGER trial_audit ON randomization_slot",
        "DROP TRIGGER trial_audit_insert ON enrollment_screening",
        "CREATE OR REPLACE FUNCTION trial_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$",
        "ALTER TABLE trialsite_auditevent OWNER TO CURRENT_USER",
        "DROP TABLE trialsite_auditchain",
    ],
)
def test_the_application_cannot_alter_disable_or_drop_a_trigger(screening, statement):
    refused(statement)


def test_the_application_cannot_switch_triggers_off_for_its_session(screening):
    # session_replication_role = replica would silence every trigger; it is superuser-only.
    refused("SET LOCAL session_replication_role = replica", match="permission denied")
    refused("SET session_replication_role = replica", match="permission denied")


def test_the_application_cannot_write_the_audit_trail_or_its_chain_directly(screening, coordinator):
    refused(
        "INSERT INTO trialsite_auditevent (occurred_at, table_name, record_pk, action, changed_fields, reason,"
        " database_user, actor_id) VALUES (now(), 'randomization_unblinding', '1', 'INSERT', '{}', 'forged',"
        " 'trialsite', %s)",
        [coordinator.pk],
    )
    refused("UPDATE trialsite_auditevent SET reason = 'kit dispensed'")
    refused("DELETE FROM trialsite_auditevent")
    refused("TRUNCATE trialsite_auditevent")
    refused("INSERT INTO trialsite_auditchain VALUES (1, 1, '\\x00', '\\x00', now())")
    refused("COPY trialsite_auditevent (table_name) FROM STDIN")
    assert not AuditEvent.objects.filter(reason__in=["forged", "kit dispensed"]).exists()


def test_the_application_cannot_become_the_owner_or_a_superuser(screening):
    refused(f'SET ROLE "{dbsetup.OWNER_ROLE}"')
    refused("SET ROLE postgres")
    refused(f'GRANT "{dbsetup.OWNER_ROLE}" TO CURRENT_USER', match="permission denied|must have admin option")
    refused("CREATE ROLE intruder", match="permission denied")
    refused("CREATE TABLE public.intruder (id int)", match="permission denied")


def test_the_application_role_owns_nothing_and_holds_no_dangerous_attribute(screening):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles "
            "WHERE rolname = current_user"
        )
        assert cursor.fetchone() == (False, False, False, False, False)
        cursor.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        )
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT session_user")
        assert cursor.fetchone()[0] == dbsetup.APP_ROLE
        assert dbroles.role_problems(cursor, audited_tables=["trialsite_auditevent", "enrollment_screening"]) == []


def test_writes_are_still_audited_through_the_owners_trigger_functions(screening, coordinator):
    with audit_context(actor=coordinator, reason="corrected"):
        Screening.objects.filter(pk=screening.pk).update(hospital_record_number="MRN-77")
    event = AuditEvent.objects.filter(table_name="enrollment_screening", action="UPDATE").get()
    assert event.actor == coordinator
    assert event.database_user == dbsetup.APP_ROLE


def test_a_change_cannot_be_credited_to_a_user_of_another_site(screening, other_site):
    stranger = factories.make_user(Role.COORDINATOR, other_site)
    with pytest.raises(DatabaseError, match="holds no role at site"), audit_context(actor=stranger, reason="x"):
        Screening.objects.filter(pk=screening.pk).update(hospital_record_number="MRN-88")
    # An insert (the statement trigger) as well as an update (the row trigger).
    with pytest.raises(DatabaseError, match="holds no role at site"), transaction.atomic():
        factories.make_screening(screening.site, by=stranger)
    assert not AuditEvent.objects.filter(actor=stranger).exists()


def test_a_change_cannot_be_credited_to_nobody_in_particular(screening, coordinator):
    coordinator.is_active = False
    coordinator.save(update_fields=["is_active"])
    for actor_id in ("999999", str(coordinator.pk)):
        with pytest.raises(DatabaseError, match="not an active user"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('trial.actor_id', %s, true), set_config('trial.reason', 'x', true)", [actor_id]
                )
            Screening.objects.filter(pk=screening.pk).update(hospital_record_number="MRN-99")


def test_check_deploy_fails_when_the_application_connects_as_a_superuser(site):
    environment = {
        "DJANGO_DEBUG": "false",
        "SECRET_KEY": "k" * 20 + "x9!Q" * 10,
        "ALLOWED_HOSTS": "trial.example.org",
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "DATABASE_URL": dbsetup.database_url(user=dbsetup.plan.superuser["user"]),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "trialsite.E020" in result.stderr and "is a superuser" in result.stderr, result.stderr
    # The restricted role passes the same check.
    assert dbroles.application_role(None) == []


def test_check_deploy_fails_when_the_application_role_owns_the_audited_tables(site):
    with connection.cursor() as cursor:
        problems = dbroles.role_problems(cursor, audited_tables=["trialsite_auditevent"])
    assert problems == []
    owner = dbsetup.database_url(user=dbsetup.OWNER_ROLE)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_DEBUG": "false",
            "SECRET_KEY": "k" * 20 + "x9!Q" * 10,
            "ALLOWED_HOSTS": "trial.example.org",
            "DATABASE_URL": owner,
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "owns (or is a member of the owner of) audited tables" in result.stderr, result.stderr
