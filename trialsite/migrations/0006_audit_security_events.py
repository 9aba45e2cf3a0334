from django.db import migrations

# The application's role cannot write the audit table (migration 0004); trial data reaches it
# through the triggers. Security events that are not rows of a trial table (a second factor
# enrolled or removed, a password re-entry refused) come through this one function instead,
# which refuses any table but its own few, so it cannot be used to forge a trial-data row. The
# actor is checked as the triggers check it; database_user is the caller's role. Refusals are
# SQLSTATE TR005 (TR004 is the chain extension's time-out).
SQL = r"""
CREATE OR REPLACE FUNCTION trial_audit_security_event(
    p_table text, p_record_pk text, p_action text, p_old jsonb, p_new jsonb, p_reason text
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    actor bigint := nullif(current_setting('trial.actor_id', true), '')::bigint;
BEGIN
    IF p_table NOT IN ('otp_totp_totpdevice', 'security_reauthentication') THEN
        RAISE EXCEPTION 'Only security events are written this way, not rows of %', p_table
            USING ERRCODE = 'TR005';
    END IF;
    IF p_action NOT IN ('INSERT', 'UPDATE', 'DELETE') THEN
        RAISE EXCEPTION 'Unknown audit action %', p_action USING ERRCODE = 'TR005';
    END IF;
    IF coalesce(p_reason, '') = '' THEN
        RAISE EXCEPTION 'A security event needs a reason' USING ERRCODE = 'TR001';
    END IF;
    actor := trial_audit_actor(actor, ARRAY[]::bigint[]);
    INSERT INTO trialsite_auditevent (
        occurred_at, table_name, record_pk, action, old_values, new_values, changed_fields,
        actor_id, reason, site_id, subject_id, database_user
    ) VALUES (
        clock_timestamp(), p_table, p_record_pk, p_action, p_old, p_new,
        coalesce((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(coalesce(p_new, '{}'::jsonb)) AS k), '{}'),
        actor, p_reason, NULL, NULL, session_user
    );
END;
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("trialsite", "0005_api_tokens")]

    operations = [
        migrations.RunSQL(
            SQL, reverse_sql="DROP FUNCTION IF EXISTS trial_audit_security_event(text, text, text, jsonb, jsonb, text);"
        )
    ]
