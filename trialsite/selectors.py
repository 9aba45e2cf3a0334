"""Reads of the common ground, scoped by access and blinded where they must be."""

from __future__ import annotations

import functools

from django.db.models import BooleanField, Expression, F, Q, QuerySet
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from trialsite import access
from trialsite.access import Capability
from trialsite.audit import audited_models, blinded_visible_columns, trigger_arguments
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


def hidden_from_blinded_readers() -> Q:
    """The audit events a blinded reader's trail leaves out: an update that changed only columns
    a blinded reader may not see. Its values would be blinded, but which rows changed together,
    and when, is itself a value (an expiry corrected for one manufacturing lot names the kits of
    one content). Everything a blinded reader is shown about the trail (its rows, their number,
    an export's data version) is counted from the events this leaves in."""
    visible_updates = tuple(
        (table, tuple(sorted(columns - {"id"})))
        for table, columns in sorted(blinded_visible_columns_by_table().items())
        if columns - {"id"}
    )
    return Q(HiddenUpdate(visible_updates))


class HiddenUpdate(Expression):
    """`action = 'UPDATE' AND NOT (one of the table's visible columns changed)`, for
    `hidden_from_blinded_readers`. Written as SQL once per set of declarations rather than as a
    Q of some forty branches: building and compiling that Q took longer than the database took
    to count a site's trail, and the trail page compiles it twice (count, page). The table is
    compared before the changed columns: PostgreSQL tests an AND's terms in the order written,
    and a name comparison is cheap where an array overlap is not. No column it reads is
    nullable, so it is never NULL and negates as the Q did."""

    conditional = True
    output_field = BooleanField()

    def __init__(self, visible_updates: tuple[tuple[str, tuple[str, ...]], ...]):
        super().__init__()
        self.visible_updates = visible_updates
        self.columns = [F("action"), F("table_name"), F("changed_fields")]

    def get_source_expressions(self):
        return self.columns

    def set_source_expressions(self, expressions):
        self.columns = list(expressions)

    def as_sql(self, compiler, connection):
        action, table, changed = (compiler.compile(column)[0] for column in self.columns)
        template, params = _hidden_update_sql(self.visible_updates)
        return template.format(action=action, table=table, changed=changed), list(params)


@functools.cache
def _hidden_update_sql(visible_updates) -> tuple[str, tuple]:
    params: list = [AuditEvent.Action.UPDATE.value]
    branches = []
    for table, columns in visible_updates:
        branches.append("({table} = %s AND {changed} && %s::text[])")
        params += [table, list(columns)]
    if not branches:
        return "({action} = %s)", tuple(params)
    return "({action} = %s AND NOT (" + " OR ".join(branches) + "))", tuple(params)


def audit_events_for(
    user, *, table_name: str | None = None, record_pk: str | None = None, subject_id: int | None = None
) -> QuerySet[AuditEvent]:
    from trialsite.models import StaffRole
    from trialsite.security_events import SECURITY_TABLES

    sites = access.site_ids_with(user, Capability.READ_AUDIT)
    # Security events (a refused password re-entry, a second factor enrolled) belong to no site:
    # a reader sees those of people who hold a role at a site the reader may audit.
    colleagues = StaffRole.objects.filter(site_id__in=sites).values("user_id")
    events = AuditEvent.objects.filter(
        Q(site_id__in=sites) | Q(site_id__isnull=True, table_name__in=SECURITY_TABLES, actor_id__in=colleagues)
    )
    blinded_sites = blinded_site_ids(user)
    if blinded_sites:
        events = events.exclude(Q(site_id__in=blinded_sites) & hidden_from_blinded_readers())
    if table_name is not None:
        events = events.filter(table_name=table_name)
    if record_pk is not None:
        events = events.filter(record_pk=str(record_pk))
    if subject_id is not None:
        events = events.filter(subject_id=subject_id)
    return events.select_related("actor").order_by("occurred_at", "id")


def audit_events_in(page_ids) -> QuerySet[AuditEvent]:
    """The events of one page of `audit_events_for`, given the page as a query of their ids: the
    database sorts the reader's whole trail by narrow rows and then reads fifty wide ones (with
    their values and actor), instead of carrying every wide row through the join and the sort."""
    return AuditEvent.objects.filter(pk__in=page_ids).select_related("actor").order_by("occurred_at", "id")


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


