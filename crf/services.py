"""Entering a case report form: the one function the web page and the API both call.

`form_save` checks every item of the form (type, range, code list, whether it is shown, the
protocol's cross-item checks), refuses with one `FormInvalid` naming each item's errors, and
otherwise writes the values item by item inside an audit context: a value changed after it was
saved needs a reason (the audit trigger refuses such an UPDATE without one, too). Required items
do not block a save: until every shown required item is filled the form stays in progress."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Max, Q
from django.utils.translation import get_language, gettext_lazy
from django.utils.translation import gettext as _

from crf.models import FormRecord, FormStatus, ItemValue
from crf.values import ItemValueError, matches, normalise, typed
from crf.values import label as values_label
from enrollment.models import Participant
from trialsite import access
from trialsite.access import Capability
from trialsite.audit import audit_context
from trialsite.exceptions import TrialRuleError
from trialsite.protocol_schema import FormSpec, ItemSpec, Protocol


class FormInvalid(TrialRuleError):
    """Every error of one save, by item code ("reason" for a missing reason for change)."""

    default_message = gettext_lazy("The form has errors; see each item.")

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        # The form refused when several were saved at once (forms_save), for a caller that
        # answers at its own fields (a dosing visit); not part of the answer's errors.
        self.form_code: str | None = None
        super().__init__()

    def as_dict(self) -> dict[str, list[str]]:
        return {code: [str(message) for message in messages] for code, messages in self.errors.items()}


class UnknownForm(TrialRuleError):
    status_code = 404
    default_message = gettext_lazy("The protocol has no such form at this visit.")


@dataclass
class SaveResult:
    record: FormRecord
    # The protocol's warnings the saved values raise: item, text, text_zh.
    warnings: list[dict] = field(default_factory=list)
    # Shown required items still empty: the form stays in progress until they are filled.
    missing: list[str] = field(default_factory=list)
    # The form's stored values after the save, by item code, of the items the saving user sees.
    values: dict = field(default_factory=dict)


def sees_unblinded(user, site_id: int, protocol: Protocol) -> bool:
    """May the user see, enter and audit the form's unblinded-only items at this site?"""
    return not protocol.blinded or access.can(user, Capability.VIEW_ALLOCATION, site_id)


def items_for(form: FormSpec, unblinded: bool) -> list[ItemSpec]:
    return [item for item in form.items if unblinded or not item.unblinded_only]


def form_spec(protocol: Protocol, form_code: str, visit_code: str | None) -> FormSpec:
    """The form, refused unless a visit form is carried at this visit or a log has no visit."""
    form = protocol.form(form_code)
    if form is None:
        raise UnknownForm()
    if form.kind == "visit" and (visit_code is None or not form.carried_at(visit_code)):
        raise UnknownForm()
    if form.kind == "log" and visit_code is not None:
        raise UnknownForm()
    return form


def shown(form: FormSpec, item: ItemSpec, values: dict, _depth: int = 0) -> bool:
    """Is `item` asked, given the values (a condition on a hidden item is false)?"""
    if item.show_if is None:
        return True
    condition = form.item(item.show_if.item)
    if condition is None or _depth > len(form.items):
        return False
    return shown(form, condition, values, _depth + 1) and matches(
        condition, values.get(condition.code), item.show_if.equals
    )


def status_of(form: FormSpec, values: dict) -> str:
    """Counted on the items every reader sees, so the status tells a blinded reader nothing."""
    everyone = [item for item in form.items if not item.unblinded_only]
    if all(values.get(item.code) is None for item in everyone):
        return FormStatus.NOT_STARTED
    if missing_items(form, values):
        return FormStatus.IN_PROGRESS
    return FormStatus.COMPLETE


def missing_items(form: FormSpec, values: dict) -> list[str]:
    return [
        item.code
        for item in form.items
        if item.required and not item.unblinded_only and values.get(item.code) is None and shown(form, item, values)
    ]


def warnings_of(form: FormSpec, values: dict) -> list[dict]:
    return [
        {"item": warning.item, "text": warning.text, "text_zh": warning.text_zh or warning.text}
        for warning in form.warnings
        if shown(form, form.item(warning.item), values)
        and any(matches(form.item(warning.item), values.get(warning.item), wanted) for wanted in warning.any_of)
    ]


def in_language(entry: dict, key: str = "text") -> str:
    """A protocol text stored with its Chinese twin (`<key>_zh`) in the reader's language."""
    if (get_language() or "").startswith("zh") and entry.get(f"{key}_zh"):
        return entry[f"{key}_zh"]
    return entry[key]


