from django.db import migrations

from trialsite.audit import AUDIT_CHAIN_SQL, AUDIT_LEAST_PRIVILEGE_SQL

# The chain is written by trial_audit_chain_extend() only and read by audit_verify; it has no
# Django model, so nothing in the application can write it by accident.
CHAIN_TABLE_SQL = """
CREATE TABLE trialsite_auditchain (
    position bigint PRIMARY KEY,
    event_id bigint NOT NULL UNIQUE,
    row_hash bytea NOT NULL,
    chain_hash bytea NOT NULL,
    chained_at timestamptz NOT NULL
);
"""


class Migration(migrations.Migration):
    dependencies = [("trialsite", "0003_audit_insert_statement_trigger")]

    operations = [
        migrations.RunSQL(CHAIN_TABLE_SQL, "DROP TABLE trialsite_auditchain"),
        migrations.RunSQL(AUDIT_LEAST_PRIVILEGE_SQL, migrations.RunSQL.noop),
        migrations.RunSQL(AUDIT_CHAIN_SQL, "DROP FUNCTION trial_audit_chain_extend(double precision)"),
    ]
