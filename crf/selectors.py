"""Reads of the case report forms: for code (`value`) and for pages (`participant_forms`,
`record_view`), the latter hiding unblinded-only items from blinded readers."""

from __future__ import annotations

from dataclasses import dataclass, field

from crf.models import FormRecord, FormStatus
from crf.services import in_language, items_for, missing_items, sees_unblinded, stored, stored_values, value_words
from crf.values import as_text, label, typed, unit
from enrollment.models import Participant
from trialsite.protocol_schema import FormSpec


def value(participant: Participant, form: str, visit_code: str | None, item: str):
    """An item's saved value as Python (int, Decimal, date, bool or text), None when empty or
    never saved: how code reads the forms (a log's items by its latest entry). Not for showing
    to a user: it reads unblinded-only items too."""
    spec = participant.site.trial.protocol.form(form)
    item_spec = spec.item(item) if spec else None
    if item_spec is None:
        raise LookupError(f"the protocol has no item {form}.{item}")
    records = FormRecord.objects.filter(participant=participant, form_code=form, visit_code=visit_code)
    record = records.order_by("-sequence").first()
    if record is None:
        return None
    row = record.values.filter(item_code=item).first()
    return typed(item_spec, stored(row, item_spec))


def _visit_codes(participant: Participant) -> list[str]:
    """The participant's visits (the schedules app's plan, with any unscheduled ones), in order."""
    from schedules.models import Visit

    return list(Visit.objects.filter(participant=participant).order_by("sequence").values_list("code", flat=True))


@dataclass
class FormEntry:
    form: FormSpec
    visit_code: str | None
    record: FormRecord | None
    status: str = FormStatus.NOT_STARTED

    @property
    def name(self) -> str:
        return in_language({"name": self.form.name, "name_zh": self.form.name_zh}, "name")


@dataclass
class ParticipantForms:
    # (visit code, its forms), in plan order.
    visits: list[tuple[str, list[FormEntry]]] = field(default_factory=list)
    # (log form, its entries), in the protocol's order.
    logs: list[tuple[FormEntry, list[FormEntry]]] = field(default_factory=list)


def participant_forms(participant: Participant) -> ParticipantForms:
    """Every form of the participant with its status, in two queries."""
    protocol = participant.site.trial.protocol
    records = list(FormRecord.objects.filter(participant=participant))
    by_visit = {(record.form_code, record.visit_code): record for record in records if record.visit_code}
    result = ParticipantForms()
    visit_forms = [form for form in protocol.forms if form.kind == "visit"]
    if visit_forms:
        for visit_code in _visit_codes(participant):
            entries = []
            for form in visit_forms:
                if form.carried_at(visit_code):
                    record = by_visit.get((form.code, visit_code))
                    entries.append(
                        FormEntry(form, visit_code, record, record.status if record else FormStatus.NOT_STARTED)
                    )
            if entries:
                result.visits.append((visit_code, entries))
    for form in protocol.forms:
        if form.kind == "log":
            entries = [
                FormEntry(form, None, record, record.status)
                for record in sorted(records, key=lambda record: record.sequence)
                if record.form_code == form.code and record.visit_code is None
            ]
            result.logs.append((FormEntry(form, None, None), entries))
    return result


@dataclass
class ItemView:
    code: str
    label: str
    type: str
    unit: str | None
    required: bool
    value: object
    text: str
    choices: list[tuple[str, str]]
    condition: tuple | None
    # The longest input the box takes (a number's digits: 20 is plenty).
    max_length: int = 20


def record_view(user, participant: Participant, form: FormSpec, record: FormRecord | None) -> dict:
    """The form's items the user may see, each with its saved value; its status and warnings."""
    protocol = participant.site.trial.protocol
    unblinded = sees_unblinded(user, participant.site_id, protocol)
    rows = stored_values(record)
    values = {item.code: stored(rows.get(item.code), item) for item in form.items}
    items = []
    for item in items_for(form, unblinded):
        code_list = protocol.code_list(item.code_list) if item.code_list else None
        choices = [
            (entry.code, in_language({"label": entry.label, "label_zh": entry.label_zh}, "label"))
            for entry in (code_list.entries if code_list else ())
        ]
        condition = None
        if item.show_if is not None:
            other = form.item(item.show_if.item)
            condition = (label(other), value_words(protocol, other, item.show_if.equals))
        items.append(
            ItemView(
                code=item.code,
                label=label(item),
                type=item.type,
                unit=unit(item),
                required=item.required,
                value=values[item.code],
                text=as_text(item, values[item.code]),
                choices=choices,
                condition=condition,
                max_length=item.max_length if item.type == "text" else 20,
            )
        )
    return {
        "items": items,
        "values": {item.code: values[item.code] for item in items_for(form, unblinded)},
        "status": record.status if record else FormStatus.NOT_STARTED,
        "warnings": [in_language(warning) for warning in (record.warnings if record else [])],
        "missing": missing_items(form, values) if record else [],
        # Items with a saved value: changing one asks for a reason.
        "saved": {code for code, saved in values.items() if saved is not None},
    }
