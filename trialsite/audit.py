"""The audit trail, enforced by PostgreSQL rather than by Python.

Every audited table carries triggers (per row for UPDATE and DELETE, per statement for INSERT)
that write to `trialsite_auditevent`: who (the application user set for the transaction by
`audit_context`, plus the database role), when, the old and new row as JSON, the changed columns and the reason. Because it is a trigger,
`QuerySet.update()`, `bulk_create()` and raw SQL are audited like a form save. A change to a
column declared clinical is refused by the trigger when no reason was given. The audit table
itself has triggers that refuse UPDATE, DELETE and TRUNCATE.

Which tables are audited is declared on the models (`Audited`), and the triggers are
(re)installed after every `migrate`, so a new model cannot be forgotten; a test compares the
declarations with what `pg_trigger` holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection, models, transaction

REASON_REQUIRED_SQLSTATE = "TR001"
AUDIT_IMMUTABLE_SQLSTATE = "TR002"

AUDIT_FUNCTION_SQL = r"""
CREATE OR REPLACE FUNCTION trial_audit_row() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END;
    current_row jsonb := coalesce(new_row, old_row);
    pk_column text := TG_ARGV[0];
    site_column text := nullif(TG_ARGV[1], '');
    subject_column text := nullif(TG_ARGV[2], '');
    clinical text[] := coalesce(TG_ARGV[3:], '{}');
    changed text[];
    reason text := coalesce(current_setting('trial.reason', true), '');
    actor text := nullif(current_setting('trial.actor_id', true), '');
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(array_agg(n.key ORDER BY n.key), '{}') INTO changed
        FROM jsonb_each(new_row) AS n
        WHERE n.value IS DISTINCT FROM old_row -> n.key;
        IF cardinality(changed) = 0 THEN
            RETURN NEW;
        END IF;
        IF reason = '' AND changed && clinical THEN
            RAISE EXCEPTION 'A reason is required to change %', array_to_string(
                ARRAY(SELECT unnest(changed) INTERSECT SELECT unnest(clinical) ORDER BY 1), ', ')
                USING ERRCODE = 'TR001';
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT coalesce(array_agg(k ORDER BY k), '{}') INTO changed FROM jsonb_object_keys(new_row) AS k;
    ELSE
        IF reason = '' AND cardinality(clinical) > 0 THEN
            RAISE EXCEPTION 'A reason is required to delete a record of %', TG_TABLE_NAME
                USING ERRCODE = 'TR001';
        END IF;
        changed := '{}';
    END IF;

    INSERT INTO trialsite_auditevent (
        occurred_at, table_name, record_pk, action, old_values, new_values, changed_fields,
        actor_id, reason, site_id, subject_id, database_user
    ) VALUES (
        clock_timestamp(), TG_TABLE_NAME, current_row ->> pk_column, TG_OP, old_row, new_row, changed,
        actor::bigint, reason,
        CASE WHEN site_column IS NOT NULL THEN (current_row ->> site_column)::bigint END,
        CASE WHEN subject_column IS NOT NULL THEN (current_row ->> subject_column)::bigint END,
        session_user
    );
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION trial_audit_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Django's test runner empties tables with TRUNCATE between tests that commit; it only
    -- ever does so in its own throw-away database, whose name it prefixes with "test_".
    IF TG_OP = 'TRUNCATE' AND current_database() LIKE 'test\_%' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'The audit trail cannot be changed or deleted (% refused)', TG_OP
        USING ERRCODE = 'TR002';
END;
$$;

CREATE OR REPLACE TRIGGER trial_audit_immutable_rows
    BEFORE UPDATE OR DELETE ON trialsite_auditevent
    FOR EACH ROW EXECUTE FUNCTION trial_audit_immutable();
CREATE OR REPLACE TRIGGER trial_audit_immutable_truncate
    BEFORE TRUNCATE ON trialsite_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION trial_audit_immutable();
