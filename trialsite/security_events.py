"""Security events in the audit trail: a second factor enrolled or removed, a password re-entry
refused. They are not rows of a trial table, so no trigger writes them, and the application's
database role cannot write the audit table; they go through `trial_audit_security_event`
(migration 0006), which accepts only these few kinds, so it cannot forge a trial-data row."""

from __future__ import annotations

import json

from django.db import connection

from trialsite.audit import audit_context

TWO_FACTOR_DEVICE = "otp_totp_totpdevice"
REAUTHENTICATION = "security_reauthentication"
SECURITY_TABLES = (TWO_FACTOR_DEVICE, REAUTHENTICATION)


def security_event(
    *,
    actor,
    table: str,
    record_pk: str,
    action: str,
    reason: str,
    old_values: dict | None = None,
    new_values: dict | None = None,
) -> None:
    with audit_context(actor=actor, reason=reason), connection.cursor() as cursor:
        cursor.execute(
            "SELECT trial_audit_security_event(%s, %s, %s, %s::jsonb, %s::jsonb, %s)",
            [
                table,
                str(record_pk),
                action,
                None if old_values is None else json.dumps(old_values),
                None if new_values is None else json.dumps(new_values),
                reason,
            ],
        )
