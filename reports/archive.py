"""The trial archive: the backup of record, as CDISC ODM 1.3.2.

An archive is the unblinded ODM snapshot of a whole trial (every site) with, in a vendor
extension under its own namespace (`<ts:Archive>`, the ODM element's extension point), every row
the system holds for that trial: the protocol versions, sites, staff roles, screenings and
everything captured since, the randomization list and kits, exports, the audit events of all of
them (old and new values, who, when, why, which database role) and the staff who appear in them.
Each table is PostgreSQL's own COPY text of its rows in primary-key order, with its columns,
row count and SHA-256.

`manage.py load_archive FILE` rebuilds the trial from it in an empty database of this system,
keeping every primary key, and then proves the copy: the rebuilt database exports the archive
again, stamped as the original was, and the two files must be identical byte for byte, or
nothing is kept. The standard ODM part serves any ODM reader; the extension is what makes the
file restorable (the snapshot alone has current values, not old ones, and no randomization
list or kit).

What is deliberately not in it: passwords (staff come back with unusable passwords and set new
ones), second-factor secrets and API keys (credentials, made again), and the audit hash chain,
which is rebuilt over the restored rows and sealed when the load commits."""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as DefusedElementTree
from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, models, transaction
from django.db.migrations.recorder import MigrationRecorder
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from reports import exports
from reports.selectors import ReportScope
from trialsite.exceptions import TrialRuleError

ARCHIVE_NAMESPACE = "urn:trialsite:odm-archive:1"
ARCHIVE_FORMAT = "postgresql-copy-text"
AUDIT_TABLE = "trialsite_auditevent"
ODM_TAG = "{" + exports.ODM_NAMESPACE + "}"

# Tables of this system that an archive leaves out, and why (a test holds every table of the
# project's apps to being archived or named here).
NOT_ARCHIVED = {
    "trialsite_apitoken": "API keys are credentials: their holders make new ones after a restore",
    "trialsite_apitokenkey": "API keys are credentials: their holders make new ones after a restore",
    "trialsite_auditchain": "the hash chain is rebuilt over the restored audit rows and sealed by the load",
}
# Columns written as a constant: a password hash must not leave the system in a data file.
UNUSABLE_PASSWORD = "!"
# Characters XML 1.0 cannot carry; a table holding one is written in base64.
NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class ArchiveError(TrialRuleError):
    default_message = _("This archive cannot be loaded.")


class ArchiveNotAvailable(TrialRuleError):
    default_message = _(
        "The archive holds every site's allocation: it needs the right to view allocation at every site of the trial."
    )

    def __init__(self, message=None, *, field: str | None = "kind"):
        super().__init__(message, field=field)


# --- Which rows belong to a trial ------------------------------------------------------------


@dataclass(frozen=True)
class ArchivedTable:
    """A table of the project and the lookup from its rows to their trial (None: the trial)."""

    model: type[models.Model]
    trial_path: str | None

    @property
    def name(self) -> str:
        return self.model._meta.db_table

    def rows(self, trial) -> models.QuerySet:
        manager = self.model._base_manager
        if self.trial_path is None:
            return manager.filter(pk=trial.pk)
        return manager.filter(**{self.trial_path: trial})


def _project_models() -> list[type[models.Model]]:
    base = Path(settings.BASE_DIR).resolve()
    return [
        model
        for model in apps.get_models()
        if Path(model._meta.app_config.path).resolve().is_relative_to(base)
        and ".venv" not in Path(model._meta.app_config.path).parts
    ]


def _trial_path(model: type[models.Model], trial_model: type[models.Model]) -> str | None:
    """The shortest chain of foreign keys from `model` to the trial, preferring keys that cannot
    be empty (a kit names its trial directly, and its site only once shipped)."""
    frontier = [(model, "", True)]
    seen = {model}
    while frontier:
        found, following = [], []
        for current, path, required in frontier:
            for field in current._meta.concrete_fields:
                if not field.is_relation:
                    continue
                step = f"{path}__{field.name}" if path else field.name
                still_required = required and not field.null
                if field.related_model is trial_model:
                    found.append((not still_required, step))
                elif field.related_model not in seen:
                    following.append((field.related_model, step, still_required))
        if found:
            return sorted(found)[0][1]
        seen.update(related for related, _step, _required in following)
        frontier = sorted(following, key=lambda entry: not entry[2])
    return None