def _check_message(check, default: str) -> str:
    if (get_language() or "").startswith("zh") and check.message_zh:
        return check.message_zh
    return check.message or default


def _cross_check_errors(form: FormSpec, values: dict, errors: dict) -> None:
    for check in form.checks:
        name, other_code = check.comparison
        item, other = form.item(check.item), form.item(other_code)
        first, second = typed(item, values.get(item.code)), typed(other, values.get(other.code))
        if first is None or second is None or item.code in errors or other.code in errors:
            continue
        if not (shown(form, item, values) and shown(form, other, values)):
            continue
        label = values_label(other)
        failed, default = {
            "not_before": (first < second, _("Cannot be before %(other)s.") % {"other": label}),
            "not_after": (first > second, _("Cannot be after %(other)s.") % {"other": label}),
            "below": (first >= second, _("Must be below %(other)s.") % {"other": label}),
            "above": (first <= second, _("Must be above %(other)s.") % {"other": label}),
        }[name]
        if failed:
            errors.setdefault(item.code, []).append(_check_message(check, default))


def stored_values(record: FormRecord | None) -> dict[str, ItemValue]:
    if record is None or record.pk is None:
        return {}
    return {row.item_code: row for row in record.values.all()}


def stored(row: ItemValue | None, item: ItemSpec):
    if row is None:
        return None
    return row.unblinded_value if item.unblinded_only else row.value


@dataclass(frozen=True)
class FormEntry:
    """One form of a `forms_save`: the participant's form `form_code` at `visit_code` (a visit
    form, made on first save) or a new entry of a log, and the values to save into it (item code
    -> raw value; an absent item is left as it is, an empty one is cleared)."""

    form_code: str
    values: dict
    visit_code: str | None = None


@dataclass
class _PlannedSave:
    """One form's save, checked and ready to write."""

    form: FormSpec
    visit_code: str | None
    record: FormRecord | None
    rows: dict[str, ItemValue]
    submitted: dict
    new: list[str]
    changed: list[str]
    first_hidden: list[str]
    hidden: set[str]
    after: dict
    status: str
    warnings: list[dict]
    # The column each item's value is stored in.
    column: dict[str, str]
    # Set when written: the record was made by this save, with this entry number.
    created: bool = False
    sequence: int = 1


def form_save(
    *,
    user,
    values: dict,
    reason: str | None = None,
    record: FormRecord | None = None,
    participant: Participant | None = None,
    form_code: str | None = None,
    visit_code: str | None = None,
    participant_locked: bool = False,
) -> SaveResult:
    """Save `values` (item code -> raw value; an absent item is left as it is, an empty one is
    cleared) into `record`, or into the participant's form at `visit_code` (a visit form, made
    on first save), or into a new entry of a log. Refused with FormInvalid listing every error.
    `participant_locked` as for `forms_save`."""
    if record is not None:
        participant, form_code, visit_code = record.participant, record.form_code, record.visit_code
    (result,) = forms_save(
        user=user,
        participant=participant,
        entries=[FormEntry(form_code=form_code, values=values, visit_code=visit_code)],
        reason=reason,
        record=record,
        participant_locked=participant_locked,
    )
    return result


def forms_save(
    *,
    user,
    participant: Participant,
    entries: list[FormEntry],
    reason: str | None = None,
    record: FormRecord | None = None,
    participant_locked: bool = False,
) -> list[SaveResult]:
    """Save several forms of one participant at once, all or none, in as many statements as one
    (a dosing visit saves its weight and its labs): every form is checked as `form_save` checks
    it, the first form refused raises its FormInvalid before anything is written, and the
    records, then the values, are each written in one statement under their audit reasons.
    `record`: the existing record of the one entry (a log entry edited).

    `participant_locked`: the caller's transaction holds the participant's row lock and is where
    a refused save rolls back to (a dosing visit): no lock and no savepoint of this save's own.
    A FormInvalid then leaves that transaction to be rolled back: the caller re-raises, it cannot
    carry on."""
    if record is not None and (
        len(entries) != 1
        or (entries[0].form_code, entries[0].visit_code) != (record.form_code, record.visit_code)
        or record.participant_id != participant.pk
    ):
        raise ValueError("a record is saved alone, as its own form of its own participant")
    visit_forms = [(entry.form_code, entry.visit_code) for entry in entries if entry.visit_code is not None]
    if len(set(visit_forms)) != len(visit_forms):
        raise ValueError("each visit form once per save: merge its values")
    protocol = participant.site.trial.protocol
    forms = [form_spec(protocol, entry.form_code, entry.visit_code) for entry in entries]
    unblinded = sees_unblinded(user, participant.site_id, protocol)
    if participant_locked and not transaction.get_connection().in_atomic_block:
        raise transaction.TransactionManagementError("participant_locked=True needs the caller's transaction")
    with transaction.atomic(savepoint=not participant_locked):
        if not participant_locked:
            # One writer per participant's forms at a time: a log's next entry number, and the
            # values a save checks against, cannot change under it.
            Participant.objects.select_for_update().filter(pk=participant.pk).first()
        records = _records_of(participant, entries, forms, record)
        plans = []
        for index, (entry, form) in enumerate(zip(entries, forms, strict=True)):
            try:
                plans.append(_planned(protocol, form, entry, records.get(index), unblinded, reason))
            except FormInvalid as error:
                error.form_code = form.code
                raise
        _write(user, participant, plans, reason)
    for plan in plans:
        # The values read with an existing record are stale now (rows were added); whoever shows
        # the record next reads them again.
        getattr(plan.record, "_prefetched_objects_cache", {}).pop("values", None)
    return [
        SaveResult(
            record=plan.record,
            warnings=plan.warnings,
            missing=missing_items(plan.form, plan.after),
            values={code: value for code, value in plan.after.items() if unblinded or code not in plan.hidden},
        )
        for plan in plans
    ]