"""

AUDIT_FUNCTION_REVERSE_SQL = """
DROP TRIGGER IF EXISTS trial_audit_immutable_rows ON trialsite_auditevent;
DROP TRIGGER IF EXISTS trial_audit_immutable_truncate ON trialsite_auditevent;
DROP FUNCTION IF EXISTS trial_audit_immutable();
DROP FUNCTION IF EXISTS trial_audit_row() CASCADE;
"""

# Inserts are audited by a statement-level trigger reading the statement's transition table:
# one INSERT ... SELECT per statement instead of one plpgsql call per row. Randomizing one
# participant inserts 17 visits and about 50 reminders; row by row that was most of its cost.
# The rows written are the same as the row trigger's: every column is "changed" on INSERT.
AUDIT_INSERT_FUNCTION_SQL = r"""
CREATE OR REPLACE FUNCTION trial_audit_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pk_column text := TG_ARGV[0];
    site_column text := nullif(TG_ARGV[1], '');
    subject_column text := nullif(TG_ARGV[2], '');
    reason text := coalesce(current_setting('trial.reason', true), '');
    actor bigint := nullif(current_setting('trial.actor_id', true), '')::bigint;
    columns text[];
BEGIN
    SELECT coalesce(array_agg(k ORDER BY k), '{}') INTO columns
    FROM jsonb_object_keys((SELECT to_jsonb(n) FROM inserted_rows AS n LIMIT 1)) AS k;
    INSERT INTO trialsite_auditevent (
        occurred_at, table_name, record_pk, action, old_values, new_values, changed_fields,
        actor_id, reason, site_id, subject_id, database_user
    )
    SELECT
        clock_timestamp(), TG_TABLE_NAME, r.row_json ->> pk_column, 'INSERT', NULL, r.row_json, columns,
        actor, reason,
        CASE WHEN site_column IS NOT NULL THEN (r.row_json ->> site_column)::bigint END,
        CASE WHEN subject_column IS NOT NULL THEN (r.row_json ->> subject_column)::bigint END,
        session_user
    FROM (SELECT to_jsonb(n) AS row_json FROM inserted_rows AS n) AS r;
    RETURN NULL;
END;
$$;
"""

AUDIT_INSERT_FUNCTION_REVERSE_SQL = "DROP FUNCTION IF EXISTS trial_audit_inserted() CASCADE;"

# Least privilege (migration 0004). The application's role may not write the audit table, so
# the functions that do are SECURITY DEFINER, owned by the owner role that ran the migration,
# with a search path nobody else can add to. `session_user` in them is still the application's
# role, and is what `database_user` records.
#
# The actor is checked, not trusted: `trial.actor_id` must name an active user who holds a role
# at the site of every row the statement writes, or a trial-wide role (statistician, supply
# manager) in that site's trial; a Django superuser anywhere. The application's
# role is the application, so it can still name any such user; what it cannot do is credit a
# change to someone with no business at that site, or to an id that is nobody.
ACTOR_REFUSED_SQLSTATE = "TR003"
DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp"

AUDIT_LEAST_PRIVILEGE_SQL = (
    r"""
CREATE OR REPLACE FUNCTION trial_audit_actor(actor bigint, site_ids bigint[]) RETURNS bigint
LANGUAGE plpgsql STABLE """
    + DEFINER
    + r""" AS $$
DECLARE
    superuser boolean;
    missing bigint;
BEGIN
    IF actor IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT u.is_superuser INTO superuser FROM auth_user AS u WHERE u.id = actor AND u.is_active;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'The change is credited to user %, who is not an active user', actor
            USING ERRCODE = 'TR003';
    END IF;
    IF superuser THEN
        RETURN actor;
    END IF;
    -- A role at the site, or a trial-wide one (the statistician's lists and the supply
    -- manager's kits span every site of the trial).
    SELECT s INTO missing FROM unnest(site_ids) AS s
    WHERE s IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM trialsite_staffrole AS r
          WHERE r.user_id = actor
            AND (r.site_id = s OR (r.role IN ('statistician', 'supply_manager') AND r.site_id IN (
                SELECT other.id FROM trialsite_site AS other JOIN trialsite_site AS this
                    ON this.trial_id = other.trial_id WHERE this.id = s))))
    LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'The change is credited to user %, who holds no role at site %', actor, missing
            USING ERRCODE = 'TR003';
    END IF;
    RETURN actor;