def archived_tables() -> list[ArchivedTable]:
    """Every table of the project that holds a trial's rows, in the order the archive writes
    them (the trial first; the audit trail is written separately, last)."""
    from trialsite.models import AuditEvent, Trial

    tables = []
    for model in _project_models():
        table = model._meta.db_table
        if table in NOT_ARCHIVED or model is AuditEvent:
            continue
        if model is Trial:
            tables.append(ArchivedTable(model, None))
            continue
        path = _trial_path(model, Trial)
        if path is None:
            raise LookupError(f"{table} has no foreign key path to its trial: archive it or name it in NOT_ARCHIVED")
        tables.append(ArchivedTable(model, path))
    return sorted(tables, key=lambda archived: (archived.trial_path is not None, archived.name))


def _columns(model: type[models.Model]) -> list[str]:
    return [field.column for field in model._meta.concrete_fields]


def _user_ids(trial, tables: list[ArchivedTable]) -> set[int]:
    """The staff a trial's rows name: holders of its roles, authors, signers, actors of its audit trail."""
    user_model = get_user_model()
    ids: set[int] = set()
    for archived in tables:
        user_columns = [
            field.attname
            for field in archived.model._meta.concrete_fields
            if field.is_relation and field.related_model is user_model
        ]
        for column in user_columns:
            ids.update(
                value for value in archived.rows(trial).values_list(column, flat=True).distinct() if value is not None
            )
    return ids


def _audit_condition(trial, tables: list[ArchivedTable]) -> tuple[str, list]:
    """The trial's audit events: of its sites, of any of its rows, or of a row naming the trial
    (a deleted row of a trial-wide table is found by its last values)."""
    conditions = ["site_id = ANY(%s)", "coalesce(new_values, old_values) ->> 'trial_id' = %s"]
    parameters: list = [list(trial.sites.values_list("pk", flat=True)), str(trial.pk)]
    for archived in tables:
        pk_sql, pk_parameters = archived.rows(trial).values("pk").query.sql_with_params()
        conditions.append(
            f"(table_name = %s AND record_pk IN (SELECT (pk_rows.id)::text FROM ({pk_sql}) AS pk_rows(id)))"
        )
        parameters += [archived.name, *pk_parameters]
    return " OR ".join(conditions), parameters


def _copy_out(sql: str, parameters: list) -> tuple[bytes, int]:
    chunks = []
    with connection.cursor() as django_cursor:
        with django_cursor.cursor.copy(f"COPY ({sql}) TO STDOUT", parameters) as copy:
            for row in copy:
                chunks.append(bytes(row))
    return b"".join(chunks), len(chunks)


def _quoted(columns: list[str]) -> str:
    return ", ".join(connection.ops.quote_name(column) for column in columns)


def table_copies(trial) -> Iterator[tuple[str, list[str], bytes, int]]:
    """(table, columns, COPY text, rows) for every archived table, the staff and the audit trail."""
    tables = archived_tables()
    for archived in tables:
        columns = _columns(archived.model)
        pk = connection.ops.quote_name(archived.model._meta.pk.column)
        pk_sql, pk_parameters = archived.rows(trial).values("pk").query.sql_with_params()
        text, rows = _copy_out(
            f"SELECT {_quoted(columns)} FROM {connection.ops.quote_name(archived.name)} "
            f"WHERE {pk} IN ({pk_sql}) ORDER BY {pk}",
            pk_parameters,
        )
        yield archived.name, columns, text, rows

    from trialsite.models import AuditEvent

    condition, parameters = _audit_condition(trial, tables)
    audit_columns = _columns(AuditEvent)
    text, rows = _copy_out(
        f"SELECT {_quoted(audit_columns)} FROM {AUDIT_TABLE} WHERE {condition} ORDER BY id", parameters
    )
    user_model = get_user_model()
    user_ids = _user_ids(trial, tables) | _actor_ids(text, audit_columns)
    user_columns = _columns(user_model)
    selected = [
        f"%s AS {connection.ops.quote_name(column)}" if column == "password" else connection.ops.quote_name(column)
        for column in user_columns
    ]
    user_text, user_rows = _copy_out(
        f"SELECT {', '.join(selected)} FROM {user_model._meta.db_table} WHERE id = ANY(%s) ORDER BY id",
        [UNUSABLE_PASSWORD, sorted(user_ids)],
    )
    yield user_model._meta.db_table, user_columns, user_text, user_rows
    yield AUDIT_TABLE, audit_columns, text, rows