def reads_real_event_ids(user) -> bool:
    """May the user read the trail's own event ids? Only someone who sees allocation at every
    site whose trail they read: the ids come from one sequence shared with the writes a blinded
    trail leaves out (a SUSAR's expedited report is sent for active product only), so the gaps
    between the ids a blinded reader sees would count those writes, at any of their sites."""
    return not blinded_site_ids(user)


def number_for(user, events, *, first: int) -> list[AuditEvent]:
    """Each event's `listed_id`: its id for a reader who may read ids (`reads_real_event_ids`);
    for anyone else its position in what they were given, `first` for the first event (the
    list's order is the trail's order, by time), which no hidden write moves."""
    real = reads_real_event_ids(user)
    for position, event in enumerate(events, start=first):
        event.listed_id = event.pk if real else position
    return events


# --- The audit page in words -----------------------------------------------------------------

# Tables and columns by name in the reader's language. Most fields carry a translated verbose
# name; these are the ones that do not (ids, timestamps, status columns), and the tables, whose
# default names Django does not mark for translation.
AUDIT_TABLE_LABELS = {
    "trialsite_site": _("Site"),
    "trialsite_staffrole": _("Staff role"),
    "trialsite_signature": _("Signature"),
    "enrollment_screening": _("Screening"),
    "enrollment_consent": _("Consent"),
    "enrollment_eligibilityanswer": _("Eligibility answer"),
    "enrollment_participant": _("Participant"),
    "enrollment_withdrawal": _("Withdrawal"),
    "enrollment_protocoldeviation": _("Protocol deviation"),
    "randomization_slot": _("Randomization slot"),
    "randomization_unblinding": _("Unblinding"),
    "randomization_codebreaksheetset": _("Code-break sheets"),
    "dosing_visit": _("Visit"),
    "dosing_doserecord": _("Dose record"),
    "dosing_repeatlabs": _("Repeat labs"),
    "dosing_shipment": _("Shipment"),
    "dosing_kit": _("Kit"),
    "reminders_reminder": _("Reminder"),
}
AUDIT_COLUMN_LABELS = {
    "id": _("id"),
    "site_id": _("site"),
    "trial_id": _("trial"),
    "participant_id": _("participant"),
    "screening_id": _("screening"),
    "visit_id": _("visit"),
    "user_id": _("user"),
    "role": _("role"),
    "status": _("status"),
    "outcome": _("verdict"),
    "reason": _("reason"),
    "reasons": _("reasons"),
    "answer": _("answer"),
    "criterion_code": _("criterion"),
    "decision": _("dose decision"),
    "kind": _("kind"),
    "content": _("content"),
    "stratification": _("stratification"),
    "stratum": _("stratum"),
    "due_at": _("due"),
    "audience": _("to"),
    "status_reason": _("status note"),
    "meaning": _("meaning"),
    "signer_id": _("signed by"),
    "signed_at": _("signed at"),
    "randomized_at": _("randomized at"),
    "created_at": _("created at"),
    "updated_at": _("updated at"),
    "recorded_at": _("recorded at"),
    "recorded_by_id": _("recorded by"),
    "screened_by_id": _("screened by"),
    "obtained_by_id": _("obtained by"),
    "protocol_version_id": _("protocol version"),
    "allocated_at": _("allocated at"),
    "arm_id": _("arm"),
    "assigned_at": _("assigned at"),
    "assigned_by_id": _("assigned by"),
    "attempts": _("attempts"),
    "baseline_weight_kg": _("baseline weight (kg)"),
    "blinded": _("blinded"),
    "block": _("block"),
    "block_size": _("block size"),
    "block_sizes": _("block sizes"),
    "channel": _("channel"),
    "claimed_at": _("claimed at"),
    "code": _("code"),
    "concentrate_ml": _("concentrate (mL)"),
    "created_by_id": _("created by"),
    "cycle": _("cycle"),
    "data_version": _("data version"),
    "definition": _("definition"),
    "definition_sha256": _("definition SHA-256"),
    "diluted_volume_ml": _("diluted volume (mL)"),
    "dispensed_at": _("dispensed at"),
    "dispensed_by_id": _("dispensed by"),
    "dose_mg": _("dose (mg)"),
    "eligibility_signature_id": _("eligibility signature"),
    "enqueued_at": _("enqueued at"),
    "error": _("error"),
    "expires_at": _("expires at"),
    "file_path": _("file path"),
    "finished_at": _("finished at"),
    "first_dose": _("first dose"),
    "format": _("format"),
    "generated_at": _("generated at"),
    "generated_by_id": _("generated by"),
    "imported_at": _("imported at"),
    "imported_by_id": _("imported by"),
    "is_active": _("active"),
    "kit_contents": _("kit contents"),
    "kit_count": _("kit count"),
    "kit_list_id": _("kit list"),
    "language": _("language"),
    "last_randomization_number": _("last randomization number"),
    "last_screening_number": _("last screening number"),
    "loaded_at": _("loaded at"),
    "locked_at": _("locked at"),
    "locked_by_id": _("locked by"),
    "method": _("method"),
    "name": _("name"),
    "nct_id": _("NCT number"),
    "opened_at": _("opened at"),
    "order": _("order"),
    "progress": _("progress"),
    "randomization_list_id": _("randomization list"),
    "ratio": _("ratio"),
    "received_at": _("received at"),
    "received_by_id": _("received by"),
    "recipients": _("recipients"),
    "record_pk": _("record id"),
    "record_table": _("record table"),
    "requested_by_id": _("requested by"),
    "returned_by_id": _("returned by"),
    "returned_on": _("returned on"),
    "revoked_at": _("revoked at"),
    "revoked_by_id": _("revoked by"),
    "row_count": _("row count"),
    "second_factor": _("second factor"),
    "seed": _("seed"),
    "sent_at": _("sent at"),
    "sequence": _("sequence"),
    "sha256": _("SHA-256"),
    "sheet_count": _("sheet count"),
    "sheet_number": _("sheet number"),
    "shipment_id": _("shipment"),
    "shipped_at": _("shipped at"),
    "shipped_by_id": _("shipped by"),
    "site_ids": _("sites"),
    "slots_per_stratum": _("slots per stratum"),
    "source": _("source"),
    "sponsor": _("sponsor"),
    "sponsor_contact_email": _("sponsor contact e-mail"),
    "sponsor_notified_at": _("sponsor notified at"),
    "sponsor_protocol_id": _("sponsor protocol id"),
    "started_at": _("started at"),
    "status_note": _("status note"),
    "supply_note": _("supply note"),
    "tablets_returned": _("tablets returned"),
    "target_enrollment": _("target enrollment"),
    "time_zone": _("time zone"),
    "title": _("title"),
    "unblinded_at": _("unblinded at"),
    "unblinded_by_id": _("unblinded by"),
    "version": _("version"),
    "vial_plan": _("vial plan"),
    "weight_change_flagged": _("weight change flagged"),
    "weight_kg": _("weight (kg)"),
}