END;
$$;

CREATE OR REPLACE FUNCTION trial_audit_row() RETURNS trigger
LANGUAGE plpgsql """
    + DEFINER
    + r""" AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END;
    current_row jsonb := coalesce(new_row, old_row);
    pk_column text := TG_ARGV[0];
    site_column text := nullif(TG_ARGV[1], '');
    subject_column text := nullif(TG_ARGV[2], '');
    clinical text[] := coalesce(TG_ARGV[3:], '{}');
    changed text[];
    reason text := coalesce(current_setting('trial.reason', true), '');
    actor bigint := nullif(current_setting('trial.actor_id', true), '')::bigint;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(array_agg(n.key ORDER BY n.key), '{}') INTO changed
        FROM jsonb_each(new_row) AS n
        WHERE n.value IS DISTINCT FROM old_row -> n.key;
        IF cardinality(changed) = 0 THEN
            RETURN NEW;
        END IF;
        IF reason = '' AND changed && clinical THEN
            RAISE EXCEPTION 'A reason is required to change %', array_to_string(
                ARRAY(SELECT unnest(changed) INTERSECT SELECT unnest(clinical) ORDER BY 1), ', ')
                USING ERRCODE = 'TR001';
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT coalesce(array_agg(k ORDER BY k), '{}') INTO changed FROM jsonb_object_keys(new_row) AS k;
    ELSE
        IF reason = '' AND cardinality(clinical) > 0 THEN
            RAISE EXCEPTION 'A reason is required to delete a record of %', TG_TABLE_NAME
                USING ERRCODE = 'TR001';
        END IF;
        changed := '{}';
    END IF;
    IF actor IS NOT NULL THEN
        PERFORM trial_audit_actor(actor, CASE WHEN site_column IS NULL THEN '{}'::bigint[] ELSE
            ARRAY[(old_row ->> site_column)::bigint, (new_row ->> site_column)::bigint] END);
    END IF;

    INSERT INTO trialsite_auditevent (
        occurred_at, table_name, record_pk, action, old_values, new_values, changed_fields,
        actor_id, reason, site_id, subject_id, database_user
    ) VALUES (
        clock_timestamp(), TG_TABLE_NAME, current_row ->> pk_column, TG_OP, old_row, new_row, changed,
        actor, reason,
        CASE WHEN site_column IS NOT NULL THEN (current_row ->> site_column)::bigint END,
        CASE WHEN subject_column IS NOT NULL THEN (current_row ->> subject_column)::bigint END,
        session_user
    );
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION trial_audit_inserted() RETURNS trigger
LANGUAGE plpgsql """
    + DEFINER
    + r""" AS $$
DECLARE
    pk_column text := TG_ARGV[0];
    site_column text := nullif(TG_ARGV[1], '');
    subject_column text := nullif(TG_ARGV[2], '');
    reason text := coalesce(current_setting('trial.reason', true), '');
    actor bigint := nullif(current_setting('trial.actor_id', true), '')::bigint;
    row_jsons jsonb[];
    columns text[];
BEGIN
    -- Each inserted row is turned into JSON once: the column list, the actor's sites and the
    -- audit rows are all read from these (three passes over the rows cost a randomization's
    -- 17 visits a third more, bench/randomize_inprocess_bench.py).
    SELECT array_agg(to_jsonb(n)) INTO row_jsons FROM inserted_rows AS n;
    SELECT coalesce(array_agg(k ORDER BY k), '{}') INTO columns FROM jsonb_object_keys(row_jsons[1]) AS k;
    IF actor IS NOT NULL THEN
        PERFORM trial_audit_actor(actor, CASE WHEN site_column IS NULL THEN '{}'::bigint[] ELSE
            ARRAY(SELECT DISTINCT (r ->> site_column)::bigint FROM unnest(row_jsons) AS r) END);
    END IF;
    INSERT INTO trialsite_auditevent (
        occurred_at, table_name, record_pk, action, old_values, new_values, changed_fields,
        actor_id, reason, site_id, subject_id, database_user
    )
    SELECT
        clock_timestamp(), TG_TABLE_NAME, r ->> pk_column, 'INSERT', NULL, r, columns,
        actor, reason,
        CASE WHEN site_column IS NOT NULL THEN (r ->> site_column)::bigint END,
        CASE WHEN subject_column IS NOT NULL THEN (r ->> subject_column)::bigint END,
        session_user
    FROM unnest(row_jsons) AS r;
    RETURN NULL;
