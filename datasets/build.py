"""The analysis package of one report scope, built from the database (issue 19).

One dataset per form or log, every row keyed by the participant's permanent `subject_key`
(and `visit_code` for a visit's rows), rows in subject key and visit order. Names come from the
protocol's codes and the models' fields, never from a label, so they are the same in every
language; labels are written in English and, where the protocol or the translations have it,
Chinese. Nothing here names a trial: forms, items, code lists, criteria, factors and kit types
are read from the protocol.

Blinding: a blinded package never reads an arm, a slot, a kit's content or an unblinded-only
item value, and orders no row by anything assigned with the allocation. The randomization and
unblinding datasets exist only in an unblinded package; the kits dataset is left out of a
blinded one when the arms do not all receive the same kit types (who gets a kit would tell).

Each dataset's rows are one query, streamed in chunks each time they are read, so memory stays
flat and the number of queries does not grow with the participants."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Aggregate, Case, F, OuterRef, Subquery, When
from django.db.models.fields.json import JSONField
from django.utils import timezone, translation
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from datasets.spec import NAME, CodeList, Dataset, Manifest, Package, Variable, VariableType

CHUNK = 2000

SUBJECT = "participant__screening__subject_key"


class Rows:
    """A dataset's rows: each pass runs the query again and streams it, so the package can be
    read more than once without holding a dataset in memory."""

    def __init__(self, make: Callable[[], Iterator[tuple]]):
        self._make = make

    def __iter__(self) -> Iterator[tuple]:
        return iter(self._make())


def in_both_languages(text) -> tuple[str, str | None]:
    """(English, Chinese or None when there is no Chinese) of a lazy or plain text."""
    with translation.override("en"):
        english = capfirst(str(text))
    with translation.override("zh-hans"):
        chinese = capfirst(str(text))
    return english, (chinese if chinese != english else None)


def variable(name: str, label, type: VariableType, *, code_list=None, unit=None, label_zh=None):
    english, chinese = in_both_languages(label)
    return Variable(name=name, label=english, label_zh=label_zh or chinese, type=type, code_list=code_list, unit=unit)


def field_variable(model, field: str, name: str | None = None, *, type: VariableType, code_list=None, unit=None):
    """A variable labelled by the model field's own (translated) name."""
    return variable(name or field, model._meta.get_field(field).verbose_name, type, code_list=code_list, unit=unit)


def choices_list(name: str, choices) -> CodeList:
    entries = []
    for value, label in choices:
        english, chinese = in_both_languages(label)
        entries.append((str(value), english, chinese))
    return CodeList(name, tuple(entries))


def text(value) -> str | None:
    """Empty text is missing (None), never ""."""
    return value if value not in ("", None) else None


def machine_name(code: str, taken: set[str], prefix: str = "") -> str:
    """A code as a machine name: lower case, and a prefix or a number when it would clash with a
    name already used in the dataset (stable: the same protocol gives the same names)."""
    base = (prefix + code.lower())[:32]
    name = base
    number = 2
    while name in taken or not NAME.match(name):
        suffix = f"_{number}"
        name = base[: 32 - len(suffix)] + suffix
        number += 1
    taken.add(name)
    return name


class JsonbObjectAgg(Aggregate):
    function = "jsonb_object_agg"
    output_field = JSONField()


SUBJECT_KEY = variable("subject_key", _("subject key"), "text")
VISIT_CODE = variable("visit_code", _("visit"), "text")
PROTOCOL_VERSION = variable("protocol_version", _("protocol version"), "text")


# --- The form items, from every loaded version of the protocol ---------------------------------


@dataclass(frozen=True)
class Item:
    code: str
    label: str
    label_zh: str | None
    type: str
    code_list: str | None
    unit: str | None
    unblinded_only: bool


@dataclass
class Form:
    code: str
    name: str
    name_zh: str | None
    kind: str
    items: list[Item]


def _item(item) -> Item:
    return Item(
        code=item.code,
        label=item.label or item.code,
        label_zh=item.label_zh,
        type=item.type,
        code_list=item.code_list,
        unit=item.unit,
        unblinded_only=item.unblinded_only,
    )


def older_protocols(trial) -> list:
    """The trial's earlier protocol versions as typed protocols, newest first (one query)."""
    from trialsite.models import ProtocolVersion
    from trialsite.protocol_schema import protocol_for

    return [
        protocol_for(definition)
        for definition in ProtocolVersion.objects.filter(trial=trial)
        .exclude(pk=trial.current_version_id)
        .order_by("-loaded_at", "-id")
        .values_list("definition", flat=True)
        if definition
    ]


