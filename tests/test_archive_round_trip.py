"""The trial archive is the backup of record (issue 19): an unblinded ODM export of a whole trial
with every row of it, which `manage.py load_archive` loads into an empty database of this system,
and that database exports the identical file again. Both protocols, with the other trial in the
source database to prove the archive holds one trial and nothing of the other."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import time_machine
import xmlschema
from django.conf import settings
from django.core.management import call_command
from psycopg import sql

from reports import archive, services
from reports.models import Export, ExportKind, ExportStatus
from tests import dbsetup, factories
from trialsite.audit import audit_context
from trialsite.models import Role, Trial
from trialsite.protocol import load_protocol

ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = Path(settings.PROTOCOL_FILE).parent
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.AUDIT_SEAL_FILE = tmp_path / "audit-seals.jsonl"


@pytest.fixture
def two_trials(settings):
    """Both protocols with the demo's journey through the services at their first site: a locked
    list, kits received, participants screened, signed, randomized and dosed."""
    with time_machine.travel(datetime.datetime(2026, 12, 1, 2, tzinfo=datetime.UTC), tick=False):
        trials = [load_protocol(path) for path in sorted(PROTOCOLS.glob("*.toml"))]
        settings.DEBUG = True  # the demo is for development only
        call_command("load_demo", verbosity=0)
        settings.DEBUG = False
        add_safety_and_unblinding(trials[0])
    return trials


def add_safety_and_unblinding(trial: Trial) -> None:
    """At the demo's randomized participant: an AE whose grade changed, a serious sepsis whose
    SAE report the PI signed, and an emergency unblinding (written directly: two-factor
    verification is a request's, and what is under test is the archive)."""
    from django.contrib.auth import get_user_model

    from enrollment.models import Participant
    from randomization.models import Unblinding
    from safety import services as safety
    from safety.models import Seriousness
    from trialsite.management.commands.load_demo import DEMO_PASSWORD

    people = {user.username: user for user in get_user_model().objects.all()}
    participant = Participant.objects.filter(site__trial=trial, randomization_number__isnull=False).first()
    first = safety.ae_record(
        participant=participant,
        recorded_by=people["coordinator"],
        details=safety.AeDetails(term="epistaxis", grade=1, onset_date=datetime.date(2026, 12, 1)),
    )
    safety.ae_grade_change(
        event=first, recorded_by=people["coordinator"], details=safety.AeDetails(grade=2, onset_date=first.onset_date)
    )
    serious = safety.ae_record(
        participant=participant,
        recorded_by=people["coordinator"],
        details=safety.AeDetails(
            term="sepsis",
            grade=4,
            onset_date=datetime.date(2026, 12, 1),
            serious=True,
            seriousness=(Seriousness.HOSPITALISATION,),
            awareness_at=datetime.datetime(2026, 12, 1, 1, tzinfo=datetime.UTC),
            relation_infusion="possible",
            relation_tablets="unlikely",
            action_infusion="held",
            action_tablets="none",
        ),
    )
    report = safety.sae_report_write(
        event=serious, written_by=people["coordinator"], narrative="Admitted with fever; 败血症.", complete=True
    )
    safety.sae_report_sign(report=report, signer=people["investigator"], password=DEMO_PASSWORD)
    with audit_context(actor=people["investigator"], reason="Emergency unblinding: sepsis"):
        Unblinding.objects.create(
            participant=participant,
            site=participant.site,
            unblinded_by=people["investigator"],
            reason="sepsis, 败血症",
        )


def statistician_of(trial: Trial):
    """An unblinded statistician at every site of the trial."""
    sites = list(trial.sites.order_by("code"))
    user = factories.make_user(Role.STATISTICIAN, sites[0], username=f"archivist-{trial.nct_id}")
    with audit_context(reason="statistician of every site"):
        for site in sites[1:]:
            user.trial_roles.create(site=site, role=Role.STATISTICIAN)
    return user


def archive_of(trial: Trial, user, when: datetime.datetime) -> tuple[Export, Path]:
    from trialsite import tenancy

    token = tenancy.activate(trial)
    try:
        with time_machine.travel(when, tick=False):
            export = services.export_request(user=user, kind=ExportKind.ARCHIVE, format="odm", background=False)
    finally:
        tenancy.deactivate(token)
    assert export.status == ExportStatus.DONE, export.error
    return export, services.export_file(export)


def manage(*arguments, database: str):
    env = {
        **os.environ,
        "DATABASE_URL": dbsetup.database_url().rsplit("/", 1)[0] + f"/{database}",
        "DATABASE_OWNER_URL": dbsetup.database_url(user=dbsetup.OWNER_ROLE).rsplit("/", 1)[0] + f"/{database}",
        "AUDIT_SEAL_FILE": str(settings.AUDIT_SEAL_FILE),
    }
    return subprocess.run([sys.executable, "manage.py", *arguments], cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def migrated_template():
    """One new database migrated by the owner role, the way `make run` makes one, for the
    module's tests to copy (migrating is the slow part)."""
    if dbsetup.plan.superuser is None:
        pytest.fail("the round trip needs a superuser DATABASE_URL to create its empty database")
    name = f"{dbsetup.plan.name}_archive_template"
    admin = {**dbsetup.plan.superuser, "dbname": "postgres"}
    with psycopg.connect(**admin) as server:
        server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    from trialsite import dbroles

    with psycopg.connect(**{**dbsetup.plan.superuser, "dbname": name}) as database:
        dbroles.hand_over_database(database, database=name, owner=dbsetup.OWNER_ROLE)
    migrated = manage("migrate", "--no-input", "-v", "0", database=name)
    assert migrated.returncode == 0, migrated.stderr
    yield name
    with psycopg.connect(**admin) as server:
        server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def empty_database(migrated_template):
    """An empty, migrated database of this system: a copy of the module's template."""
    name = f"{dbsetup.plan.name}_archive"
    admin = {**dbsetup.plan.superuser, "dbname": "postgres"}
    with psycopg.connect(**admin) as server:
        server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        server.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(migrated_template), sql.Identifier(dbsetup.OWNER_ROLE)
            )
        )
    yield name
    with psycopg.connect(**admin) as server:
        server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def rows_of(database: str | None, table: str, columns: list[str], where: str = "TRUE") -> list[tuple]:
    """Rows read alike from the source (None: the test database) and the copy."""
    query = f"SELECT {', '.join(columns)} FROM {table} WHERE {where} ORDER BY 1"
    with psycopg.connect(**{**dbsetup.plan.superuser, "dbname": database or dbsetup.plan.name}) as copy:
        return copy.execute(query).fetchall()


