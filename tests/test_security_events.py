"""Security events reach the audit trail through one narrow function the application's role may
call; it cannot be used to write a row that looks like trial data."""

import pytest
from django.db import DatabaseError, connection, transaction

from trialsite.audit import audit_context
from trialsite.models import AuditEvent
from trialsite.security_events import TWO_FACTOR_DEVICE, security_event


def test_a_security_event_is_written_with_its_actor_and_the_applications_role(cast):
    security_event(
        actor=cast.investigator,
        table=TWO_FACTOR_DEVICE,
        record_pk="7",
        action="INSERT",
        reason="two-factor device enrolled",
        new_values={"id": 7, "user_id": cast.investigator.pk, "confirmed": True},
    )
    event = AuditEvent.objects.get(table_name=TWO_FACTOR_DEVICE)
    assert (event.actor, event.reason, event.changed_fields) == (
        cast.investigator,
        "two-factor device enrolled",
        ["confirmed", "id", "user_id"],
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT session_user")
        assert event.database_user == cursor.fetchone()[0]


@pytest.mark.parametrize("table", ["randomization_slot", "dosing_kit", "trialsite_auditevent"])
def test_the_function_refuses_to_write_a_trial_table_row(cast, table):
    with pytest.raises(DatabaseError, match="Only security events"), transaction.atomic():
        security_event(
            actor=cast.investigator,
            table=table,
            record_pk="1",
            action="UPDATE",
            reason="forged",
            new_values={"arm_id": 1},
        )
    assert not AuditEvent.objects.filter(table_name=table, reason="forged").exists()


def test_the_function_refuses_an_actor_who_is_not_an_active_user(cast):
    cast.monitor.is_active = False
    with audit_context(reason="test: monitor left"):
        cast.monitor.save(update_fields=["is_active"])
    with pytest.raises(DatabaseError, match="not an active user"), transaction.atomic():
        security_event(actor=cast.monitor, table=TWO_FACTOR_DEVICE, record_pk="1", action="DELETE", reason="x")


def test_a_refused_password_re_entry_is_in_the_audit_trail_without_the_password(cast):
    from trialsite.exceptions import PasswordIncorrect
    from trialsite.reauth import confirm_password
    from trialsite.security_events import REAUTHENTICATION

    with pytest.raises(PasswordIncorrect):
        confirm_password(user=cast.investigator, password="not-my-password")
    event = AuditEvent.objects.get(table_name=REAUTHENTICATION)
    assert event.actor == cast.investigator and event.reason == "password re-entry refused"
    assert event.new_values["failures_in_a_row"] == 1
    assert "not-my-password" not in str(event.new_values)


def test_the_monitor_reads_the_security_events_of_the_sites_staff_but_not_of_another_sites(cast, client_for):
    from trialsite.exceptions import PasswordIncorrect
    from trialsite.reauth import confirm_password
    from trialsite.security_events import REAUTHENTICATION
    from trialsite.selectors import audit_events_for

    for user in (cast.investigator, cast.other_coordinator):
        with pytest.raises(PasswordIncorrect):
            confirm_password(user=user, password="not-my-password")
    assert "password re-entry refused" in client_for(cast.monitor).get("/audit/").content.decode()
    refused = {event.actor_id for event in audit_events_for(cast.monitor) if event.table_name == REAUTHENTICATION}
    assert refused == {cast.investigator.pk}
