import datetime

import pytest
from django.db import DatabaseError, connection, transaction

from enrollment.models import Screening
from tests import factories
from trialsite.audit import audit_context, audited_models, is_reason_required_error, trigger_arguments
from trialsite.models import AuditEvent, Role


@pytest.fixture
def coordinator(site):
    return factories.make_user(Role.COORDINATOR, site)


@pytest.fixture
def screening(site, coordinator):
    return factories.make_screening(site, by=coordinator)


def events_for(record) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(table_name=record._meta.db_table, record_pk=str(record.pk)).order_by("id"))


def test_a_create_is_audited_with_who_why_and_the_new_values(screening, coordinator, site):
    created = events_for(screening)[0]
    assert created.action == AuditEvent.Action.INSERT
    assert created.actor == coordinator
    assert created.reason == "test screening"
    assert created.site_id == site.pk
    assert created.subject_id == screening.pk
    assert created.old_values is None
    assert created.new_values["hospital_record_number"] == screening.hospital_record_number
    assert "date_of_birth" in created.changed_fields


def test_an_update_through_queryset_update_is_audited_with_old_and_new_values(screening, coordinator):
    with audit_context(actor=coordinator, reason="transcription error on the CRF"):
        Screening.objects.filter(pk=screening.pk).update(date_of_birth=datetime.date(1971, 6, 1))

    changed = events_for(screening)[-1]
    assert changed.action == AuditEvent.Action.UPDATE
    assert changed.changed_fields == ["date_of_birth"]
    assert changed.old_values["date_of_birth"] == "1970-06-01"
    assert changed.new_values["date_of_birth"] == "1971-06-01"
    assert changed.reason == "transcription error on the CRF"
    assert changed.actor == coordinator


def test_raw_sql_bypasses_nothing(screening):
    with audit_context(reason="bulk correction by the data manager"), connection.cursor() as cursor:
        cursor.execute("UPDATE enrollment_screening SET initials = 'XY' WHERE id = %s", [screening.pk])

    changed = events_for(screening)[-1]
    assert changed.changed_fields == ["initials"]
    assert changed.actor is None
    assert changed.database_user  # the database role is recorded when there is no application user


def test_a_bulk_insert_writes_one_audit_row_per_inserted_row(screening, coordinator, site):
    from enrollment.models import Consent

    columns = sorted(field.column for field in Consent._meta.concrete_fields)
    with audit_context(actor=coordinator, reason="paper consents transcribed"):
        consents = Consent.objects.bulk_create(
            [
                Consent(
                    screening=screening,
                    site=site,
                    version=f"v{number}",
                    signed_on=datetime.date(2026, 1, number),
                    obtained_by=coordinator,
                )
                for number in (1, 2, 3)
            ]
        )
    for consent in consents:
        (created,) = events_for(consent)
        assert created.action == AuditEvent.Action.INSERT
        assert created.actor == coordinator
        assert created.reason == "paper consents transcribed"
        assert created.site_id == site.pk
        assert created.new_values["version"] == consent.version
        assert created.changed_fields == columns


def test_a_multi_row_raw_insert_is_audited_row_by_row(screening, site, coordinator):
    with audit_context(reason="migration from the paper log"), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO enrollment_consent (screening_id, site_id, version, signed_on, obtained_by_id, recorded_at) "
            "VALUES (%s, %s, 'r1', '2026-01-01', %s, now()), (%s, %s, 'r2', '2026-01-02', %s, now()) RETURNING id",
            [screening.pk, site.pk, coordinator.pk] * 2,
        )
        inserted = [row[0] for row in cursor.fetchall()]
    events = AuditEvent.objects.filter(table_name="enrollment_consent", record_pk__in=[str(pk) for pk in inserted])
    assert sorted(event.new_values["version"] for event in events) == ["r1", "r2"]
    assert {event.reason for event in events} == {"migration from the paper log"}


def test_an_update_that_changes_nothing_writes_no_audit_row(screening):
    before = AuditEvent.objects.count()
    Screening.objects.filter(pk=screening.pk).update(initials=screening.initials)
    assert AuditEvent.objects.count() == before


def test_a_delete_is_audited_with_the_old_values(site, coordinator):
    staff_role = factories.make_user(Role.PHARMACIST, site).trial_roles.get()
    with audit_context(actor=coordinator, reason="role given by mistake"):
        staff_role.delete()
    [deleted] = AuditEvent.objects.filter(table_name="trialsite_staffrole", action="DELETE")
    assert deleted.action == AuditEvent.Action.DELETE
    assert deleted.old_values["role"] == Role.PHARMACIST
    assert deleted.new_values is None


def test_changing_a_clinical_value_without_a_reason_is_refused_and_nothing_is_saved(screening):
    with pytest.raises(DatabaseError) as refused, transaction.atomic():
        Screening.objects.filter(pk=screening.pk).update(date_of_birth=datetime.date(1980, 1, 1))

    assert is_reason_required_error(refused.value)
    assert "A reason is required to change date_of_birth" in str(refused.value)
    screening.refresh_from_db()
    assert screening.date_of_birth == datetime.date(1970, 6, 1)


def test_a_non_clinical_column_changes_without_a_reason(screening):
    Screening.objects.filter(pk=screening.pk).update(outcome="ineligible")
    assert events_for(screening)[-1].reason == ""


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE trialsite_auditevent SET reason = 'forged'",
        "DELETE FROM trialsite_auditevent",
    ],
)
def test_the_database_refuses_to_change_or_delete_audit_rows(screening, statement):
    # The application's role has no such privilege; for the owner, the trigger refuses.
    refused = "permission denied|audit trail cannot be changed"
    with pytest.raises(DatabaseError, match=refused), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(statement)
    assert AuditEvent.objects.filter(reason="forged").count() == 0
    assert AuditEvent.objects.count() > 0


def test_the_orm_cannot_edit_an_audit_row_either(screening):
    event = AuditEvent.objects.first()
    event.reason = "forged"
    with pytest.raises(DatabaseError), transaction.atomic():
        event.save()
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.all().delete()


@pytest.mark.parametrize("trigger_name", ["trial_audit", "trial_audit_insert"])
def test_every_trial_table_has_its_audit_trigger_as_declared(db, trigger_name):
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, t.tgargs
            FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            WHERE t.tgname = %s AND NOT t.tgisinternal
            """,
            [trigger_name],
        )
        installed = {table: bytes(arguments).split(b"\x00")[:-1] for table, arguments in cursor.fetchall()}

    declared = {model._meta.db_table: model for model in audited_models()}
    assert set(installed) == set(declared)
    for table, model in declared.items():
        assert [argument.decode() for argument in installed[table]] == trigger_arguments(model), table


def test_every_model_of_the_trial_apps_is_audited():
    from django.apps import apps

    trial_apps = {"trialsite", "enrollment", "randomization", "schedules", "dosing", "reports", "crf"}
    unaudited = {
        model._meta.label
        for model in apps.get_models()
        if model._meta.app_label in trial_apps and model not in audited_models()
    }
    # The audit trail itself is not audited by a trigger, nor the hashes of API token keys
    # (kept out of the trail on purpose; the token they belong to is audited).
    assert unaudited == {"trialsite.AuditEvent", "trialsite.ApiTokenKey"}