END;
$$;

ALTER FUNCTION trial_audit_immutable() SET search_path = pg_catalog, public, pg_temp;

CREATE OR REPLACE TRIGGER trial_audit_chain_immutable_rows
    BEFORE UPDATE OR DELETE ON trialsite_auditchain
    FOR EACH ROW EXECUTE FUNCTION trial_audit_immutable();
CREATE OR REPLACE TRIGGER trial_audit_chain_immutable_truncate
    BEFORE TRUNCATE ON trialsite_auditchain
    FOR EACH STATEMENT EXECUTE FUNCTION trial_audit_immutable();
"""
)

# The chain (tamper evidence). Writers do not hash: a trigger that chained each row to the one
# before would make every audited transaction wait for the previous one to commit. Instead
# `trial_audit_chain_extend()` (Celery beat every minute, and before every seal) appends the
# rows committed since its last run to trialsite_auditchain, in id order, each link holding
# sha256(the row's canonical content) and sha256(previous link || that hash).
#
# Ids are handed out when a row is inserted but become visible at commit, so a row with a lower
# id can appear after a higher one. The extension therefore reads the highest id handed out,
# then waits for the transactions still writing the audit table at that moment (the ones holding
# its RowExclusiveLock, which is taken before an id is drawn and kept to commit) to end; every
# row with an id up to that mark is then committed or never will be. Only the extension waits;
# writers never do. A row with an id at or below the chained head that is not in the chain was
# therefore put there behind the application's back, and `audit_verify` says so.
CHAIN_CONTENT_SQL = (
    "convert_to(jsonb_build_array(e.id, (extract(epoch FROM e.occurred_at) * 1000000)::bigint, e.table_name,"
    " e.record_pk, e.action, e.old_values, e.new_values, to_jsonb(e.changed_fields), e.actor_id, e.reason,"
    " e.site_id, e.subject_id, e.database_user)::text, 'UTF8')"
)
GENESIS = bytes(32)

AUDIT_CHAIN_SQL = (
    r"""
CREATE OR REPLACE FUNCTION trial_audit_chain_extend(wait_seconds double precision DEFAULT 30)
RETURNS bigint LANGUAGE plpgsql VOLATILE """
    + DEFINER
    + r""" AS $$