def protocol_criteria(trial, older: list) -> list[tuple[str, str, str, str | None]]:
    """(code, kind, text, text_zh) of every criterion the current protocol or an earlier version
    asked: answers given under an amended-away criterion are still data."""
    criteria = [(c.code, c.kind, c.text, c.text_zh) for c in trial.protocol.eligibility.criteria]
    known = {criterion[0] for criterion in criteria}
    for protocol in older:
        for criterion in protocol.eligibility.criteria:
            if criterion.code not in known:
                known.add(criterion.code)
                criteria.append((criterion.code, criterion.kind, criterion.text or criterion.code, criterion.text_zh))
    return criteria


def protocol_forms(trial, older: list) -> tuple[list[Form], dict[str, dict]]:
    """The forms of the current protocol, each with the items earlier versions had and this one
    dropped appended (their values were captured and stay in the data), and the code lists of
    every version (the current one's wording first)."""
    protocol = trial.protocol
    forms: dict[str, Form] = {}
    code_lists: dict[str, dict] = {}
    for code_list in protocol.code_lists:
        code_lists[code_list.code] = {
            "entries": [(entry.code, entry.label, entry.label_zh) for entry in code_list.entries]
        }
    for form in protocol.forms:
        forms[form.code] = Form(
            code=form.code,
            name=form.name,
            name_zh=form.name_zh,
            kind=form.kind,
            items=[_item(item) for item in form.items],
        )
    for earlier in older:
        for code_list in earlier.code_lists:
            known = code_lists.setdefault(code_list.code, {"entries": []})
            codes = {entry[0] for entry in known["entries"]}
            for entry in code_list.entries:
                if entry.code not in codes:
                    known["entries"].append((entry.code, entry.label or entry.code, entry.label_zh))
        for form in earlier.forms:
            known = forms.get(form.code)
            if known is None:
                known = forms[form.code] = Form(
                    code=form.code, name=form.name or form.code, name_zh=form.name_zh, kind=form.kind, items=[]
                )
            codes = {item.code for item in known.items}
            known.items += [_item(item) for item in form.items if item.code not in codes]
    return list(forms.values()), code_lists


def item_value(item: Item, value):
    """A stored JSON value as the package's type (decimal digits as Decimal, dates as dates)."""
    if value is None or value == "":
        return None
    if item.type == "integer":
        return int(value)
    if item.type == "decimal":
        return Decimal(str(value))
    if item.type == "date":
        return datetime.date.fromisoformat(str(value))
    if item.type == "yes_no":
        return bool(value)
    return str(value)


ITEM_TYPES: dict[str, VariableType] = {
    "integer": "integer",
    "decimal": "decimal",
    "date": "date",
    "yes_no": "boolean",
    "choice": "text",
    "text": "text",
}


# --- The builder -------------------------------------------------------------------------------