def test_an_archive_loads_into_an_empty_database_which_exports_the_identical_file(two_trials, empty_database, tmp_path):
    first, second = two_trials
    user = statistician_of(first)
    export, path = archive_of(first, user, datetime.datetime(2026, 12, 2, 8, tzinfo=datetime.UTC))
    original = path.read_bytes()

    # The file is ODM 1.3.2 with the CDISC vendor-extension mechanism: valid against the
    # official schema redefined by ours, and the trial's rows are all there.
    archive.extended_schema().validate(original.decode("utf-8"))
    read = archive.read_archive(path)
    assert read.trial == first.nct_id and read.export_id == export.pk
    tables = {rows.table: rows for rows in read.tables}
    for table in (
        "enrollment_screening",
        "enrollment_consent",
        "randomization_slot",
        "randomization_unblinding",
        "dosing_kit",
        "dosing_visit",
        "dosing_doserecord",
        "crf_itemvalue",
        "safety_adverseevent",
        "safety_saereport",
        "trialsite_signature",
        "trialsite_auditevent",
    ):
        assert tables[table].rows > 0, table
    assert b"pbkdf2" not in original and b"md5$" not in original, "a password hash left in the archive"
    # Nothing of the other trial: not its sites, not its participants, not its audit events.
    assert second.nct_id.encode() not in original
    for site in second.sites.all():
        assert (
            f"\t{site.pk}\t".encode() not in tables["enrollment_screening"].text or site.code.encode() not in original
        )

    checked = manage("load_archive", "--check", str(path), database=empty_database)
    assert checked.returncode == 0, checked.stderr
    loaded = manage("load_archive", str(path), database=empty_database)
    assert loaded.returncode == 0, loaded.stderr
    assert "exports the identical file" in loaded.stdout

    # The restored rows are the source's rows, every column, primary keys included.
    primary_keys = {archived.name: archived.model._meta.pk.column for archived in archive.archived_tables()}
    for table in (
        "trialsite_trial",
        "trialsite_protocolversion",
        "enrollment_screening",
        "enrollment_participant",
        "randomization_slot",
        "dosing_visit",
        "dosing_kit",
        "crf_itemvalue",
        "safety_adverseevent",
        "safety_saereport",
        "randomization_unblinding",
        "trialsite_signature",
        "trialsite_auditevent",
    ):
        restored = rows_of(empty_database, table, ["*"])
        if table == archive.AUDIT_TABLE:
            # The copy's own later events (the load finishing the archive's export) are its own.
            archived_ids = {int(line.split(b"\t", 1)[0]) for line in tables[table].text.splitlines()}
            restored = [row for row in restored if row[0] in archived_ids]
        assert restored, table
        ids = [row[0] for row in restored] or [0]
        source = rows_of(None, table, ["*"], f"{primary_keys.get(table, 'id')} = ANY(ARRAY{ids}::bigint[])")
        differences = [
            (table, here[0], column, there[column], here[column])
            for here, there in zip(source, restored, strict=True)
            for column in range(len(here))
            if here[column] != there[column]
        ]
        assert len(restored) == len(source) and differences == [], table
    assert [row[0] for row in rows_of(empty_database, "trialsite_trial", ["nct_id"])] == [first.nct_id]
    # The restored audit trail is sealed and verifies; the restored staff cannot log in with a password.
    verified = manage("audit_verify", database=empty_database)
    assert verified.returncode == 0, verified.stderr + verified.stdout
    passwords = rows_of(empty_database, "auth_user", ["id", "password"])
    assert passwords and all(password == archive.UNUSABLE_PASSWORD for _, password in passwords)
    # The archive's own export is finished in the copy, so no worker takes it up again.
    assert rows_of(empty_database, "reports_export", ["id", "status"], f"id = {export.pk}") == [(export.pk, "done")]

    # A second load is refused: the database is no longer empty.
    again = manage("load_archive", str(path), database=empty_database)
    assert again.returncode != 0
    assert "not empty" in again.stderr