def _records_of(participant, entries: list[FormEntry], forms: list[FormSpec], record) -> dict[int, FormRecord]:
    """The existing record of each entry (by its index) with its values, read in one statement
    and one more for the values when any exists: `record` re-read under the lock, or the visit
    form's record at its visit. A log entry without `record` is a new one."""
    if record is not None:
        return {0: FormRecord.objects.prefetch_related("values").get(pk=record.pk)}
    wanted = {
        (form.code, entry.visit_code): index
        for index, (entry, form) in enumerate(zip(entries, forms, strict=True))
        if form.kind == "visit"
    }
    if not wanted:
        return {}
    pairs = Q()
    for form_code, visit_code in wanted:
        pairs |= Q(form_code=form_code, visit_code=visit_code)
    found = {}
    for existing in FormRecord.objects.filter(pairs, participant=participant).prefetch_related("values").order_by("pk"):
        # The first by id, as `.first()` took it.
        found.setdefault(wanted[(existing.form_code, existing.visit_code)], existing)
    return found


def _planned(protocol, form: FormSpec, entry: FormEntry, record, unblinded: bool, reason) -> _PlannedSave:
    """The save of one form checked (FormInvalid naming every error), not yet written."""
    values = entry.values
    rows = {row.item_code: row for row in record.values.all()} if record is not None else {}
    before = {item.code: stored(rows.get(item.code), item) for item in form.items}
    errors: dict[str, list] = {}
    submitted = {}
    for code, raw in values.items():
        item = form.item(code)
        if item is None or (item.unblinded_only and not unblinded):
            # An unblinded-only item does not exist for a blinded user.
            errors[code] = [_("Not an item of this form.")]
            continue
        code_list = protocol.code_list(item.code_list) if item.code_list else None
        try:
            submitted[code] = normalise(item, raw, code_list)
        except ItemValueError as error:
            errors[code] = [str(error)]
    after = {**before, **submitted}
    for item in form.items:
        if after.get(item.code) is not None and item.code not in errors and not shown(form, item, after):
            condition = form.item(item.show_if.item)
            errors.setdefault(item.code, []).append(
                _("Leave this empty: it is asked only when %(item)s is %(value)s.")
                % {"item": values_label(condition), "value": value_words(protocol, condition, item.show_if.equals)}
            )
    _cross_check_errors(form, after, errors)
    hidden = {item.code for item in form.items if item.unblinded_only}
    # An unblinded-only item's row is made empty with its record (below), so its first value
    # is an UPDATE of a column blinded readers never see, not an INSERT they would.
    first_hidden = [
        code
        for code in submitted
        if code in hidden and code in rows and before[code] is None and submitted[code] is not None
    ]
    changed = [
        code for code in submitted if code in rows and submitted[code] != before[code] and code not in first_hidden
    ]
    if changed and not (reason or "").strip():
        errors["reason"] = [_("A reason is required to change a saved value.")]
    new = [code for code in submitted if code not in rows and submitted[code] is not None]
    if record is None and new and all(code in hidden for code in new) and not errors:
        # A record made by unblinded-only values alone would show blinded readers that
        # something only unblinded staff know was entered for this participant.
        errors["non_field_errors"] = [_("Save the form's other items first.")]
    if record is None and not new and not errors:
        errors["non_field_errors"] = [_("Nothing to save: fill at least one item.")]
    if errors:
        raise FormInvalid(errors)
    return _PlannedSave(
        form=form,
        visit_code=entry.visit_code,
        record=record,
        rows=rows,
        submitted=submitted,
        new=new,
        changed=changed,
        first_hidden=first_hidden,
        hidden=hidden,
        after=after,
        status=status_of(form, after),
        warnings=warnings_of(form, after),
        column={item.code: "unblinded_value" if item.unblinded_only else "value" for item in form.items},
    )


