"""The protocol file as typed, frozen objects: the only place that knows the file's keys.

`parse_protocol` validates a whole parsed TOML document and returns a `Protocol`, or raises
`ProtocolError` listing every mistake by its path in the file, e.g.
``dosing.infusion.vial_sizes_mg[2]: must be a positive integer``. Everything else in the
system reads attributes of these objects (``trial.protocol.dosing.infusion.mg_per_kg``),
never string keys of the raw document, so a protocol that loads is a protocol the code can run.

Unknown keys are refused: a misspelt key would otherwise be silently ignored and its rule
never applied."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from django.core.exceptions import ValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError

CODE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,19}$")
CLOCK_PATTERN = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class ProtocolError(ValidationError):
    """Every mistake in a protocol file, each as "path: what is wrong"."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__(errors)

    def __str__(self) -> str:
        return "\n".join(self.errors)


def _positive_integer(value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PydanticCustomError("positive_integer", "must be a positive integer")
    return value


def _non_negative_integer(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PydanticCustomError("non_negative_integer", "must be an integer of 0 or more")
    return value


def _number(value):
    """A number from TOML (int or float) as an exact Decimal: 1.5 x ULN must compare as 1.5."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise PydanticCustomError("number", "must be a number")
    return Decimal(str(value))


def _non_negative_number(value):
    number = _number(value)
    if number < 0:
        raise PydanticCustomError("non_negative_number", "must be a number of 0 or more")
    return number


def _positive_number(value):
    number = _number(value)
    if number <= 0:
        raise PydanticCustomError("positive_number", "must be a number above 0")
    return number


def _code(value):
    if not isinstance(value, str) or not CODE_PATTERN.match(value):
        raise PydanticCustomError(
            "code",
            "must be a code: a letter, then up to 19 letters, digits or underscores (got {value!r})",
            {"value": value},
        )
    return value


def _text(value):
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("text", "must be non-empty text")
    return value.strip()


def _time_zone(value):
    if not isinstance(value, str) or value not in available_timezones():
        raise PydanticCustomError("time_zone", "unknown time zone {value}", {"value": value})
    return value


def _clock(value):
    if not isinstance(value, str) or not CLOCK_PATTERN.match(value):
        raise PydanticCustomError("clock", "must be a time of day as HH:MM")
    return datetime.time.fromisoformat(value)


def _email(value):
    if not isinstance(value, str) or not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", value):
        raise PydanticCustomError("email", "must be an e-mail address")
    return value


def _boolean(value):
    if not isinstance(value, bool):
        raise PydanticCustomError("boolean", "must be true or false")
    return value


def _date(value):
    # ISO text too: a loaded file is stored as JSON, where TOML's dates became text.
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    if isinstance(value, datetime.datetime) or not isinstance(value, datetime.date):
        raise PydanticCustomError("date", "must be a date such as 2024-06-01")
    return value


PositiveInt = Annotated[int, BeforeValidator(_positive_integer)]
NonNegativeInt = Annotated[int, BeforeValidator(_non_negative_integer)]
Number = Annotated[Decimal, BeforeValidator(_number)]
NonNegativeNumber = Annotated[Decimal, BeforeValidator(_non_negative_number)]
PositiveNumber = Annotated[Decimal, BeforeValidator(_positive_number)]
Code = Annotated[str, BeforeValidator(_code)]
Text = Annotated[str, BeforeValidator(_text)]
TimeZone = Annotated[str, BeforeValidator(_time_zone)]
Clock = Annotated[datetime.time, BeforeValidator(_clock)]
Email = Annotated[str, BeforeValidator(_email)]
Boolean = Annotated[bool, BeforeValidator(_boolean)]
Date = Annotated[datetime.date, BeforeValidator(_date)]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class TrialInfo(Section):
    nct_id: Annotated[str, BeforeValidator(_text)] = Field(pattern=r"^NCT\d{8}$")
    title: Text
    sponsor: Text
    sponsor_protocol_id: Text
    sponsor_contact_email: Email
    target_enrollment: PositiveInt
    design: Text = "Interventional, randomized"
    # "single": participants blinded, staff blinded unless their role views allocation;
    # "none": open label, every role may see the arm.
    masking: Literal["single", "none"] = "single"
    protocol_version: Text = "1.0"
    effective_date: Date | None = None


class SiteSpec(Section):
    code: Code
    name: Text
    name_zh: Text | None = None
    time_zone: TimeZone


class ArmSpec(Section):
    code: Code
    name: Text
    name_zh: Text | None = None
    ratio: PositiveInt = 1
    # Per kit type, what this arm's kit of that type holds.
    kit_contents: dict[Code, Literal["active", "placebo"]] = Field(default_factory=dict)


class CriterionSpec(Section):
    code: Code
    kind: Literal["inclusion", "exclusion"]
    text: Text
    text_zh: Text | None = None


class EligibilitySpec(Section):
    minimum_age_years: PositiveInt
    maximum_age_years: PositiveInt
    consent_required: Boolean = True
    criteria: tuple[CriterionSpec, ...]


class FactorSpec(Section):
    code: Code
    label: Text
    label_zh: Text | None = None
    levels: tuple[Code, ...] = Field(min_length=2)
    # Minimization only: how much an imbalance on this factor counts.
    weight: PositiveNumber = Decimal(1)


class RandomizationSpec(Section):
    method: Literal["stratified_permuted_blocks", "minimization"] = "stratified_permuted_blocks"
    # Permuted blocks: sizes, each a multiple of the ratio total, drawn at random per block.
    block_sizes: tuple[PositiveInt, ...] = ()
    # The site is a stratum (blocks) or a minimization factor.
    stratify_by_site: Boolean = True
    site_weight: PositiveNumber = Decimal(1)
    # Minimization: the chance of taking the arm that minimizes imbalance (Pocock-Simon's p).
    probability: PositiveNumber = Decimal("0.8")
    require_eligibility_signature: Boolean = False
    factors: tuple[FactorSpec, ...] = ()


# Visit.code holds at most this many characters.
VISIT_CODE_LENGTH = 10
# A pattern's number is rendered up to this value when checking lengths and clashes.
LARGEST_VISIT_NUMBER = 999


def _visit_code(value):
    value = _code(value)
    if len(value) > VISIT_CODE_LENGTH:
        raise PydanticCustomError(
            "visit_code", f"must be at most {VISIT_CODE_LENGTH} characters (got {{value}})", {"value": value}
        )
    return value


def _visit_code_pattern(value):
    """A visit code with `{n}` where the visit's number goes: "C{n}" makes C1, C2, ..."""
    if (
        not isinstance(value, str)
        or value.count("{n}") != 1
        or not CODE_PATTERN.match(value.replace("{n}", "1"))
        or len(value.replace("{n}", str(LARGEST_VISIT_NUMBER))) > VISIT_CODE_LENGTH
    ):
        raise PydanticCustomError(
            "visit_code_pattern",
            "must be a visit code with {n} once where the number goes, such as C{n}, at most"
            f" {VISIT_CODE_LENGTH - 3} characters besides it (got {{value}})",
            {"value": value},
        )
    return value


VisitCode = Annotated[str, BeforeValidator(_visit_code)]
VisitCodePattern = Annotated[str, BeforeValidator(_visit_code_pattern)]


def visit_code(pattern: str, number: int) -> str:
    """The code of visit `number` of a pattern: ("FU{n}", 2) -> "FU2"."""
    return pattern.replace("{n}", str(number))


def _pattern_makes(pattern: str, code: str) -> bool:
    prefix, suffix = pattern.split("{n}")
    return re.fullmatch(re.escape(prefix) + r"[1-9]\d*" + re.escape(suffix), code) is not None


def _patterns_clash(first: str, second: str) -> bool:
    """Whether two patterns can make the same code ("V{n}" and "V1{n}" both make V11)."""
    return any(_pattern_makes(second, visit_code(first, number)) for number in range(1, LARGEST_VISIT_NUMBER + 1))


class VisitWindow(Section):
    # Days before and after the target date during which the visit may take place. No window
    # opens before day 0 (the randomization day): nothing happens before randomization.
    window_before_days: NonNegativeInt = 0
    window_after_days: NonNegativeInt = 0


class TreatmentCyclesSpec(VisitWindow):
    """Cycle 1 on day 0, then one cycle every `interval_days`."""

    code: VisitCodePattern = "C{n}"
    cycles: PositiveInt
    interval_days: PositiveInt
    # Whether a dose is given (and kits assigned) at each cycle's visit.
    dosing: Boolean = True


class EndOfTreatmentSpec(VisitWindow):
    code: VisitCode = "EOT"
    # Days after the last cycle's target date; one cycle interval when not given.
    days_after_last_cycle: PositiveInt | None = None


class FollowUpSpec(VisitWindow):
    """Follow-up visit k is k x `interval_months` calendar months after the end-of-treatment
    target date (from the 31st, the last day of a shorter month)."""

    code: VisitCodePattern = "FU{n}"
    visits: NonNegativeInt = 0
    interval_months: PositiveInt = 3


class AssessmentSpec(VisitWindow):
    """A visit every `interval_weeks` from day 0 (e.g. tumour imaging), during treatment (before
    the end-of-treatment visit) or also through follow-up (up to the last follow-up visit)."""

    code: VisitCodePattern
    name: Text
    name_zh: Text | None = None
    interval_weeks: PositiveInt
    during: Literal["treatment", "treatment_and_follow_up"] = "treatment"


class UnscheduledSpec(Section):
    """Visits staff add on demand (an adverse event, a missed lab), numbered in the order added."""

    allowed: Boolean = False
    code: VisitCodePattern = "U{n}"


class ScheduleSpec(Section):
    """The visit schedule: treatment cycles, the end-of-treatment visit, follow-up, assessments
    every N weeks and whether unscheduled visits may be added. Codes must never clash: a code
    names one visit of a participant."""

    treatment: TreatmentCyclesSpec
    end_of_treatment: EndOfTreatmentSpec = EndOfTreatmentSpec()
    follow_up: FollowUpSpec = FollowUpSpec()
    assessments: tuple[AssessmentSpec, ...] = ()
    unscheduled: UnscheduledSpec = UnscheduledSpec()

    # Each check names the entry it is on (`schedule.follow_up: ...`) and sees only the entries
    # above it that were valid, so one mistake is reported once.
    @field_validator("end_of_treatment")
    @classmethod
    def _end_of_treatment_code_is_its_own(cls, value, info: ValidationInfo):
        treatment = info.data.get("treatment")
        if treatment is not None and _pattern_makes(treatment.code, value.code):
            raise PydanticCustomError(
                "visit_code_clash", "code {code} is also a treatment cycle's code", {"code": value.code}
            )
        return value

    @classmethod
    def _clashes(cls, pattern: str, info: ValidationInfo) -> str | None:
        """The entry above whose codes `pattern` could also make, or None."""
        earlier = [
            ("the treatment cycles", info.data.get("treatment")),
            ("the follow-up", info.data.get("follow_up")),
            *((f"assessment {entry.code}", entry) for entry in info.data.get("assessments") or ()),
        ]
        for name, entry in earlier:
            if entry is not None and _patterns_clash(pattern, entry.code):
                return name
        end = info.data.get("end_of_treatment")
        if end is not None and _pattern_makes(pattern, end.code):
            return "the end of treatment"
        return None

    @field_validator("follow_up")
    @classmethod
    def _follow_up_codes_are_their_own(cls, value, info: ValidationInfo):
        clash = cls._clashes(value.code, info)
        if clash:
            raise PydanticCustomError(
                "visit_code_clash", "code {code} makes codes of {clash}", {"code": value.code, "clash": clash}
            )
        return value

    @field_validator("assessments")
    @classmethod
    def _assessment_codes_are_their_own(cls, value, info: ValidationInfo):
        for index, assessment in enumerate(value):
            clash = cls._clashes(assessment.code, info) or next(
                (f"assessment {other.code}" for other in value[:index] if _patterns_clash(assessment.code, other.code)),
                None,
            )
            if clash:
                raise PydanticCustomError(
                    "visit_code_clash",
                    "entry [{index}]: code {code} makes codes of {clash}",
                    {"index": index, "code": assessment.code, "clash": clash},
                )
        return value

    @field_validator("unscheduled")
    @classmethod
    def _unscheduled_codes_are_their_own(cls, value, info: ValidationInfo):
        clash = cls._clashes(value.code, info) if value.allowed else None
        if clash:
            raise PydanticCustomError(
                "visit_code_clash", "code {code} makes codes of {clash}", {"code": value.code, "clash": clash}
            )
        return value


class InfusionSpec(Section):
    mg_per_kg: PositiveNumber
    max_dose_mg: PositiveNumber
    concentration_mg_per_ml: PositiveNumber
    vial_sizes_mg: tuple[PositiveInt, ...] = Field(min_length=1)
    diluted_volume_ml: PositiveNumber
    minimum_weight_kg: NonNegativeNumber = Decimal(0)
    maximum_weight_kg: PositiveNumber = Decimal(250)
    weight_change_flag_percent: PositiveNumber = Decimal(10)
    # The kit type that carries the infusion.
    kit_type: Code = "INF"


class TabletSpec(Section):
    tablet_mg: PositiveNumber
    tablets_per_day: PositiveInt = 1
    tablets_per_kit: PositiveInt
    kit_type: Code = "TAB"


LabRange = tuple[NonNegativeNumber, NonNegativeNumber]


class LabLimits(Section):
    """Conditions on the pre-dose labs: counts per mm3, liver enzymes as multiples of ULN."""

    neutrophils_below: NonNegativeNumber | None = None
    platelets_below: NonNegativeNumber | None = None
    alt_ast_uln_above: NonNegativeNumber | None = None
    neutrophils_between: LabRange | None = None
    platelets_between: LabRange | None = None

    def conditions(self) -> dict[str, Any]:
        """The set conditions as `<lab>_<test>` -> limit, in the file's order."""
        return {key: value for key, value in self if value is not None}


class FirstDoseGate(Section):
    do_not_give_if: LabLimits = LabLimits()


class LaterDoseGate(Section):
    hold_if: LabLimits = LabLimits()
    stop_if: LabLimits = LabLimits()


class SafetySpec(Section):
    first_dose: FirstDoseGate = FirstDoseGate()
    later_doses: LaterDoseGate = LaterDoseGate()


class DosingSpec(Section):
    infusion: InfusionSpec | None = None
    tablet: TabletSpec | None = None
    safety: SafetySpec = SafetySpec()


class KitsSpec(Section):
    types: tuple[Code, ...] = Field(min_length=1)
    storage: Text = "Room temperature"
    low_stock_threshold: NonNegativeInt = 4
    resupply_trigger: NonNegativeInt = 4
    resupply_target: PositiveInt = 8
    # The supply page warns of kits whose true expiry falls within this many days.
    expiry_warning_days: PositiveInt = 60


class QuietHours(Section):
    start: Clock
    end: Clock


class RemindersSpec(Section):
    days_before_window: tuple[PositiveInt, ...] = (7, 1)
    send_time: Clock = datetime.time(9, 0)
    quiet_hours: QuietHours = QuietHours(start="21:00", end="08:00")


class RoleSpec(Section):
    capabilities: tuple[Code, ...]


# --- Case report forms (crf app) ---------------------------------------------------------------
# A form is data: its items, their types, ranges and code lists, when an item shows, checks
# across items and non-blocking warnings. Visit-bound forms name visit codes as plain strings
# (or a prefix pattern such as "C*"); they are not checked against a visit plan here.

ITEM_TYPES = ("text", "integer", "decimal", "date", "choice", "yes_no")
NUMERIC_ITEM_TYPES = ("integer", "decimal")
VISIT_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,19}\*?$")


def _visit_code_or_pattern(value):
    if not isinstance(value, str) or not VISIT_PATTERN.match(value):
        raise PydanticCustomError(
            "visit_code",
            "must be a visit code such as C1, or a prefix pattern such as C* (got {value})",
            {"value": repr(value)},
        )
    return value


def _scalar(value):
    """An item value written in the file (a condition's or a warning's): text, a whole number or true/false."""
    if isinstance(value, bool | int | str) and value != "":
        return value
    raise PydanticCustomError("scalar", "must be text, a whole number or true/false")


VisitCodeOrPattern = Annotated[str, BeforeValidator(_visit_code_or_pattern)]
Scalar = Annotated[bool | int | str, BeforeValidator(_scalar)]


class CodeListEntry(Section):
    code: Code
    label: Text
    label_zh: Text | None = None


class CodeListSpec(Section):
    code: Code
    entries: tuple[CodeListEntry, ...] = Field(min_length=1)

    def entry(self, code) -> CodeListEntry | None:
        return next((entry for entry in self.entries if entry.code == code), None)


class ShowIf(Section):
    """Show the item only when another item of the form has this value (yes/no: true or false)."""

    item: Code
    equals: Scalar


class ItemSpec(Section):
    code: Code
    label: Text
    label_zh: Text | None = None
    type: Literal["text", "integer", "decimal", "date", "choice", "yes_no"]
    unit: Text | None = None
    unit_zh: Text | None = None
    min: Number | None = None
    max: Number | None = None
    # Text items: the longest answer accepted.
    max_length: PositiveInt = 200
    # Required to complete the form when the item is shown; an empty one leaves the form in progress.
    required: Boolean = False
    code_list: Code | None = None
    show_if: ShowIf | None = None
    # Only users who may see allocation see, enter or read (in the audit trail) this item.
    unblinded_only: Boolean = False


class CrossCheckSpec(Section):
    """One comparison of two items, when both are filled and shown. Exactly one of the four
    comparisons: dates (`not_before`, `not_after`) or numbers (`below`, `above`)."""

    item: Code
    not_before: Code | None = None
    not_after: Code | None = None
    below: Code | None = None
    above: Code | None = None
    message: Text | None = None
    message_zh: Text | None = None

    @property
    def comparison(self) -> tuple[str, str] | None:
        """(comparison, other item), or None when the file set not exactly one."""
        named = [(name, getattr(self, name)) for name in ("not_before", "not_after", "below", "above")]
        chosen = [(name, other) for name, other in named if other is not None]
        return chosen[0] if len(chosen) == 1 else None


class FormWarningSpec(Section):
    """A non-blocking warning, recorded with the form, when `item` takes one of `any_of`."""

    item: Code
    any_of: tuple[Scalar, ...] = Field(min_length=1)
    text: Text
    text_zh: Text | None = None


class FormSpec(Section):
    code: Code
    name: Text
    name_zh: Text | None = None
    # "visit": one record per listed visit; "log": repeating records of the participant (con-meds).
    kind: Literal["visit", "log"]
    visits: tuple[VisitCodeOrPattern, ...] = ()
    items: tuple[ItemSpec, ...] = Field(min_length=1)
    checks: tuple[CrossCheckSpec, ...] = ()
    warnings: tuple[FormWarningSpec, ...] = ()

    def item(self, code: str) -> ItemSpec | None:
        return next((item for item in self.items if item.code == code), None)

    def carried_at(self, visit_code: str) -> bool:
        """Does this (visit) form belong to the visit with this code?"""
        return self.kind == "visit" and any(
            visit_code.startswith(pattern[:-1]) if pattern.endswith("*") else visit_code == pattern
            for pattern in self.visits
        )


def _form_cross_checks(protocol: Protocol) -> list[str]:
    """The forms' rules that relate one entry to another (visit codes are not checked here)."""
    errors = []
    lists = {}
    for index, code_list in enumerate(protocol.code_lists):
        where = f"code_lists[{index}]"
        if code_list.code in lists:
            errors.append(f"{where}.code: {code_list.code} appears twice")
        lists[code_list.code] = code_list
        seen = set()
        for position, entry in enumerate(code_list.entries):
            if entry.code in seen:
                errors.append(f"{where}.entries[{position}].code: {entry.code} appears twice")
            seen.add(entry.code)
    forms = set()
    for index, form in enumerate(protocol.forms):
        where = f"forms[{index}]"
        if form.code in forms:
            errors.append(f"{where}.code: {form.code} appears twice")
        forms.add(form.code)
        if form.kind == "visit" and not form.visits:
            errors.append(f"{where}.visits: a visit form names the visits that carry it")
        if form.kind == "log" and form.visits:
            errors.append(f"{where}.visits: a log belongs to the participant, not to visits; remove this key")
        items = {}
        for position, item in enumerate(form.items):
            at = f"{where}.items[{position}]"
            if item.code in items:
                errors.append(f"{at}.code: {item.code} appears twice")
            items[item.code] = item
            if item.type == "choice" and item.code_list is None:
                errors.append(f"{at}.code_list: a choice item names its code list")
            if item.code_list is not None and item.type != "choice":
                errors.append(f"{at}.code_list: only a choice item has a code list")
            if item.code_list is not None and item.code_list not in lists:
                errors.append(f"{at}.code_list: unknown code list {item.code_list}")
            for bound in ("min", "max"):
                if getattr(item, bound) is not None and item.type not in NUMERIC_ITEM_TYPES:
                    errors.append(f"{at}.{bound}: only integer and decimal items have a range")
            if item.min is not None and item.max is not None and item.min > item.max:
                errors.append(f"{at}.max: {item.max} is below min {item.min}")
            for key in ("unit", "unit_zh"):
                if getattr(item, key) is not None and item.type not in NUMERIC_ITEM_TYPES:
                    errors.append(f"{at}.{key}: only integer and decimal items have a unit")
        for position, item in enumerate(form.items):
            if item.show_if is None:
                continue
            at = f"{where}.items[{position}].show_if.item"
            condition = items.get(item.show_if.item)
            if condition is None or condition is item:
                errors.append(f"{at}: {item.show_if.item} is not another item of form {form.code}")
            elif condition.unblinded_only and not item.unblinded_only:
                # Whether the item shows would tell a blinded reader the unblinded value.
                errors.append(f"{at}: {condition.code} is unblinded only, so it cannot decide what blinded staff see")
        for position, check in enumerate(form.checks):
            at = f"{where}.checks[{position}]"
            comparison = check.comparison
            if comparison is None:
                errors.append(f"{at}: give exactly one of not_before, not_after, below, above")
                continue
            name, other = comparison
            wanted = ("date",) if name in ("not_before", "not_after") else NUMERIC_ITEM_TYPES
            for key, code in (("item", check.item), (name, other)):
                item = items.get(code)
                if item is None:
                    errors.append(f"{at}.{key}: {code} is not an item of form {form.code}")
                elif item.type not in wanted:
                    errors.append(
                        f"{at}.{key}: {code} is a {item.type} item; {name} compares {' or '.join(wanted)} items"
                    )
                elif item.unblinded_only:
                    errors.append(f"{at}.{key}: {code} is unblinded only; its check would be read by blinded staff")
        for position, warning in enumerate(form.warnings):
            at = f"{where}.warnings[{position}]"
            item = items.get(warning.item)
            if item is None:
                errors.append(f"{at}.item: {warning.item} is not an item of form {form.code}")
                continue
            if item.unblinded_only:
                errors.append(f"{at}.item: {item.code} is unblinded only; its warning would be read by blinded staff")
            if item.type == "choice" and item.code_list in lists:
                for value_index, value in enumerate(warning.any_of):
                    if lists[item.code_list].entry(value) is None:
                        errors.append(f"{at}.any_of[{value_index}]: {value} is not in code list {item.code_list}")
    return errors


class Protocol(Section):
    """The whole protocol file. Build it with `parse_protocol`, read it through `Trial.protocol`."""

    trial: TrialInfo
    sites: tuple[SiteSpec, ...] = Field(min_length=1)
    arms: tuple[ArmSpec, ...] = Field(min_length=2)
    eligibility: EligibilitySpec
    randomization: RandomizationSpec
    schedule: ScheduleSpec
    dosing: DosingSpec = DosingSpec()
    kits: KitsSpec | None = None
    reminders: RemindersSpec = RemindersSpec()
    roles: dict[Code, RoleSpec] = Field(default_factory=dict)
    code_lists: tuple[CodeListSpec, ...] = ()
    forms: tuple[FormSpec, ...] = ()

    @property
    def blinded(self) -> bool:
        return self.trial.masking != "none"

    @property
    def kit_types(self) -> tuple[str, ...]:
        return self.kits.types if self.kits else ()

    def arm(self, code: str) -> ArmSpec:
        return next(arm for arm in self.arms if arm.code == code)

    def site(self, code: str) -> SiteSpec | None:
        return next((site for site in self.sites if site.code == code), None)

    def criterion(self, code: str) -> CriterionSpec | None:
        return next((criterion for criterion in self.eligibility.criteria if criterion.code == code), None)

    def form(self, code: str) -> FormSpec | None:
        return next((form for form in self.forms if form.code == code), None)

    def code_list(self, code: str) -> CodeListSpec | None:
        return next((code_list for code_list in self.code_lists if code_list.code == code), None)


def _path(location: tuple) -> str:
    """('dosing', 'infusion', 'vial_sizes_mg', 2) -> 'dosing.infusion.vial_sizes_mg[2]'."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-before[_positive_integer(), int]",):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "protocol"


_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a key this system knows (misspelt?)",
    "literal_error": "must be one of {expected}",
    "too_short": "must have at least {min_length} entries",
    "string_pattern_mismatch": "must match {pattern}",
    "model_type": "must be a table",
    "dict_type": "must be a table",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "string_type": "must be text",
}


def _message(error: dict) -> str:
    template = _MESSAGES.get(error["type"])
    if template is None:
        return error["msg"]
    return template.format(**(error.get("ctx") or {}))


def _role_checks(protocol: Protocol) -> list[str]:
    from trialsite.access import Capability
    from trialsite.models import Role

    errors = []
    for role, spec in protocol.roles.items():
        if role not in Role.values:
            errors.append(f"roles.{role}: is not a role (one of {', '.join(Role.values)})")
        for index, capability in enumerate(spec.capabilities):
            if capability not in Capability.values:
                errors.append(f"roles.{role}.capabilities[{index}]: {capability} is not a capability")
    return errors


def _cross_checks(protocol: Protocol) -> list[str]:
    """The rules that relate one part of the file to another."""
    errors = []

    def duplicates(entries, where: str, attribute: str = "code"):
        seen = set()
        for index, entry in enumerate(entries):
            value = getattr(entry, attribute)
            if value in seen:
                errors.append(f"{where}[{index}].{attribute}: {value} appears twice")
            seen.add(value)

    duplicates(protocol.sites, "sites")
    duplicates(protocol.arms, "arms")
    duplicates(protocol.eligibility.criteria, "eligibility.criteria")
    duplicates(protocol.randomization.factors, "randomization.factors")
    if len(set(protocol.kit_types)) != len(protocol.kit_types):
        errors.append("kits.types: a kit type appears twice")
    for index, arm in enumerate(protocol.arms):
        if set(arm.kit_contents) != set(protocol.kit_types):
            errors.append(
                f"arms[{index}].kit_contents: must name exactly the kit types {list(protocol.kit_types)}"
                f" (names {sorted(arm.kit_contents)})"
            )
    if protocol.kit_types:
        patterns = {tuple(sorted(arm.kit_contents.items())) for arm in protocol.arms}
        if len(patterns) != len(protocol.arms):
            errors.append("arms: two arms have the same kit contents, so kits could not tell them apart")
    eligibility = protocol.eligibility
    if eligibility.minimum_age_years > eligibility.maximum_age_years:
        errors.append("eligibility.maximum_age_years: must not be below minimum_age_years")
    randomization = protocol.randomization
    total_ratio = sum(arm.ratio for arm in protocol.arms)
    if randomization.method == "stratified_permuted_blocks":
        if not randomization.block_sizes:
            errors.append("randomization.block_sizes: is required for stratified_permuted_blocks")
        for index, size in enumerate(randomization.block_sizes):
            if size % total_ratio:
                errors.append(
                    f"randomization.block_sizes[{index}]: block size {size} is not a multiple of the"
                    f" allocation ratio total {total_ratio}"
                )
    else:
        if randomization.block_sizes:
            errors.append("randomization.block_sizes: minimization uses no blocks; remove this key")
        if not randomization.factors and not randomization.stratify_by_site:
            errors.append("randomization.factors: minimization needs at least one factor (or stratify_by_site)")
        if not Decimal("0.5") <= randomization.probability <= 1:
            errors.append("randomization.probability: must be between 0.5 and 1")
    dosing = protocol.dosing
    for name, spec in (("infusion", dosing.infusion), ("tablet", dosing.tablet)):
        if spec is not None and spec.kit_type not in protocol.kit_types:
            errors.append(
                f"dosing.{name}.kit_type: {spec.kit_type} is not one of kits.types {list(protocol.kit_types)}"
            )
    infusion = dosing.infusion
    if infusion is not None and infusion.minimum_weight_kg >= infusion.maximum_weight_kg:
        errors.append("dosing.infusion.maximum_weight_kg: must be above minimum_weight_kg")
    gates = dosing.safety
    for where, limits in (
        ("dosing.safety.later_doses.hold_if", gates.later_doses.hold_if),
        ("dosing.safety.later_doses.stop_if", gates.later_doses.stop_if),
        ("dosing.safety.first_dose.do_not_give_if", gates.first_dose.do_not_give_if),
    ):
        for key, limit in limits.conditions().items():
            if key.endswith("_between") and limit[0] > limit[1]:
                errors.append(f"{where}.{key}: the low end {limit[0]} is above the high end {limit[1]}")
    if protocol.kits is not None and protocol.kits.resupply_target < protocol.kits.resupply_trigger:
        errors.append("kits.resupply_target: must not be below resupply_trigger")
    errors.extend(_role_checks(protocol))
    if protocol.trial.masking == "single" and not protocol.kit_types:
        errors.append("kits.types: a blinded trial needs kit types, so that kits can hide the arm")
    errors += _form_cross_checks(protocol)
    return errors


def parse_protocol(document: dict) -> Protocol:
    """The typed protocol, or ProtocolError with every mistake named by its path."""
    try:
        protocol = Protocol.model_validate(document)
    except PydanticValidationError as error:
        entries = [(_path(entry["loc"]), _message(entry), entry["type"]) for entry in error.errors()]
        # A list whose entries are wrong is also reported "too short" by pydantic: say only the entries.
        errors = [
            f"{path}: {message}"
            for path, message, kind in entries
            if kind != "too_short" or not any(other.startswith(path + "[") for other, _m, _k in entries)
        ]
        raise ProtocolError(errors) from None
    errors = _cross_checks(protocol)
    if errors:
        raise ProtocolError(errors)
    return protocol


_parsed: dict[str, Protocol] = {}


def protocol_for(document: dict) -> Protocol:
    """The parsed protocol of a stored definition, cached by the digest of its content (not the
    stored digest column, which an edit of the JSON would not change)."""
    digest = hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()
    protocol = _parsed.get(digest)
    if protocol is None:
        if len(_parsed) > 256:
            _parsed.clear()
        protocol = _parsed[digest] = parse_protocol(document)
    return protocol