# Reasons the system writes into the trail itself (in English, as stored); a reader sees them in
# their language. A reason someone typed is shown as typed.
SYSTEM_REASONS = {
    reason: _(reason)
    for reason in (
        gettext_noop("visit window closed without a visit recorded"),
        gettext_noop("two-factor device replaced"),
        gettext_noop("two-factor device removed"),
        gettext_noop("two-factor device enrolled"),
        gettext_noop("shipment received at site"),
        gettext_noop("repeat labs after a held infusion"),
        gettext_noop("randomization list locked"),
        gettext_noop("quarantine released by the supply manager"),
        gettext_noop("password re-entry refused"),
        gettext_noop("participant withdrew: the visit will not happen"),
        gettext_noop("kits shipped to site"),
        gettext_noop("kit returned"),
        gettext_noop("kit past its expiry date"),
        gettext_noop("kit list imported"),
        gettext_noop("kit list generated"),
        gettext_noop("kit dispensed"),
        gettext_noop("kit destroyed by the supply manager"),
        gettext_noop("kit assignment at a dosing visit"),
        gettext_noop("export started"),
        gettext_noop("export requested"),
        gettext_noop("export progress"),
        gettext_noop("Sealed code-break sheets printed"),
        gettext_noop("Screening recorded"),
        gettext_noop("Randomized"),
        gettext_noop("Eligibility signed off"),
        gettext_noop("Demo users for development"),
        gettext_noop("API token revoked"),
        gettext_noop("API token created"),
        gettext_noop("participant opted out of contact"),
        gettext_noop("randomization list generated"),
        gettext_noop("randomization list imported"),
        gettext_noop("visit recorded"),
        gettext_noop("automatic resupply"),
        gettext_noop("Demo list"),
    )
}
# Stored as "<prefix><what was typed or named>".
SYSTEM_REASON_PREFIXES = [
    ("Protocol loaded from ", _("Protocol loaded from %(rest)s")),
    ("Emergency unblinding: ", _("Emergency unblinding: %(rest)s")),
    ("Withdrawal: ", _("Withdrawal: %(rest)s")),
    ("visit rescheduled: ", _("visit rescheduled: %(rest)s")),
    ("temperature excursion: ", _("temperature excursion: %(rest)s")),
]