def test_a_changed_archive_is_refused_and_nothing_is_kept(two_trials, empty_database, tmp_path):
    first, _ = two_trials
    user = statistician_of(first)
    _, path = archive_of(first, user, datetime.datetime(2026, 12, 2, 8, tzinfo=datetime.UTC))
    text = path.read_text(encoding="utf-8")

    # A value changed in the archived rows: its table no longer matches its SHA-256.
    start = text.index('Name="enrollment_screening"')
    row_start = text.index(">", start) + 1
    changed_rows = tmp_path / "rows.xml"
    changed_rows.write_text(text[:row_start] + "9" + text[row_start:], encoding="utf-8")
    refused = manage("load_archive", str(changed_rows), database=empty_database)
    assert refused.returncode != 0 and "SHA-256" in refused.stderr

    # A value changed in the ODM part only: the rows load, the database exports a different
    # file, and the whole load is rolled back.
    subject_key = text.index('SubjectKey="') + len('SubjectKey="')
    changed_odm = tmp_path / "odm.xml"
    changed_odm.write_text(text[:subject_key] + "X" + text[subject_key:], encoding="utf-8")
    refused = manage("load_archive", str(changed_odm), database=empty_database)
    assert refused.returncode != 0 and "does not export the same file" in refused.stderr
    assert rows_of(empty_database, "enrollment_screening", ["count(*)"]) == [(0,)]
    assert rows_of(empty_database, "trialsite_auditevent", ["count(*)"]) == [(0,)]

    # The unchanged file then loads.
    loaded = manage("load_archive", str(path), database=empty_database)
    assert loaded.returncode == 0, loaded.stderr


def test_the_second_protocols_archive_round_trips_too(two_trials, empty_database):
    _, second = two_trials
    user = statistician_of(second)
    _, path = archive_of(second, user, datetime.datetime(2026, 12, 3, 9, tzinfo=datetime.UTC))
    archive.extended_schema().validate(path.read_text(encoding="utf-8"))
    loaded = manage("load_archive", str(path), database=empty_database)
    assert loaded.returncode == 0, loaded.stderr


def test_only_someone_unblinded_at_every_site_may_export_an_archive(two_trials):
    first, _ = two_trials
    sites = list(first.sites.order_by("code"))
    monitor = factories.make_user(Role.MONITOR, sites[0], username="blinded-monitor")
    from trialsite import tenancy

    token = tenancy.activate(first)
    try:
        with pytest.raises(archive.ArchiveNotAvailable):
            services.export_request(user=monitor, kind=ExportKind.ARCHIVE, format="odm", background=False)
    finally:
        tenancy.deactivate(token)
    assert not Export.objects.filter(kind=ExportKind.ARCHIVE).exists()


def test_every_table_of_the_project_is_archived_or_named_with_a_reason():
    tables = {archived.name for archived in archive.archived_tables()}
    for model in archive._project_models():
        table = model._meta.db_table
        assert table in tables or table in archive.NOT_ARCHIVED or table == archive.AUDIT_TABLE, table
    assert isinstance(archive.extended_schema(), xmlschema.XMLSchema)


@pytest.mark.django_db
def test_the_reports_page_offers_the_archive_only_to_someone_unblinded_at_every_site(
    trial, site, other_site, cast, client_for
):
    button = 'name="kind" value="archive"'
    # The statistician holds the role at one of the trial's two sites: no archive for them.
    assert button not in client_for(cast.statistician).get("/reports/").content.decode()
    refused = client_for(cast.statistician).post("/reports/exports/", {"kind": "archive", "format": "odm"})
    assert refused.status_code < 500 and not Export.objects.filter(kind=ExportKind.ARCHIVE).exists()
    with audit_context(reason="second site"):
        cast.statistician.trial_roles.create(site=other_site, role=Role.STATISTICIAN)
    assert button in client_for(cast.statistician).get("/reports/").content.decode()
    assert button not in client_for(cast.statistician).get(f"/reports/?site={site.pk}").content.decode()
    assert button not in client_for(cast.investigator).get("/reports/").content.decode()