class Builder:
    def __init__(self, scope):
        self.scope = scope
        self.trial = scope.trial
        self.protocol = scope.trial.protocol
        self.site_ids = scope.site_ids
        self.unblinded = bool(scope.unblinded)
        self.code_lists: dict[str, CodeList] = {}
        self.older = older_protocols(scope.trial)

    # Code lists -----------------------------------------------------------------------------
    def add_list(self, code_list: CodeList) -> str:
        self.code_lists.setdefault(code_list.name, code_list)
        return code_list.name

    def choices(self, name: str, choices) -> str:
        return self.add_list(choices_list(name, choices))

    # Datasets -------------------------------------------------------------------------------
    def datasets(self) -> list[Dataset]:
        made = [
            self.subjects(),
            self.eligibility(),
            self.visits(),
            self.doses(),
            self.repeat_labs(),
        ]
        kits = self.kits()
        if kits is not None:
            made.append(kits)
        made += [
            self.deviations(),
            self.adverse_events(),
            self.deaths(),
            self.sae_reports(),
            self.susar_assessments(),
        ]
        made += self.forms(taken={dataset.name for dataset in made} | {"randomization", "unblinding"})
        if self.unblinded:
            made += [self.randomization(), self.unblinding()]
        return made

    def subjects(self) -> Dataset:
        from enrollment.models import Consent, Outcome, Participant, ParticipantStatus, Screening, Sex

        factors = list(self.protocol.randomization.factors)
        taken = {
            "subject_key",
            "site",
            "screening_date",
            "age",
            "sex",
            "screening_outcome",
            "screen_fail_reasons",
        }
        factor_names = [machine_name(factor.code, taken, "factor_") for factor in factors]
        for factor, name in zip(factors, factor_names, strict=True):
            self.add_list(CodeList(name, tuple((level, level, None) for level in factor.levels)))
        sites = self.add_list(
            CodeList(
                "site",
                tuple(
                    (site.code, site.name, getattr(self.protocol.site(site.code), "name_zh", None))
                    for site in self.scope.sites
                ),
            )
        )
        variables = [
            SUBJECT_KEY,
            variable("site", _("site"), "text", code_list=sites),
            field_variable(Screening, "screening_date", type="date"),
            variable("age", _("Age at screening"), "integer", unit="years"),
            field_variable(Screening, "sex", type="text", code_list=self.choices("sex", Sex.choices)),
            variable(
                "screening_outcome",
                _("Screening outcome"),
                "text",
                code_list=self.choices("screening_outcome", Outcome.choices),
            ),
            variable("screen_fail_reasons", _("screen failure reasons (criterion codes)"), "text"),
            *[
                variable(name, factor.label, "text", code_list=name, label_zh=factor.label_zh)
                for factor, name in zip(factors, factor_names, strict=True)
            ],
            field_variable(Consent, "version", "consent_version", type="text"),
            field_variable(Consent, "signed_on", "consent_date", type="date"),
            variable("elig_signed_by", _("Eligibility signed off by"), "text"),
            variable("elig_signed_at", _("eligibility signed off at"), "datetime"),
            variable("elig_sign_meaning", _("meaning of the eligibility signature"), "text"),
            field_variable(Participant, "screening_number", type="text"),
            field_variable(Participant, "randomization_number", type="text"),
            variable("randomized_at", _("randomized at"), "datetime"),
            variable(
                "status",
                _("participant status"),
                "text",
                code_list=self.choices("participant_status", ParticipantStatus.choices),
            ),
            variable("withdrawal_date", _("withdrawal date"), "date"),
            variable("withdrawal_reason", _("reason for withdrawal"), "text"),
            variable("death_date", _("date of death"), "date"),
            variable("death_cause", _("cause of death"), "text"),
            PROTOCOL_VERSION,
        ]
        latest_consent = Consent.objects.filter(screening=OuterRef("pk")).order_by("-signed_on", "-pk")
        query = (
            Screening.objects.filter(site_id__in=self.site_ids)
            .annotate(
                consent_version=Subquery(latest_consent.values("version")[:1]),
                consent_date=Subquery(latest_consent.values("signed_on")[:1]),
            )
            .order_by("subject_key")
            .values_list(
                "subject_key",
                "site__code",
                "screening_date",
                "date_of_birth",
                "sex",
                "outcome",
                "reasons",
                "stratification",
                "consent_version",
                "consent_date",
                "participant__eligibility_signature__signer__username",
                "participant__eligibility_signature__signed_at",
                "participant__eligibility_signature__meaning",
                "participant__screening_number",
                "participant__randomization_number",
                "participant__randomized_at",
                "participant__status",
                "participant__withdrawal__withdrawn_on",
                "participant__withdrawal__reason",
                "participant__death__died_on",
                "participant__death__cause",
                "protocol_version__version",
            )
        )

        def rows():
            from enrollment.eligibility import age_on

            for row in query.iterator(chunk_size=CHUNK):
                (key, site, screened, born, sex, outcome, reasons, stratification, *rest) = row
                reasons = [reason.get("code") for reason in reasons or [] if isinstance(reason, dict)]
                stratification = stratification or {}
                yield (
                    key,
                    site,
                    screened,
                    age_on(born, screened),
                    sex,
                    outcome,
                    ";".join(code for code in reasons if code) or None,
                    *[text(stratification.get(factor.code)) for factor in factors],
                    *[text(value) for value in rest],
                )

        return self.dataset("subjects", _("Subjects"), variables, rows)

    def eligibility(self) -> Dataset:
        from enrollment.models import Answer, EligibilityAnswer

        criteria = protocol_criteria(self.trial, self.older)
        kinds = {code: kind for code, kind, _text, _text_zh in criteria}
        criterion_list = self.add_list(
            CodeList("criterion", tuple((code, words, words_zh) for code, _kind, words, words_zh in criteria))
        )
        variables = [
            SUBJECT_KEY,
            variable("criterion", _("criterion"), "text", code_list=criterion_list),
            variable(
                "criterion_kind",
                _("inclusion or exclusion"),
                "text",
                code_list=self.add_list(
                    CodeList(
                        "criterion_kind",
                        (
                            ("inclusion", *in_both_languages(_("Inclusion"))),
                            ("exclusion", *in_both_languages(_("Exclusion"))),
                        ),
                    )
                ),
            ),
            variable("answer", _("answer"), "text", code_list=self.choices("yes_no", Answer.choices)),
        ]
        query = (
            EligibilityAnswer.objects.filter(site_id__in=self.site_ids)
            .order_by("screening__subject_key", "id")
            .values_list("screening__subject_key", "criterion_code", "answer")
        )

        def rows():
            for key, code, answer in query.iterator(chunk_size=CHUNK):
                yield (key, code, kinds.get(code), answer)

        return self.dataset("eligibility", _("Eligibility answers"), variables, rows, ("subject_key", "criterion"))

    def visits(self) -> Dataset:
        from schedules.models import Visit, VisitKind, VisitStatus

        variables = [
            SUBJECT_KEY,
            VISIT_CODE,
            variable("visit_sequence", _("order in the plan"), "integer"),
            variable("visit_kind", _("kind"), "text", code_list=self.choices("visit_kind", VisitKind.choices)),
            variable("cycle", _("cycle"), "integer"),
            field_variable(Visit, "target_date", type="date"),
            field_variable(Visit, "window_start", type="date"),
            field_variable(Visit, "window_end", type="date"),
            variable(
                "visit_status", _("Visit status"), "text", code_list=self.choices("visit_status", VisitStatus.choices)
            ),
            field_variable(Visit, "actual_date", "visit_date", type="date"),
            variable("out_of_window", _("protocol deviation"), "boolean"),
            field_variable(Visit, "out_of_window_reason", type="text"),
            field_variable(Visit, "weight_kg", type="decimal", unit="kg"),
            variable("recorded_at", _("recorded at"), "datetime"),
            PROTOCOL_VERSION,
        ]
        query = (
            Visit.objects.filter(site_id__in=self.site_ids)
            .order_by(SUBJECT, "sequence")
            .values_list(
                SUBJECT,
                "code",
                "sequence",
                "kind",
                "cycle",
                "target_date",
                "window_start",
                "window_end",
                "status",
                "actual_date",
                "is_deviation",
                "out_of_window_reason",
                "weight_kg",
                "recorded_at",
                "protocol_version__version",
            )
        )
        return self.dataset("visits", _("Visits"), variables, self.texts(query), ("subject_key", "visit_code"))

    def doses(self) -> Dataset:
        from dosing.models import Decision, DoseRecord

        decision = self.choices("dose_decision", Decision.choices)
        variables = [
            SUBJECT_KEY,
            VISIT_CODE,
            variable("first_dose", _("first dose"), "boolean"),
            field_variable(DoseRecord, "neutrophils", type="integer", unit="/mm3"),
            field_variable(DoseRecord, "platelets", type="integer", unit="/mm3"),
            field_variable(DoseRecord, "alt_uln", type="decimal", unit="x ULN"),
            field_variable(DoseRecord, "ast_uln", type="decimal", unit="x ULN"),
            variable("decision", _("Decision"), "text", code_list=decision),
            variable("decision_reasons", _("reasons for the decision"), "text"),
            variable("weight_kg", _("body weight (kg)"), "decimal", unit="kg"),
            variable("baseline_weight_kg", _("baseline weight (kg)"), "decimal", unit="kg"),
            variable("weight_change_flagged", _("weight change flagged"), "boolean"),
            variable("dose_mg", _("dose (mg)"), "decimal", unit="mg"),
            variable("concentrate_ml", _("concentrate (ml)"), "decimal", unit="ml"),
            variable("diluted_volume_ml", _("diluted volume (ml)"), "decimal", unit="ml"),
            variable("vial_plan", _("vials (mg x count)"), "text"),
            variable("recorded_at", _("recorded at"), "datetime"),
            PROTOCOL_VERSION,
        ]
        query = (
            DoseRecord.objects.filter(site_id__in=self.site_ids)
            .order_by(SUBJECT, "visit__sequence")
            .values_list(
                SUBJECT,
                "visit__code",
                "first_dose",
                "neutrophils",
                "platelets",
                "alt_uln",
                "ast_uln",
                "decision",
                "reasons",
                "weight_kg",
                "baseline_weight_kg",
                "weight_change_flagged",
                "dose_mg",
                "concentrate_ml",
                "diluted_volume_ml",
                "vial_plan",
                "recorded_at",
                "protocol_version__version",
            )
        )

        def rows():
            for row in query.iterator(chunk_size=CHUNK):
                row = list(row)
                row[8] = joined(row[8])
                row[15] = "; ".join(f"{size} x {count}" for size, count in row[15] or []) or None
                yield tuple(row)

        return self.dataset("doses", _("Doses"), variables, rows, ("subject_key", "visit_code"))

    def repeat_labs(self) -> Dataset:
        from dosing.models import RepeatLabs

        variables = [
            SUBJECT_KEY,
            VISIT_CODE,
            variable("repeat", _("repeat number at the visit"), "integer"),
            field_variable(RepeatLabs, "measured_on", type="date"),
            field_variable(RepeatLabs, "neutrophils", type="integer", unit="/mm3"),
            field_variable(RepeatLabs, "platelets", type="integer", unit="/mm3"),
            field_variable(RepeatLabs, "alt_uln", type="decimal", unit="x ULN"),
            field_variable(RepeatLabs, "ast_uln", type="decimal", unit="x ULN"),
            variable("decision", _("Decision"), "text", code_list="dose_decision"),
            variable("decision_reasons", _("reasons for the decision"), "text"),
            variable("recorded_at", _("recorded at"), "datetime"),
            PROTOCOL_VERSION,
        ]
        query = (
            RepeatLabs.objects.filter(site_id__in=self.site_ids)
            .order_by(SUBJECT, "visit__sequence", "recorded_at", "id")
            .values_list(
                SUBJECT,
                "visit__code",
                "measured_on",
                "neutrophils",
                "platelets",
                "alt_uln",
                "ast_uln",
                "decision",
                "reasons",
                "recorded_at",
                "protocol_version__version",
            )
        )

        def rows():
            for (key, visit, *rest), number in numbered(query.iterator(chunk_size=CHUNK), 2):
                rest[6] = joined(rest[6])
                yield (key, visit, number, *rest)

        return self.dataset("repeat_labs", _("Repeat labs"), variables, rows, ("subject_key", "visit_code", "repeat"))

    def kits(self) -> Dataset | None:
        from dosing.models import Kit, KitContent, KitStatus

        same_types = len({frozenset(arm.kit_contents) for arm in self.protocol.arms}) == 1
        if not self.unblinded and not same_types:
            # Which arm gets kits (or which types) would show in who has a kit row.
            return None
        kit_types = self.add_list(CodeList("kit_type", tuple((code, code, None) for code in self.protocol.kit_types)))
        variables = [
            SUBJECT_KEY,
            VISIT_CODE,
            field_variable(Kit, "kit_number", type="text"),
            field_variable(Kit, "kit_type", type="text", code_list=kit_types),
            field_variable(Kit, "packaging_lot", type="text"),
            field_variable(Kit, "label_expiry", type="date"),
            variable("kit_status", _("status"), "text", code_list=self.choices("kit_status", KitStatus.choices)),
            variable("assigned_at", _("assigned at"), "datetime"),
            variable("dispensed_at", _("dispensed at"), "datetime"),
            variable("returned_on", _("returned on"), "date"),
            variable("tablets_returned", _("tablets returned"), "integer"),
            variable("status_note", _("note"), "text"),
        ]
        fields = [
            SUBJECT,
            "visit__code",
            "kit_number",
            "kit_type",
            "packaging_lot",
            "label_expiry",
            "status",
            "assigned_at",
            "dispensed_at",
            "returned_on",
            "tablets_returned",
            "status_note",
        ]
        if self.unblinded:
            variables.append(
                variable("content", _("content"), "text", code_list=self.choices("kit_content", KitContent.choices))
            )
            fields.append("content")
        query = (
            Kit.objects.filter(site_id__in=self.site_ids, participant__isnull=False)
            .order_by(SUBJECT, "visit__sequence", "kit_type", "kit_number")
            .values_list(*fields)
        )
        return self.dataset(
            "kits", _("Kits"), variables, self.texts(query), ("subject_key", "visit_code", "kit_number")
        )

    def deviations(self) -> Dataset:
        from enrollment.models import DeviationKind, ProtocolDeviation

        variables = [
            SUBJECT_KEY,
            variable("deviation", _("deviation number"), "integer"),
            variable("kind", _("kind"), "text", code_list=self.choices("deviation_kind", DeviationKind.choices)),
            field_variable(ProtocolDeviation, "description", type="text"),
            field_variable(ProtocolDeviation, "detected_at", type="datetime"),
            PROTOCOL_VERSION,
        ]
        query = (
            ProtocolDeviation.objects.filter(site_id__in=self.site_ids)
            .order_by(SUBJECT, "detected_at", "id")
            .values_list(SUBJECT, "kind", "description", "detected_at", "protocol_version__version")
        )

        def rows():
            for (key, *rest), number in numbered(query.iterator(chunk_size=CHUNK), 1):
                yield (key, number, *[text(value) for value in rest])

        return self.dataset("deviations", _("Protocol deviations"), variables, rows, ("subject_key", "deviation"))

    def adverse_events(self) -> Dataset:
        from safety.ctcae import TERMS
        from safety.models import Action, AdverseEvent, Outcome, Relation, Seriousness

        terms = self.add_list(CodeList("ctcae_term", tuple((c, t.term, t.term_zh or None) for c, t in TERMS.items())))
        relation = self.choices("ae_relation", Relation.choices)
        action = self.choices("ae_action", Action.choices)
        criteria = list(Seriousness)
        variables = [
            SUBJECT_KEY,
            field_variable(AdverseEvent, "sequence", "ae_number", type="integer"),
            variable("episode", _("grade episode (1 = first record)"), "integer"),
            variable("grade_change", _("grade change of the event"), "boolean"),
            field_variable(AdverseEvent, "term", type="text", code_list=terms),
            variable("meddra_code", _("MedDRA code"), "integer"),
            field_variable(AdverseEvent, "term_text", type="text"),
            field_variable(AdverseEvent, "grade", type="integer"),
            field_variable(AdverseEvent, "onset_date", type="date"),
            field_variable(AdverseEvent, "resolution_date", type="date"),
            field_variable(AdverseEvent, "serious", type="boolean"),
            *[variable(f"ser_{criterion.value}", criterion.label, "boolean") for criterion in criteria],
            field_variable(AdverseEvent, "awareness_at", type="datetime"),
            field_variable(AdverseEvent, "relation_infusion", type="text", code_list=relation),
            field_variable(AdverseEvent, "relation_tablets", type="text", code_list=relation),
            field_variable(AdverseEvent, "action_infusion", type="text", code_list=action),
            field_variable(AdverseEvent, "action_tablets", type="text", code_list=action),
            field_variable(AdverseEvent, "outcome", type="text", code_list=self.choices("ae_outcome", Outcome.choices)),
            field_variable(AdverseEvent, "special_interest", type="boolean"),
            field_variable(AdverseEvent, "recorded_at", type="datetime"),
            PROTOCOL_VERSION,
        ]
        query = (
            AdverseEvent.objects.filter(site_id__in=self.site_ids)
            .order_by(SUBJECT, "sequence", "id")
            .values_list(
                SUBJECT,
                "sequence",
                "follows_id",
                "term",
                "term_text",
                "grade",
                "onset_date",
                "resolution_date",
                "serious",
                "seriousness",
                "awareness_at",
                "relation_infusion",
                "relation_tablets",
                "action_infusion",
                "action_tablets",
                "outcome",
                "special_interest",
                "recorded_at",
                "protocol_version__version",
            )
        )

        def rows():
            for row, episode in numbered(query.iterator(chunk_size=CHUNK), 2):
                (key, number, follows, term, term_text, grade, onset, resolved, serious, seriousness, *rest) = row
                known = TERMS.get(term)
                yield (
                    key,
                    number,
                    episode,
                    follows is not None,
                    term,
                    known.meddra_code if known else None,
                    text(term_text),
                    grade,
                    onset,
                    resolved,
                    serious,
                    *[criterion.value in (seriousness or []) for criterion in criteria],
                    *[text(value) for value in rest],
                )

        return self.dataset(
            "adverse_events", _("adverse events"), variables, rows, ("subject_key", "ae_number", "episode")
        )

    def deaths(self) -> Dataset:
        from safety.models import Death

        variables = [
            SUBJECT_KEY,
            field_variable(Death, "died_on", "death_date", type="date"),
            field_variable(Death, "cause", type="text"),
            variable("ae_number", _("event number"), "integer"),
            field_variable(Death, "recorded_at", type="datetime"),
            PROTOCOL_VERSION,
        ]
        query = (
            Death.objects.filter(site_id__in=self.site_ids)
            .order_by(SUBJECT)
            .values_list(
                SUBJECT, "died_on", "cause", "adverse_event__sequence", "recorded_at", "protocol_version__version"
            )
        )
        return self.dataset("deaths", _("deaths"), variables, self.texts(query))

    def sae_reports(self) -> Dataset:
        from safety.models import SaeReport

        variables = [
            SUBJECT_KEY,
            variable("ae_number", _("event number"), "integer"),
            field_variable(SaeReport, "version", type="integer"),
            field_variable(SaeReport, "narrative", type="text"),
            field_variable(SaeReport, "complete", type="boolean"),
            variable("signed_by", _("signed by"), "text"),
            variable("signed_at", _("signed at"), "datetime"),
            variable("sign_meaning", _("meaning of the signature"), "text"),
            field_variable(SaeReport, "written_at", type="datetime"),
            PROTOCOL_VERSION,
        ]
        query = (
            SaeReport.objects.filter(site_id__in=self.site_ids)
            .order_by(SUBJECT, "adverse_event__sequence", "version")
            .values_list(
                SUBJECT,
                "adverse_event__sequence",
                "version",
                "narrative",
                "complete",
                "signature__signer__username",
                "signature__signed_at",
                "signature__meaning",
                "written_at",
                "protocol_version__version",
            )
        )
        return self.dataset(
            "sae_reports", _("SAE reports"), variables, self.texts(query), ("subject_key", "ae_number", "version")
        )

    def susar_assessments(self) -> Dataset:
        from safety.models import SusarAssessment

        variables = [
            SUBJECT_KEY,
            variable("ae_number", _("event number"), "integer"),
            field_variable(SusarAssessment, "related", type="boolean"),
            field_variable(
                SusarAssessment,
                "expectedness",
                type="text",
                code_list=self.choices("expectedness", SusarAssessment.Expectedness.choices),
            ),
            field_variable(SusarAssessment, "reference", type="text"),
            field_variable(SusarAssessment, "assessed_at", type="datetime"),
            field_variable(SusarAssessment, "deadline", type="datetime"),
        ]
        columns = [
            SUBJECT,
            "adverse_event__sequence",
            "related",
            "expectedness",
            "reference",
            "assessed_at",
            "deadline",
        ]
        if self.unblinded:
            # The sponsor sends the expedited report after breaking the blind, and only for a
            # participant on active product: whether and when it went names the arm.
            variables += [
                field_variable(SusarAssessment, "reported_at", type="datetime"),
                field_variable(SusarAssessment, "report_reference", type="text"),
            ]
            columns += ["reported_at", "report_reference"]
        query = (
            SusarAssessment.objects.filter(site_id__in=self.site_ids)
            .order_by(SUBJECT, "adverse_event__sequence")
            .values_list(*columns)
        )
        return self.dataset(
            "susar_assessments", _("SUSAR assessments"), variables, self.texts(query), ("subject_key", "ae_number")
        )

    def forms(self, *, taken: set[str]) -> list[Dataset]:
        from crf.models import FormRecord, FormStatus, ItemValue
        from schedules.models import Visit

        forms, lists = protocol_forms(self.trial, self.older)
        list_names: dict[str, str] = {}
        reserved = set(self.code_lists)
        for code, spec in lists.items():
            name = machine_name(code, reserved, "crf_" if code.lower() in reserved else "")
            list_names[code] = self.add_list(CodeList(name, tuple(spec["entries"])))
        status = self.choices("form_status", FormStatus.choices)
        made = []
        for form in forms:
            items = [item for item in form.items if self.unblinded or not item.unblinded_only]
            names = {"subject_key", "visit_code", "entry", "form_status", "protocol_version"}
            item_names = [
                machine_name(item.code, names, "item_" if item.code.lower() in names else "") for item in items
            ]
            keys = ["visit_code"] if form.kind == "visit" else ["entry"]
            variables = [
                SUBJECT_KEY,
                VISIT_CODE if form.kind == "visit" else variable("entry", _("entry"), "integer"),
                variable("form_status", _("status"), "text", code_list=status),
                PROTOCOL_VERSION,
                *[
                    variable(
                        name,
                        item.label,
                        ITEM_TYPES.get(item.type, "text"),
                        code_list=list_names.get(item.code_list) if item.type == "choice" else None,
                        unit=item.unit,
                        label_zh=item.label_zh,
                    )
                    for item, name in zip(items, item_names, strict=True)
                ],
            ]
            hidden = [item.code for item in form.items if item.unblinded_only]
            picked = F("value")
            if self.unblinded and hidden:
                # An unblinded-only item keeps its value in its own column.
                picked = Case(When(item_code__in=hidden, then=F("unblinded_value")), default=F("value"))
            # A record's values as one JSON object in the record's own row: one query per form.
            values = Subquery(
                ItemValue.objects.filter(record=OuterRef("pk"))
                .order_by()
                .values("record")
                .annotate(values=JsonbObjectAgg("item_code", picked))
                .values("values")
            )
            query = FormRecord.objects.filter(site_id__in=self.site_ids, form_code=form.code).annotate(
                item_values=values
            )
            if form.kind == "visit":
                visit_order = Visit.objects.filter(participant=OuterRef("participant"), code=OuterRef("visit_code"))
                query = query.filter(visit_code__isnull=False).annotate(
                    visit_order=Subquery(visit_order.values("sequence")[:1])
                )
                query = query.order_by(SUBJECT, "visit_order", "visit_code", "id").values_list(
                    SUBJECT, "visit_code", "status", "protocol_version__version", "item_values"
                )
            else:
                query = (
                    query.filter(visit_code__isnull=True)
                    .order_by(SUBJECT, "sequence", "id")
                    .values_list(SUBJECT, "sequence", "status", "protocol_version__version", "item_values")
                )
            name = machine_name(form.code, taken, "crf_" if form.code.lower() in taken else "")
            made.append(
                self.dataset(
                    name,
                    form.name,
                    variables,
                    form_rows(query, items),
                    ("subject_key", *keys),
                    label_zh=form.name_zh,
                )
            )
        return made

    def randomization(self) -> Dataset:
        from randomization.models import Slot

        arms = self.add_list(CodeList("arm", tuple((arm.code, arm.name, arm.name_zh) for arm in self.protocol.arms)))
        variables = [
            SUBJECT_KEY,
            variable("arm", _("Arm"), "text", code_list=arms),
            variable("stratum", _("Stratum"), "text"),
            variable("block", _("block"), "integer"),
            variable("block_size", _("block size"), "integer"),
            variable("slot_sequence", _("slot number in the stratum"), "integer"),
            variable("list_version", _("randomization list version"), "integer"),
            variable("allocated_at", _("allocated at"), "datetime"),
            PROTOCOL_VERSION,
        ]
        query = (
            Slot.objects.filter(site_id__in=self.site_ids, participant__isnull=False)
            .order_by(SUBJECT)
            .values_list(
                SUBJECT,
                "arm__code",
                "stratum",
                "block",
                "block_size",
                "sequence",
                "randomization_list__version",
                "allocated_at",
                "protocol_version__version",
            )
        )
        return self.dataset("randomization", _("Randomization"), variables, self.texts(query))

    def unblinding(self) -> Dataset:
        from randomization.models import Unblinding

        variables = [
            SUBJECT_KEY,
            variable("unblinding", _("unblinding number"), "integer"),
            variable("unblinded_by", _("unblinded by"), "text"),
            variable("unblinded_at", _("unblinded at"), "datetime"),
            variable(
                "method", _("method"), "text", code_list=self.choices("unblinding_method", Unblinding.Method.choices)
            ),
            variable("sheet_number", _("sealed sheet number"), "integer"),
            variable("opened_at", _("sheet opened at"), "datetime"),
            variable("reason", _("reason"), "text"),
            variable("sponsor_notified_at", _("sponsor notified at"), "datetime"),
        ]
        query = (
            Unblinding.objects.filter(site_id__in=self.site_ids)
            .order_by(SUBJECT, "unblinded_at", "id")
            .values_list(
                SUBJECT,
                "unblinded_by__username",
                "unblinded_at",
                "method",
                "sheet_number",
                "opened_at",
                "reason",
                "sponsor_notified_at",
            )
        )

        def rows():
            for (key, *rest), number in numbered(query.iterator(chunk_size=CHUNK), 1):
                yield (key, number, *[text(value) for value in rest])

        return self.dataset("unblinding", _("Emergency unblinding log"), variables, rows, ("subject_key", "unblinding"))

    # Helpers ----------------------------------------------------------------------------------
    def dataset(self, name, label, variables, rows, keys=("subject_key",), *, label_zh=None) -> Dataset:
        english, chinese = in_both_languages(label)
        return Dataset(
            name=name,
            label=english,
            label_zh=label_zh or chinese,
            variables=variables,
            rows=rows if isinstance(rows, Rows) else Rows(rows),
            keys=tuple(keys),
        )

    @staticmethod
    def texts(query) -> Rows:
        def rows():
            for row in query.iterator(chunk_size=CHUNK):
                yield tuple(text(value) for value in row)

        return Rows(rows)