DECLARE
    horizon bigint := pg_sequence_last_value(pg_get_serial_sequence('trialsite_auditevent', 'id')::regclass);
    writers bigint[];
    current_full bigint;
    deadline timestamptz := clock_timestamp() + make_interval(secs => wait_seconds);
    head bytea;
    last_position bigint;
    last_event bigint;
    event record;
    row_hash bytea;
    events bigint[] := '{}';
    row_hashes bytea[] := '{}';
    chain_hashes bytea[] := '{}';
    added bigint := 0;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'the audit chain is extended in a READ COMMITTED transaction only';
    END IF;
    IF horizon IS NULL THEN
        RETURN 0;
    END IF;
    -- The transactions writing the audit table now, by transaction id (every one that drew an
    -- id has one: the audited row was written before its AFTER trigger ran). The lock table is
    -- read once; waiting asks only whether those transactions are still in progress, which does
    -- not touch the lock manager the writers use.
    SELECT array_agg(DISTINCT t.transactionid::text::bigint) INTO writers
    FROM pg_locks AS l
    JOIN pg_locks AS t ON t.virtualtransaction = l.virtualtransaction AND t.locktype = 'transactionid'
    WHERE l.locktype = 'relation' AND l.relation = 'trialsite_auditevent'::regclass
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.mode = 'RowExclusiveLock' AND l.pid IS DISTINCT FROM pg_backend_pid();
    -- pg_locks shows 32-bit transaction ids; txid_status() wants them with their epoch. Each
    -- is within 2^31 of the current one: add the signed 32-bit difference.
    current_full := txid_snapshot_xmax(txid_current_snapshot());
    SELECT array_agg(current_full + CASE
        WHEN d > 2147483647 THEN d - 4294967296 WHEN d < -2147483648 THEN d + 4294967296 ELSE d END)
    INTO writers
    FROM (SELECT w - (current_full & 4294967295) AS d FROM unnest(writers) AS w) AS differences;
    WHILE writers IS NOT NULL
        AND EXISTS (SELECT 1 FROM unnest(writers) AS w WHERE txid_status(w) = 'in progress') LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'audit chain not extended: a transaction writing the audit trail has run for over % s',
                wait_seconds USING ERRCODE = 'TR004';
        END IF;
        PERFORM pg_sleep(0.005);
    END LOOP;

    -- One extension at a time; writers are not affected by this lock.
    PERFORM pg_advisory_xact_lock(hashtext('trial_audit_chain'));
    SELECT c.position, c.event_id, c.chain_hash INTO last_position, last_event, head
    FROM trialsite_auditchain AS c ORDER BY c.position DESC LIMIT 1;
    IF NOT FOUND THEN
        last_position := 0;
        last_event := 0;
        head := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
    END IF;
    FOR event IN
        SELECT e.id, """
    + CHAIN_CONTENT_SQL
    + r""" AS content
        FROM trialsite_auditevent AS e
        WHERE e.id > last_event AND e.id <= horizon
        ORDER BY e.id
    LOOP
        row_hash := sha256(event.content);
        head := sha256(head || row_hash);
        events := events || event.id;
        row_hashes := row_hashes || row_hash;
        chain_hashes := chain_hashes || head;
    END LOOP;
    -- One INSERT for the batch.
    INSERT INTO trialsite_auditchain (position, event_id, row_hash, chain_hash, chained_at)
    SELECT last_position + n, events[n], row_hashes[n], chain_hashes[n], clock_timestamp()
    FROM generate_subscripts(events, 1) AS n;
    added := cardinality(events);
    RETURN added;