def _actor_ids(text: bytes, columns: list[str]) -> set[int]:
    position = columns.index("actor_id")
    ids = set()
    for line in text.splitlines():
        value = line.split(b"\t")[position]
        if value != b"\\N":
            ids.add(int(value))
    return ids


def applied_migrations() -> list[str]:
    return sorted(f"{app}.{name}" for app, name in MigrationRecorder(connection).applied_migrations())


# --- Writing -----------------------------------------------------------------------------------


def require_archivable(scope: ReportScope) -> None:
    """An archive is unblinded and of the whole trial: only for someone who may view allocation
    at every site of it."""
    every_site = set(scope.trial.sites.values_list("pk", flat=True))
    if not scope.unblinded or set(scope.site_ids) != every_site:
        raise ArchiveNotAvailable()


def write_extension(scope: ReportScope, stamp: exports.Stamp, stream) -> None:
    w = stream.write
    w(
        f'<ts:Archive xmlns:ts="{ARCHIVE_NAMESPACE}"'
        f" Trial={quoteattr(scope.trial.nct_id)} Format={quoteattr(ARCHIVE_FORMAT)}"
        f" ExportID={quoteattr(str(stamp.export_id or 0))} DataVersion={quoteattr(str(stamp.data_version))}"
        f" Language={quoteattr(translation.get_language() or settings.LANGUAGE_CODE)}>\n"
    )
    w(f"<ts:Migrations>{escape(chr(10).join(applied_migrations()))}</ts:Migrations>\n")
    for table, columns, text, rows in table_copies(scope.trial):
        decoded = text.decode("utf-8")
        attributes = (
            f" Name={quoteattr(table)} Columns={quoteattr(' '.join(columns))} Rows={quoteattr(str(rows))}"
            f" SHA256={quoteattr(hashlib.sha256(text).hexdigest())}"
        )
        if NOT_XML.search(decoded):
            w(f'<ts:Table{attributes} Encoding="base64">{base64.b64encode(text).decode("ascii")}</ts:Table>\n')
        else:
            w(f"<ts:Table{attributes}>{escape(decoded)}</ts:Table>\n")
    w("</ts:Archive>\n")


def write_archive(scope: ReportScope, stream, stamp: exports.Stamp, progress=None) -> int:
    """The archive of `scope`'s trial; returns the number of subjects."""
    require_archivable(scope)
    writer = exports.OdmWriter(scope, stream, stamp, extension=lambda out: write_extension(scope, stamp, out))
    return writer.write(progress)


# --- Reading and loading -------------------------------------------------------------------


@dataclass
class ArchivedRows:
    table: str
    columns: list[str]
    text: bytes
    rows: int


@dataclass
class Archive:
    trial: str
    export_id: int
    data_version: int
    language: str
    exported_by: str
    exported_at: datetime.datetime
    migrations: list[str]
    tables: list[ArchivedRows]

    def table(self, name: str) -> ArchivedRows | None:
        return next((rows for rows in self.tables if rows.table == name), None)


