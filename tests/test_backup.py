"""The backup and restore drill: `manage.py backup`, `manage.py restore <dir> --database NAME`,
and `audit_verify` on the restored copy against the seals that went with the backup."""

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command
from psycopg import sql

from enrollment.models import Screening
from tests import dbsetup, factories
from trialsite.models import AuditEvent, Role

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def copy_name():
    if dbsetup.plan.superuser is None:
        pytest.skip("restoring into a new database needs a superuser DATABASE_URL")
    name = f"{dbsetup.plan.name}_restored"
    yield name
    with psycopg.connect(**{**dbsetup.plan.superuser, "dbname": "postgres"}) as server:
        server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def manage(*arguments, **env):
    roles = {
        "DATABASE_URL": dbsetup.database_url(),
        "DATABASE_OWNER_URL": dbsetup.database_url(user=dbsetup.OWNER_ROLE),
    }
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=ROOT,
        env={**os.environ, **roles, **env},
        capture_output=True,
        text=True,
    )


def test_a_backup_restored_into_a_new_database_verifies_against_its_seals(site, settings, tmp_path, copy_name):
    settings.AUDIT_SEAL_FILE = tmp_path / "audit-seals.jsonl"
    coordinator = factories.make_user(Role.COORDINATOR, site)
    for _ in range(3):
        factories.make_screening(site, by=coordinator)
    call_command("backup", into=tmp_path / "backups")
    [folder] = (tmp_path / "backups").iterdir()
    assert {path.name for path in folder.iterdir()} == {"database.dump", "audit-seals.jsonl", "backup.json"}
    manifest = json.loads((folder / "backup.json").read_text())
    assert manifest["seal"]["last_event_id"] == AuditEvent.objects.order_by("id").last().id

    superuser = dbsetup.database_url(user=dbsetup.plan.superuser["user"])
    restored = manage("restore", str(folder), "--database", copy_name, DATABASE_ADMIN_URL=superuser)
    assert restored.returncode == 0, restored.stderr

    copy = dbsetup.database_url().rsplit("/", 1)[0] + f"/{copy_name}"
    seals = str(folder / "audit-seals.jsonl")
    checked = manage("audit_verify", "--seal", seals, "--seal-database", manifest["database"], DATABASE_URL=copy)
    assert checked.returncode == 0, checked.stderr
    assert f"{manifest['seal']['rows']} audit rows chained" in checked.stdout
    assert "1 seal(s)" in checked.stdout

    # The copy is a copy: the restricted role reads it, and a rewrite there is caught too.
    with psycopg.connect(**{**dbsetup.plan.superuser, "dbname": copy_name}) as copied:
        assert copied.execute("SELECT count(*) FROM enrollment_screening").fetchone()[0] == Screening.objects.count()
        copied.execute("SET session_replication_role = replica")
        copied.execute(
            "UPDATE trialsite_auditevent SET reason = 'rewritten' WHERE id = %s", [manifest["seal"]["last_event_id"]]
        )
    checked = manage("audit_verify", "--seal", seals, "--seal-database", manifest["database"], DATABASE_URL=copy)
    assert checked.returncode == 1
    assert f"audit row {manifest['seal']['last_event_id']}" in checked.stderr


def test_restore_refuses_an_existing_database(site, settings, tmp_path, copy_name):
    settings.AUDIT_SEAL_FILE = tmp_path / "audit-seals.jsonl"
    call_command("backup", into=tmp_path)
    [folder] = [path for path in tmp_path.iterdir() if path.is_dir()]
    superuser = dbsetup.database_url(user=dbsetup.plan.superuser["user"])
    result = manage("restore", str(folder), "--database", dbsetup.plan.name, DATABASE_ADMIN_URL=superuser)
    assert result.returncode != 0
    assert "exists already" in result.stderr