END;
$$;
"""
)

TRIGGER_NAME = "trial_audit"
INSERT_TRIGGER_NAME = "trial_audit_insert"


class Audited(models.Model):
    """Mark a model as trial data. Class attributes say how its rows are audited:

    - `audit_clinical_fields`: field names whose change needs a reason (refused without one);
    - `audit_site_column` / `audit_subject_column`: the columns holding the site and the
      participant (or screening) the row belongs to, so a monitor can read a whole history;
    - `audit_blinded_visible`: the fields whose values a blinded reader of the audit trail may
      see (an allow-list; the primary key is always shown). Every other column, including one
      added later, is shown to a blinded reader as blinded until it is declared here. A model
      that declares nothing (None) shows a blinded reader nothing but its id.
    """

    audit_clinical_fields: tuple[str, ...] = ()
    audit_site_column: str | None = "site_id"
    audit_subject_column: str | None = None
    audit_blinded_visible: tuple[str, ...] | None = None

    class Meta:
        abstract = True


def audited_models() -> list[type[models.Model]]:
    return [model for model in apps.get_models() if issubclass(model, Audited) and not model._meta.proxy]


def blinded_visible_columns(model: type[models.Model]) -> frozenset[str]:
    """The columns of `model`'s audit rows a blinded reader may see: its primary key and what
    it declares in `audit_blinded_visible` (field names or attnames). A name that is not a
    concrete field of the model is a mistake that would silently hide or show the wrong
    column, so it raises ImproperlyConfigured (the system check reports it at startup)."""
    columns = {field.name: field.column for field in model._meta.concrete_fields}
    columns |= {field.attname: field.column for field in model._meta.concrete_fields}
    declared = getattr(model, "audit_blinded_visible", None) or ()
    if isinstance(declared, str):
        raise ImproperlyConfigured(f"{model._meta.label}.audit_blinded_visible must be a tuple of field names")
    unknown = sorted(name for name in declared if name not in columns)
    if unknown:
        raise ImproperlyConfigured(
            f"{model._meta.label}.audit_blinded_visible names no concrete field: {', '.join(unknown)}"
        )
    return frozenset({model._meta.pk.column, *(columns[name] for name in declared)})


def trigger_arguments(model: type[Audited]) -> list[str]:
    column_names = {field.attname: field.column for field in model._meta.concrete_fields}
    column_names |= {field.name: field.column for field in model._meta.concrete_fields}
    site = model.audit_site_column if model.audit_site_column in column_names else None
    subject = model.audit_subject_column
    clinical = [column_names[name] for name in model.audit_clinical_fields]
    return [
        model._meta.pk.column,
        column_names.get(site, "") if site else "",
        column_names.get(subject, "") if subject else "",
        *clinical,
    ]


def install_triggers(using: str = "default", **kwargs) -> None:
    """Create or replace the audit trigger of every audited table (called after migrate)."""
    from django.db import connections

    with connections[using].cursor() as cursor:
        # The functions too, so a database migrated before a fix to them gets it (migration 0004
        # made them; these are idempotent).
        cursor.execute(AUDIT_LEAST_PRIVILEGE_SQL)
        cursor.execute(AUDIT_CHAIN_SQL)
        for model in audited_models():
            arguments = ", ".join("'" + argument.replace("'", "''") + "'" for argument in trigger_arguments(model))
            table = model._meta.db_table
            cursor.execute(
                f'CREATE OR REPLACE TRIGGER {TRIGGER_NAME} AFTER UPDATE OR DELETE ON "{table}" '
                f"FOR EACH ROW EXECUTE FUNCTION trial_audit_row({arguments})"
            )
            cursor.execute(
                f'CREATE OR REPLACE TRIGGER {INSERT_TRIGGER_NAME} AFTER INSERT ON "{table}" '
                f"REFERENCING NEW TABLE AS inserted_rows "
                f"FOR EACH STATEMENT EXECUTE FUNCTION trial_audit_inserted({arguments})"
            )


def grant_privileges(using: str = "default", **kwargs) -> None:
    """After migrate, as the owner: the application's role gets rows, not the trail (dbroles)."""
    from django.conf import settings
    from django.db import connections

    from trialsite import dbroles

    app = getattr(settings, "DATABASE_APP_ROLE", "")
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT current_user")
        if not app or cursor.fetchone()[0] == app:
            return  # one role for everything: a development database, flagged by check --deploy
        dbroles.grant_application_privileges(cursor, app=app)


