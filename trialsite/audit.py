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


@contextlib.contextmanager
def audit_context(*, actor=None, reason: str = "") -> Iterator[None]:
    """Run the block in a transaction whose writes are attributed to `actor`, with `reason`.

    The values are transaction-local settings that the trigger reads, so they cannot leak into
    another request that reuses the connection."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('trial.actor_id', true), current_setting('trial.reason', true)")
            previous_actor, previous_reason = cursor.fetchone()
            cursor.execute(
                "SELECT set_config('trial.actor_id', %s, true), set_config('trial.reason', %s, true)",
                [str(actor.pk) if actor is not None and actor.pk else "", reason or ""],
            )
        yield
        # Leave an enclosing audit context as it was. On an exception the savepoint's
        # rollback already restores the settings.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('trial.actor_id', %s, true), set_config('trial.reason', %s, true)",
                [previous_actor or "", previous_reason or ""],
            )


def is_reason_required_error(error: BaseException) -> bool:
    cause = getattr(error, "__cause__", None)
    return isinstance(error, DatabaseError) and getattr(cause, "sqlstate", None) == REASON_REQUIRED_SQLSTATE