def read_archive(path: Path) -> Archive:
    """Parse and check an archive file: every table's row count and SHA-256 as written."""
    ts = f"{{{ARCHIVE_NAMESPACE}}}"
    root_attributes: dict[str, str] = {}
    archive_attributes: dict[str, str] | None = None
    migrations: list[str] = []
    tables: list[ArchivedRows] = []
    try:
        for event, element in DefusedElementTree.iterparse(path, events=("start", "end")):
            if event == "start":
                if not root_attributes and element.tag == f"{ODM_TAG}ODM":
                    root_attributes = dict(element.attrib)
                continue
            if element.tag == f"{ts}Migrations":
                migrations = [line for line in (element.text or "").splitlines() if line]
            elif element.tag == f"{ts}Table":
                tables.append(_table_of(element))
                element.clear()
            elif element.tag == f"{ts}Archive":
                archive_attributes = dict(element.attrib)
            elif element.tag.startswith(ODM_TAG) and element.tag.endswith("SubjectData"):
                element.clear()
    except (ElementTree.ParseError, DefusedXmlException) as error:
        raise ArchiveError(_("The file is not well-formed XML: %(error)s") % {"error": error}, field="file") from None
    if not root_attributes:
        raise ArchiveError(_("The file is not a CDISC ODM document."), field="file")
    if archive_attributes is None:
        raise ArchiveError(
            _("The file is an ODM export without the archive (only an archive export can be loaded)."), field="file"
        )
    if archive_attributes.get("Format") != ARCHIVE_FORMAT:
        raise ArchiveError(_("Unknown archive format %(format)s.") % {"format": archive_attributes.get("Format")})
    return Archive(
        trial=archive_attributes["Trial"],
        export_id=int(archive_attributes["ExportID"]),
        data_version=int(archive_attributes["DataVersion"]),
        language=archive_attributes["Language"],
        exported_by=root_attributes.get("Originator", ""),
        exported_at=datetime.datetime.fromisoformat(root_attributes["CreationDateTime"]),
        migrations=migrations,
        tables=tables,
    )


def _table_of(element: ElementTree.Element) -> ArchivedRows:
    name = element.get("Name", "")
    content = element.text or ""
    text = base64.b64decode(content) if element.get("Encoding") == "base64" else content.encode("utf-8")
    if hashlib.sha256(text).hexdigest() != element.get("SHA256"):
        raise ArchiveError(
            _("Table %(table)s does not match its SHA-256: the file was changed or damaged.") % {"table": name},
            field="file",
        )
    rows = text.count(b"\n")
    if str(rows) != element.get("Rows"):
        raise ArchiveError(
            _("Table %(table)s holds %(rows)s rows, not the %(declared)s it declares.")
            % {"table": name, "rows": rows, "declared": element.get("Rows")},
            field="file",
        )
    return ArchivedRows(name, element.get("Columns", "").split(), text, rows)


def problems_loading(archive: Archive) -> list[str]:
    """Why `archive` cannot be loaded into this database (nothing when it can)."""
    problems = []
    here = set(applied_migrations())
    there = set(archive.migrations)
    if here != there:
        missing = sorted(there - here)
        extra = sorted(here - there)
        problems.append(
            "the database's migrations differ from the archive's"
            + (f"; not applied here: {', '.join(missing)}" if missing else "")
            + (f"; applied here but not in the archive: {', '.join(extra)}" if extra else "")
        )
    user_table = get_user_model()._meta.db_table
    known = {archived.name: archived.model for archived in archived_tables()}
    from trialsite.models import AuditEvent

    known[AUDIT_TABLE] = AuditEvent
    known[user_table] = get_user_model()
    for rows in archive.tables:
        model = known.get(rows.table)
        if model is None:
            problems.append(f"{rows.table}: not a table of this system")
            continue
        if rows.columns != _columns(model):
            problems.append(f"{rows.table}: its columns differ from this system's ({' '.join(_columns(model))})")
    with connection.cursor() as cursor:
        occupied = []
        for table in sorted(set(known) - {user_table}):
            cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {connection.ops.quote_name(table)})")
            if cursor.fetchone()[0]:
                occupied.append(table)
        if occupied:
            problems.append(f"the database is not empty: {', '.join(occupied)} hold rows")
        staff = archive.table(user_table)
        if staff is not None and staff.text:
            ids = [int(line.split(b"\t", 1)[0]) for line in staff.text.splitlines()]
            username_at = staff.columns.index("username")
            names = [line.split(b"\t")[username_at].decode("utf-8") for line in staff.text.splitlines()]
            cursor.execute(
                f"SELECT id, username FROM {user_table} WHERE id = ANY(%s) OR username = ANY(%s) ORDER BY id",
                [ids, names],
            )
            clashes = cursor.fetchall()
            if clashes:
                problems.append(
                    "these users exist already: " + ", ".join(f"{username} (id {pk})" for pk, username in clashes)
                )
    return problems


@dataclass(frozen=True)
class LoadResult:
    trial: str
    rows: dict[str, int]
    sha256: str