def _write(user, participant, plans: list[_PlannedSave], reason) -> None:
    """Write checked saves: the new records (each with an empty row per unblinded-only item),
    then every value, then the status of the records that existed."""
    made = [plan for plan in plans if plan.record is None]
    if made:
        # The record's own events carry a fixed reason: a reason typed for an unblinded-only
        # item must not reach blinded readers through the record. The items carry the reason.
        # No savepoints of their own: this save's atomic block is where a failure rolls back to.
        with audit_context(actor=user, reason="form saved", savepoint=False):
            next_entry: dict[str, int] = {}
            for plan in made:
                plan.created = True
                if plan.form.kind == "log":
                    if plan.form.code not in next_entry:
                        last = FormRecord.objects.filter(participant=participant, form_code=plan.form.code).aggregate(
                            last=Max("sequence")
                        )["last"]
                        next_entry[plan.form.code] = (last or 0) + 1
                    plan.sequence = next_entry[plan.form.code]
                    next_entry[plan.form.code] += 1
            records = FormRecord.objects.bulk_create(
                FormRecord(
                    participant=participant,
                    site_id=participant.site_id,
                    form_code=plan.form.code,
                    visit_code=plan.visit_code,
                    sequence=plan.sequence,
                    protocol_version_id=participant.site.trial.current_version_id,
                    status=plan.status,
                    warnings=plan.warnings,
                    created_by=user,
                )
                for plan in made
            )
            for plan, record in zip(made, records, strict=True):
                plan.record = record
            # Every unblinded-only row is made empty, whatever was entered: its values then
            # arrive as UPDATEs of the hidden column, the same events whether filled or not.
            empty = ItemValue.objects.bulk_create(
                ItemValue(record=plan.record, participant=participant, site_id=participant.site_id, item_code=code)
                for plan in made
                for code in sorted(plan.hidden)
            )
            plan_of = {id(plan.record): plan for plan in made}
            for row in empty:
                plan_of[id(row.record)].rows[row.item_code] = row
            for plan in made:
                plan.first_hidden += [code for code in plan.new if code in plan.hidden]
                plan.new = [code for code in plan.new if code not in plan.hidden]
    if any(plan.new or plan.changed or plan.first_hidden for plan in plans):
        # A first value needs no reason from the user; the trail says it was a first entry (the
        # database asks a reason for any change of a clinical column, an empty one's included).
        with audit_context(actor=user, reason=(reason or "").strip() or "first entry", savepoint=False):
            ItemValue.objects.bulk_create(
                ItemValue(
                    record=plan.record,
                    participant=participant,
                    site_id=participant.site_id,
                    item_code=code,
                    **{plan.column[code]: plan.submitted[code]},
                )
                for plan in plans
                for code in plan.new
            )
            # One UPDATE per item, so the trail shows each item's old and new value and the reason.
            for plan in plans:
                for code in [*plan.changed, *plan.first_hidden]:
                    row = plan.rows[code]
                    setattr(row, plan.column[code], plan.submitted[code])
                    row.save(update_fields=[plan.column[code]])
    # Status and warnings rest on items every reader sees: a save of unblinded-only items
    # leaves the record untouched (its updated_at would otherwise time the hidden change).
    # A record this save made was written with them already.
    touched = [
        plan
        for plan in plans
        if not plan.created
        and (
            any(code not in plan.hidden for code in [*plan.changed, *plan.new])
            or (plan.record.status, plan.record.warnings) != (plan.status, plan.warnings)
        )
    ]
    if touched:
        with audit_context(actor=user, reason="form saved", savepoint=False):
            for plan in touched:
                plan.record.status = plan.status
                plan.record.warnings = plan.warnings
                plan.record.save(update_fields=["status", "warnings", "updated_at"])


def value_words(protocol: Protocol, item: ItemSpec, value) -> str:
    """A value written in the protocol file (a condition's), in the reader's words."""
    if item.type == "yes_no":
        return _("yes") if value else _("no")
    code_list = protocol.code_list(item.code_list) if item.code_list else None
    entry = code_list.entry(value) if code_list else None
    return in_language({"label": entry.label, "label_zh": entry.label_zh}, "label") if entry else str(value)