def chain_extend(*, wait_seconds: float = 30) -> int:
    """Append the audit rows committed since the last run to the chain; returns how many."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT trial_audit_chain_extend(%s)", [wait_seconds])
        return cursor.fetchone()[0]


def chain_head() -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT position, event_id, encode(chain_hash, 'hex'), chained_at FROM trialsite_auditchain "
            "ORDER BY position DESC LIMIT 1"
        )
        row = cursor.fetchone()
        cursor.execute("SELECT current_database()")
        database = cursor.fetchone()[0]
    position, event_id, head, _chained_at = row or (0, 0, GENESIS.hex(), None)
    return {"database": database, "rows": position, "last_event_id": event_id, "head": head}


def seal(*, occasion: str) -> dict:
    """Extend the chain and publish its head outside the database: appended to AUDIT_SEAL_FILE
    (opened for append only, flushed to disk) and e-mailed to the sponsor's contact, who keeps
    it. A later rewrite of any sealed row, even with every hash after it recomputed, no longer
    reproduces this head."""
    import json
    import os

    from django.conf import settings
    from django.core.mail import send_mail
    from django.utils import timezone

    from trialsite.models import Trial

    chain_extend()
    record = {"sealed_at": timezone.now().isoformat(timespec="seconds"), "occasion": occasion, **chain_head()}
    path = settings.AUDIT_SEAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as seals:
        seals.write(json.dumps(record, sort_keys=True) + "\n")
        seals.flush()
        os.fsync(seals.fileno())
    for trial in Trial.objects.all():
        send_mail(
            subject=f"{trial.nct_id}: audit trail seal {record['sealed_at']}",
            message=(
                f"The audit trail of {trial.nct_id} ({record['database']}) at {record['sealed_at']} ({occasion}):\n"
                f"rows chained: {record['rows']}\nlast audit row id: {record['last_event_id']}\n"
                f"chain head (SHA-256): {record['head']}\n\n"
                "Please keep this message. `manage.py audit_verify` checks the trail against it; a "
                "trail rewritten after this time no longer reproduces this head.\n"
                f"{json.dumps(record, sort_keys=True)}\n"
            ),
            from_email=None,
            recipient_list=[trial.sponsor_contact_email],
        )
    return record


def seal_after_commit(occasion: str) -> None:
    """Seal once the current transaction has committed (an export, a database lock); a seal
    that cannot be made is logged, never a reason to fail the export."""
    import logging

    def publish():
        try:
            seal(occasion=occasion)
        except Exception:
            logging.getLogger(__name__).exception("the audit chain could not be sealed (%s)", occasion)

    transaction.on_commit(publish)


@contextlib.contextmanager
def audit_context(*, actor=None, reason: str = "", savepoint: bool = True) -> Iterator[None]:
    """Run the block in a transaction whose writes are attributed to `actor`, with `reason`.

    The values are transaction-local settings that the trigger reads, so they cannot leak into
    another request that reuses the connection.

    One statement on entry. The outermost context starts the transaction, whose end discards
    the settings, so it neither reads nor restores anything; a nested one reads the enclosing
    values in the statement that sets its own (the materialized CTE is read before the row that
    calls set_config is formed) and restores them on leaving, unless they were the same.

    `savepoint=False`, for a nested context only, when the caller's own atomic block is where
    the block's writes roll back to (as in a save that writes under two reasons): no savepoint
    of its own, two statements fewer. The settings are then restored only when the block
    succeeds; on an exception the caller's rollback restores them with everything else."""
    actor_id = str(actor.pk) if actor is not None and actor.pk else ""
    reason = reason or ""
    # Not autocommitting outside an atomic block: atomic() then runs in that open transaction.
    nested = connection.in_atomic_block or not connection.get_autocommit()
    if not savepoint and not connection.in_atomic_block:
        raise transaction.TransactionManagementError("audit_context(savepoint=False) needs an enclosing atomic block")
    with transaction.atomic() if savepoint else contextlib.nullcontext():
        with connection.cursor() as cursor:
            if nested:
                cursor.execute(
                    "WITH previous AS MATERIALIZED (SELECT current_setting('trial.actor_id', true) AS actor_id,"
                    " current_setting('trial.reason', true) AS reason)"
                    " SELECT previous.actor_id, previous.reason,"
                    " set_config('trial.actor_id', %s, true), set_config('trial.reason', %s, true) FROM previous",
                    [actor_id, reason],
                )
                previous_actor, previous_reason, _actor, _reason = cursor.fetchone()
            else:
                cursor.execute(
                    "SELECT set_config('trial.actor_id', %s, true), set_config('trial.reason', %s, true)",
                    [actor_id, reason],
                )
        yield
        # Leave an enclosing audit context as it was. On an exception the savepoint's
        # rollback already restores the settings.
        if nested and ((previous_actor or ""), (previous_reason or "")) != (actor_id, reason):
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('trial.actor_id', %s, true), set_config('trial.reason', %s, true)",
                    [previous_actor or "", previous_reason or ""],
                )


def is_reason_required_error(error: BaseException) -> bool:
    cause = getattr(error, "__cause__", None)
    return isinstance(error, DatabaseError) and getattr(cause, "sqlstate", None) == REASON_REQUIRED_SQLSTATE