def load_archive(path: Path, *, check_only: bool = False) -> LoadResult:
    """Load the archive at `path` into this (empty) database as the owner role, keeping every
    primary key, and prove the copy: the loaded database must export this very file again. Any
    problem refuses the whole load, and nothing is written."""
    from trialsite.dbroles import as_owner

    archive = read_archive(path)
    original = Path(path).read_bytes()
    digest = hashlib.sha256(original).hexdigest()
    problems = problems_loading(archive)
    if problems:
        raise ArchiveError("; ".join(problems), field="file")
    rows = {table.table: table.rows for table in archive.tables}
    if check_only:
        return LoadResult(archive.trial, rows, digest)
    with as_owner():
        with transaction.atomic():
            _insert(archive)
            again = _export_again(archive)
            if again != original:
                raise ArchiveError(_first_difference(original, again), field="file")
            _finish_export_row(archive)
    from trialsite import audit

    audit.seal_after_commit(f"archive {archive.trial} export {archive.export_id} restored ({digest[:16]})")
    return LoadResult(archive.trial, rows, digest)


def _insert(archive: Archive) -> None:
    """COPY each table back with its triggers off: the rows are history, not new changes, and
    their audit events are restored verbatim among the rest."""
    names = [connection.ops.quote_name(rows.table) for rows in archive.tables]
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        for table in names:
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        for table, rows in zip(names, archive.tables, strict=True):
            with cursor.copy(f"COPY {table} ({_quoted(rows.columns)}) FROM STDIN") as copy:
                copy.write(rows.text)
        # The foreign keys are checked now, all rows being in (a table cannot be altered while
        # its deferred checks are pending).
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table, rows in zip(names, archive.tables, strict=True):
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
            if "id" in rows.columns and rows.rows:
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence(%s, 'id'), (SELECT max(id) FROM {table}))", [rows.table]
                )


def _export_again(archive: Archive) -> bytes:
    from reports import selectors
    from trialsite.models import Trial

    user = get_user_model()._base_manager.get(username=archive.exported_by)
    trial = Trial.objects.get(nct_id=archive.trial)
    with translation.override(archive.language):
        scope = selectors.report_scope(user, trial=trial)
        stamp = exports.Stamp(
            export_id=archive.export_id,
            exported_by=archive.exported_by,
            exported_at=archive.exported_at,
            data_version=archive.data_version,
            blinded=not scope.unblinded,
            site_codes=tuple(site.code for site in scope.sites),
            trial=trial.nct_id,
        )
        with tempfile.TemporaryFile("w+b") as scratch:
            text = io.TextIOWrapper(scratch, encoding="utf-8", newline="")
            write_archive(scope, text, stamp)
            text.flush()
            scratch.seek(0)
            return scratch.read()


def _first_difference(original: bytes, again: bytes) -> str:
    for number, (before, after) in enumerate(zip(original.splitlines(), again.splitlines(), strict=False), start=1):
        if before != after:
            return (
                f"The loaded database does not export the same file (line {number}: "
                f"{before[:120].decode('utf-8', 'replace')!r} became {after[:120].decode('utf-8', 'replace')!r}); "
                "nothing was kept."
            )
    return "The loaded database does not export the same file (it is longer or shorter); nothing was kept."


def _finish_export_row(archive: Archive) -> None:
    """The archive's own export was running when its snapshot was read; once the copy is proven,
    it is finished as its run finished it, so no worker takes it up again."""
    from reports.models import Export, ExportStatus
    from trialsite.audit import audit_context

    with audit_context(reason="restored from this export's archive"):
        Export.objects.filter(pk=archive.export_id, status=ExportStatus.RUNNING).update(
            status=ExportStatus.DONE,
            progress=100,
            data_version=archive.data_version,
            finished_at=archive.exported_at,
        )


def extended_schema():
    """ODM 1.3.2 (the official schema odmlib ships) redefined with the archive's extension."""
    import odmlib
    import xmlschema

    official = Path(odmlib.__file__).parent / "schemas" / "odm" / "1.3.2"
    here = Path(__file__).parent / "odm_schema"
    text = (here / "ODM1-3-2-trialsite.xsd.in").read_text(encoding="utf-8")
    text = text.replace("{ODM}", official.as_uri()).replace("{HERE}", here.as_uri())
    return xmlschema.XMLSchema(text, base_url=str(here))