def joined(reasons) -> str | None:
    return "; ".join(str(reason) for reason in reasons or []) or None


def numbered(rows: Iterable[tuple], width: int) -> Iterator[tuple[tuple, int]]:
    """Each row with its number (from 1) among the rows sharing its first `width` values."""
    last, number = None, 0
    for row in rows:
        group = row[:width]
        number = number + 1 if group == last else 1
        last = group
        yield row, number


def form_rows(query, items: list[Item]) -> Callable[[], Iterator[tuple]]:
    def rows():
        for key, where, status, version, values in query.iterator(chunk_size=CHUNK):
            values = values or {}
            yield (key, where, status, version, *[item_value(item, values.get(item.code)) for item in items])

    return rows


def build_package(scope, *, export_id: int | None = None) -> Package:
    """Every captured value of the scope's sites as an analysis package (see the module's text)."""
    from reports.selectors import data_version

    builder = Builder(scope)
    datasets = builder.datasets()
    current = scope.trial.current_version
    manifest = Manifest(
        trial=scope.trial.nct_id,
        export_id=export_id,
        exported_by=scope.user.get_username(),
        exported_at=timezone.now(),
        data_version=data_version(scope),
        blinded=not scope.unblinded,
        site_codes=tuple(site.code for site in scope.sites),
        protocol_version=current.version if current else None,
    )
    return Package(manifest=manifest, datasets=datasets, code_lists=builder.code_lists)
