"""Reads of the common ground, scoped by access and blinded where they must be."""

from __future__ import annotations

from django.db.models import QuerySet

from trialsite import access
from trialsite.access import Capability
from trialsite.audit import audited_models
from trialsite.models import AuditEvent

BLINDED_VALUE = "■ blinded"


def blinded_columns_by_table() -> dict[str, set[str]]:
    """Columns whose values reveal allocation, per table (from `audit_blinded_fields`)."""
    columns: dict[str, set[str]] = {}
    for model in audited_models():
        names = getattr(model, "audit_blinded_fields", ())
        if not names:
            continue
        if names == ("__all__",):
            columns[model._meta.db_table] = {"__all__"}
            continue
        fields = {field.name: field.column for field in model._meta.concrete_fields}
        columns[model._meta.db_table] = {fields[name] for name in names}
    return columns


def audit_events_for(
    user, *, table_name: str | None = None, record_pk: str | None = None, subject_id: int | None = None
) -> QuerySet[AuditEvent]:
    events = access.scope(AuditEvent.objects.all(), user, Capability.READ_AUDIT, site_field="site_id")
    if table_name is not None:
        events = events.filter(table_name=table_name)
    if record_pk is not None:
        events = events.filter(record_pk=str(record_pk))
    if subject_id is not None:
        events = events.filter(subject_id=subject_id)
    return events.select_related("actor").order_by("occurred_at", "id")


def redact_for(user, events) -> list[AuditEvent]:
    """The events with allocation-revealing values replaced, unless the user may see allocation
    at the event's site. Works on the fetched rows; nothing is written."""
    blinded = blinded_columns_by_table()
    visible = []
    for event in events:
        hidden = blinded.get(event.table_name)
        if hidden and not access.can(user, Capability.VIEW_ALLOCATION, event.site_id):
            for values in (event.old_values, event.new_values):
                if values is None:
                    continue
                for column in list(values):
                    if "__all__" in hidden or column in hidden:
                        values[column] = BLINDED_VALUE
        old, new = event.old_values or {}, event.new_values or {}
        event.changes = [(column, old.get(column), new.get(column)) for column in event.changed_fields]
        visible.append(event)
    return visible