def reason_in_language(reason: str) -> str:
    if reason in SYSTEM_REASONS:
        return str(SYSTEM_REASONS[reason])
    for prefix, template in SYSTEM_REASON_PREFIXES:
        if reason.startswith(prefix):
            return str(template) % {"rest": reason[len(prefix) :]}
    return reason


def _audited_by_table() -> dict:
    return {model._meta.db_table: model for model in audited_models()}


def _table_label(table: str, model) -> str:
    if table in AUDIT_TABLE_LABELS:
        return str(AUDIT_TABLE_LABELS[table])
    return str(model._meta.verbose_name).capitalize() if model else table


def audit_tables_for(user) -> list[tuple[str, str]]:
    """The audited tables a reader picks from, as (table, name in the reader's language): those
    whose rows carry a site, since the trail is read site by site (a table without one shows
    nobody anything). The same list for every reader: which tables exist is no secret."""
    tables = [
        (table, _table_label(table, model))
        for table, model in _audited_by_table().items()
        if trigger_arguments(model)[1]
    ]
    return sorted(tables, key=lambda pair: pair[1])


def audit_subject_for(user, text: str | None) -> int | None:
    """The participant or screening id a `?subject=` names: an id (a whole number), or a
    randomization or screening number of a participant at a site whose trail the user reads.
    None when it names nobody the user may see (a number elsewhere reads like no number)."""
    from enrollment.models import Participant
    from trialsite.text import identifier, whole_number

    number = whole_number(text)
    if number is not None:
        return number
    wanted = identifier(text)
    if not wanted:
        return None
    participants = access.scope(Participant.objects.all(), user, Capability.READ_AUDIT)
    found = participants.filter(Q(randomization_number=wanted) | Q(screening_number=wanted))
    return found.values_list("pk", flat=True).first()


def _column_labels(model) -> dict[str, str]:
    labels = {}
    for field in model._meta.concrete_fields if model else ():
        if isinstance(field.verbose_name, Promise):
            labels[field.column] = str(field.verbose_name)
        else:
            labels[field.column] = str(AUDIT_COLUMN_LABELS.get(field.column, field.verbose_name))
    return labels


@functools.cache
def _coded_columns() -> dict[tuple[str, str], dict]:
    """A coded value (a role, a status) by its label (lazy: in the reader's language), per table
    and column; the same for every request."""
    return {
        (model._meta.db_table, field.column): {str(value): label for value, label in field.flatchoices}
        for model in _audited_by_table().values()
        for field in model._meta.concrete_fields
        if field.choices
    }


def audit_rows_for(user, events) -> list[AuditEvent]:
    """The page's rows: redacted for the reader (redact_for, unchanged), then put in words: the
    table and each column by name in the reader's language, and hospital record numbers masked
    as on every other page (a monitor reads the trail, not the patient's file)."""
    from enrollment.models import Screening

    def masked(value):
        if not isinstance(value, str) or value == BLINDED_VALUE:
            return value
        return Screening(hospital_record_number=value).masked_record_number

    models_by_table = _audited_by_table()
    record_numbers = {
        (model._meta.db_table, field.column)
        for model in models_by_table.values()
        for field in model._meta.concrete_fields
        if field.name == "hospital_record_number"
    }
    choices = _coded_columns()

    # A coded value by its label; the blinded mark in the reader's language.
    def in_words(key, value):
        if value == BLINDED_VALUE:
            return str(_("■ blinded"))
        return str(choices[key].get(str(value), value)) if key in choices and value is not None else value

    labels_by_table = {}
    rows = redact_for(user, events)
    for event in rows:
        model = models_by_table.get(event.table_name)
        if event.table_name not in labels_by_table:
            labels_by_table[event.table_name] = _column_labels(model)
        labels = labels_by_table[event.table_name]
        event.table_label = _table_label(event.table_name, model)
        changes = []
        for column, old, new in event.changes:
            if (event.table_name, column) in record_numbers:
                old, new = masked(old), masked(new)
            old, new = in_words((event.table_name, column), old), in_words((event.table_name, column), new)
            label = labels.get(column, column)
            changes.append((column, label[:1].upper() + label[1:], old, new))
        event.changes = changes
        event.reason = reason_in_language(event.reason or "")
    return rows
