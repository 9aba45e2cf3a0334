"""Reads of the common ground, scoped by access and blinded where they must be."""

from __future__ import annotations

import functools
import operator

from django.db.models import Q, QuerySet

from trialsite import access
from trialsite.access import Capability
from trialsite.audit import audited_models, blinded_visible_columns
from trialsite.models import AuditEvent

BLINDED_VALUE = "■ blinded"
# Audit rows of a table no Audited model declares (the two-factor device rows written by
# hand, a dropped table's history): a blinded reader sees their id only.
UNDECLARED_VISIBLE = frozenset({"id"})


def blinded_visible_columns_by_table() -> dict[str, frozenset[str]]:
    """Per audited table, the columns a blinded reader may see (`audit_blinded_visible`)."""
    return {model._meta.db_table: blinded_visible_columns(model) for model in audited_models()}


def blinded_site_ids(user) -> set[int]:
    """The sites whose trail the user reads without seeing allocation there."""
    return access.site_ids_with(user, Capability.READ_AUDIT) - access.site_ids_with(user, Capability.VIEW_ALLOCATION)


def audit_events_for(
    user, *, table_name: str | None = None, record_pk: str | None = None, subject_id: int | None = None
) -> QuerySet[AuditEvent]:
    events = access.scope(AuditEvent.objects.all(), user, Capability.READ_AUDIT, site_field="site_id")
    blinded_sites = blinded_site_ids(user)
    if blinded_sites:
        # An update that changed only columns a blinded reader may not see is left out for
        # them altogether: its values would be blinded, but which rows changed together, and
        # when, is itself a value (an expiry corrected for one manufacturing lot names the
        # kits of one content).
        visible_updates = [
            Q(table_name=table, changed_fields__overlap=sorted(columns - {"id"}))
            for table, columns in blinded_visible_columns_by_table().items()
            if columns - {"id"}
        ]
        hidden = Q(site_id__in=blinded_sites, action=AuditEvent.Action.UPDATE)
        if visible_updates:
            hidden &= ~functools.reduce(operator.or_, visible_updates)
        events = events.exclude(hidden)
    if table_name is not None:
        events = events.filter(table_name=table_name)
    if record_pk is not None:
        events = events.filter(record_pk=str(record_pk))
    if subject_id is not None:
        events = events.filter(subject_id=subject_id)
    return events.select_related("actor").order_by("occurred_at", "id")


def redact_for(user, events) -> list[AuditEvent]:
    """The events with every value the user may not see replaced by BLINDED_VALUE (the column
    names stay). A reader who may see allocation at the event's site sees every value; anyone
    else sees only the columns the table declares in `audit_blinded_visible`, so a column
    nobody declared is hidden. Works on the fetched rows; nothing is written."""
    visible_by_table = blinded_visible_columns_by_table()
    redacted = []
    for event in events:
        if not access.can(user, Capability.VIEW_ALLOCATION, event.site_id):
            visible = visible_by_table.get(event.table_name, UNDECLARED_VISIBLE)
            for values in (event.old_values, event.new_values):
                if values is None:
                    continue
                for column in list(values):
                    if column not in visible:
                        values[column] = BLINDED_VALUE
        old, new = event.old_values or {}, event.new_values or {}
        event.changes = [(column, old.get(column), new.get(column)) for column in event.changed_fields]
        redacted.append(event)
    return redacted
