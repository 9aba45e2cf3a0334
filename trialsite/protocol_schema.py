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
import functools
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
    """Every mistake in a protocol file, each as "path: what is wrong". `cross_checked` is False
    when the file's tables and keys themselves were wrong: the rules relating one part of the file
    to another (kit types, forms' visits, block sizes, ...) need every part read, so they are
    checked, and their mistakes named, only once these are fixed."""

    def __init__(self, errors: list[str], *, cross_checked: bool = True):
        self.errors = errors
        self.cross_checked = cross_checked
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
            "must be a code: a letter, then up to 19 letters, digits or underscores (got {value})",
            {"value": value},
        )
    return value


def _coded_value(value):
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,19}$", value):
        raise PydanticCustomError(
            "coded_value",
            "must be a coded value: up to 20 letters, digits, '_', '.', '+' or '-' (got {value})",
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


CodedValue = Annotated[str, BeforeValidator(_coded_value)]
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
    nct_id: Annotated[str, BeforeValidator(_text)] = Field(
        pattern=r"^NCT\d{8}$",
        description=(
            "The trial's ClinicalTrials.gov number (NCT and eight digits); the trial's address is /t/<NCT id>/."
        ),
    )
    title: Text = Field(description="The trial's official title, as registered.")
    sponsor: Text = Field(description="The sponsoring institution.")
    sponsor_protocol_id: Text = Field(description="The sponsor's own number for this protocol.")
    sponsor_contact_email: Email = Field(description="Whom an emergency unblinding is reported to (without the arm).")
    target_enrollment: PositiveInt = Field(description="How many participants the trial plans to randomize.")
    design: Text = Field(
        "Interventional, randomized", description="The design in words, as registered (shown, not interpreted)."
    )
    masking: Literal["single", "none"] = Field(
        "single",
        description=(
            '"single": participants blinded, staff blinded unless their role views allocation; "none": open label, '
            "every role may see the arm."
        ),
    )
    protocol_version: Text = Field(
        "1.0",
        description=(
            "This file's version; each amendment is a new version, and records say under which version they were "
            "captured."
        ),
    )
    effective_date: Date | None = Field(
        None, description="The day this version takes effect; never before the version in force."
    )


class SiteSpec(Section):
    code: Code = Field(
        description="The site's code; it starts screening and randomization numbers (S-NT-0001, NT-0001)."
    )
    name: Text = Field(description="The site's name.")
    name_zh: Text | None = Field(None, description="The site's name in Chinese.")
    time_zone: TimeZone = Field(
        description="The site's time zone (such as Asia/Shanghai): visit windows and reminders follow its clock."
    )


class ArmSpec(Section):
    code: Code = Field(description="The arm's code, seen only by those who may see allocation.")
    name: Text = Field(description="The arm's name.")
    name_zh: Text | None = Field(None, description="The arm's name in Chinese.")
    ratio: PositiveInt = Field(1, description="The arm's share of the allocation ratio (2 and 1 make 2:1).")
    kit_contents: dict[Code, Literal["active", "placebo"]] = Field(
        default_factory=dict,
        description=(
            "Per kit type, what this arm's kit of that type holds. Blinded: every kit type; open label: the types the "
            "arm gets."
        ),
    )


class CriterionSpec(Section):
    code: Code = Field(description="The criterion's code (IN1, EX1).")
    kind: Literal["inclusion", "exclusion"] = Field(description="Inclusion: must be met; exclusion: must not be met.")
    text: Text = Field(description="The criterion as the screening form asks it.")
    text_zh: Text | None = Field(None, description="The criterion in Chinese.")


class EligibilitySpec(Section):
    minimum_age_years: PositiveInt = Field(description="The youngest age, in years, that may enroll.")
    maximum_age_years: PositiveInt = Field(description="The oldest age, in years, that may enroll.")
    consent_required: Boolean = Field(
        True, description="Whether consent must be signed, on or before the screening date."
    )
    criteria: tuple[CriterionSpec, ...] = Field(
        description="The inclusion and exclusion criteria: one Yes/No each at screening."
    )


class FactorSpec(Section):
    code: Code = Field(description="The factor's code; its level is recorded at screening.")
    label: Text = Field(description="The factor as the screening form names it.")
    label_zh: Text | None = Field(None, description="The factor's name in Chinese.")
    levels: tuple[Code, ...] = Field(min_length=2, description="The factor's levels (codes, at least two).")
    weight: PositiveNumber = Field(
        Decimal(1), description="Minimization only: how much an imbalance on this factor counts."
    )


class RandomizationSpec(Section):
    method: Literal["stratified_permuted_blocks", "minimization"] = Field(
        "stratified_permuted_blocks",
        description=(
            "Permuted blocks within strata (a list made in advance) or minimization (each arm computed at "
            "randomization)."
        ),
    )
    block_sizes: tuple[PositiveInt, ...] = Field(
        (), description="Permuted blocks: sizes, each a multiple of the ratio total, drawn at random per block."
    )
    stratify_by_site: Boolean = Field(True, description="The site is a stratum (blocks) or a minimization factor.")
    site_weight: PositiveNumber = Field(Decimal(1), description="Minimization: the weight of the site as a factor.")
    probability: PositiveNumber = Field(
        Decimal("0.8"),
        description="Minimization: the chance of taking the arm that minimizes imbalance (Pocock-Simon's p), 0.5 to 1.",
    )
    require_eligibility_signature: Boolean = Field(
        False,
        description="Whether the principal investigator must sign the eligibility before randomization (web or API).",
    )
    factors: tuple[FactorSpec, ...] = Field(
        (), description="Stratification (blocks) or minimization factors besides the site, recorded at screening."
    )


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
    """A visit code with `{n}` where the visit's number goes: "V{n}" makes V1, V2, ..."""
    if (
        not isinstance(value, str)
        or value.count("{n}") != 1
        or not CODE_PATTERN.match(value.replace("{n}", "1"))
        or len(value.replace("{n}", str(LARGEST_VISIT_NUMBER))) > VISIT_CODE_LENGTH
    ):
        raise PydanticCustomError(
            "visit_code_pattern",
            "must be a visit code with {n} once where the number goes, such as V{n}, at most"
            f" {VISIT_CODE_LENGTH - 3} characters besides it (got {{value}})",
            {"value": value},
        )
    return value


VisitCode = Annotated[str, BeforeValidator(_visit_code)]
VisitCodePattern = Annotated[str, BeforeValidator(_visit_code_pattern)]


def visit_code(pattern: str, number: int) -> str:
    """The code of visit `number` of a pattern: ("V{n}", 2) -> "V2"."""
    return pattern.replace("{n}", str(number))


def _pattern_makes(pattern: str, code: str) -> bool:
    prefix, suffix = pattern.split("{n}")
    return re.fullmatch(re.escape(prefix) + r"[1-9]\d*" + re.escape(suffix), code) is not None


def _patterns_clash(first: str, second: str) -> bool:
    """Whether two patterns can make the same code ("V{n}" and "V1{n}" both make V11)."""
    return any(_pattern_makes(second, visit_code(first, number)) for number in range(1, LARGEST_VISIT_NUMBER + 1))


class VisitWindow(Section):
    window_before_days: NonNegativeInt = Field(
        0,
        description=(
            "Days before the target date the visit may take place. No window opens before day 0 (the randomization "
            "day)."
        ),
    )
    window_after_days: NonNegativeInt = Field(0, description="Days after the target date the visit may take place.")


class TreatmentCyclesSpec(VisitWindow):
    """Cycle 1 on day 0, then one cycle every `interval_days`."""

    # No default for any code: the trial's file names its visits, the code names none.
    code: VisitCodePattern = Field(
        description="The cycles' visit codes, {n} where the cycle's number goes (V{n} makes V1, V2, ...)."
    )
    cycles: PositiveInt = Field(description="How many treatment cycles.")
    interval_days: PositiveInt = Field(description="Days from one cycle to the next; cycle 1 is on day 0.")
    dosing: Boolean = Field(True, description="Whether a dose is given (and kits assigned) at each cycle's visit.")


class EndOfTreatmentSpec(VisitWindow):
    code: VisitCode = Field(description="The end-of-treatment visit's code.")
    days_after_last_cycle: PositiveInt | None = Field(
        None, description="Days after the last cycle's target date; one cycle interval when not given."
    )


class FollowUpSpec(VisitWindow):
    """Follow-up visit k is k x `interval_months` calendar months after the end-of-treatment
    target date (from the 31st, the last day of a shorter month)."""

    code: VisitCodePattern = Field(description="The follow-up visits' codes, {n} where the visit's number goes.")
    visits: NonNegativeInt = Field(0, description="How many follow-up visits (0: none).")
    interval_months: PositiveInt = Field(3, description="Calendar months from one follow-up visit to the next.")


class AssessmentSpec(VisitWindow):
    """A visit every `interval_weeks` from day 0 (e.g. tumour imaging), during treatment (before
    the end-of-treatment visit) or also through follow-up (up to the last follow-up visit)."""

    code: VisitCodePattern = Field(description="The assessment visits' codes, {n} where the number goes (IMG{n}).")
    name: Text = Field(description="The assessment's name (e.g. Tumour imaging).")
    name_zh: Text | None = Field(None, description="The assessment's name in Chinese.")
    interval_weeks: PositiveInt = Field(description="Weeks from one assessment to the next, from day 0.")
    during: Literal["treatment", "treatment_and_follow_up"] = Field(
        "treatment",
        description=(
            '"treatment": before the end-of-treatment visit; "treatment_and_follow_up": up to the last follow-up visit.'
        ),
    )


class UnscheduledSpec(Section):
    """Visits staff add on demand (an adverse event, a missed lab), numbered in the order added."""

    allowed: Boolean = Field(False, description="Whether staff may add unscheduled visits to a randomized participant.")
    code: VisitCodePattern | None = Field(
        None, description="Their codes, {n} numbered in the order added; required when allowed."
    )


class ScheduleSpec(Section):
    """The visit schedule: treatment cycles, the end-of-treatment visit, follow-up, assessments
    every N weeks and whether unscheduled visits may be added. Codes must never clash: a code
    names one visit of a participant."""

    treatment: TreatmentCyclesSpec = Field(description="The treatment cycles.")
    end_of_treatment: EndOfTreatmentSpec = Field(description="The end-of-treatment visit.")
    follow_up: FollowUpSpec | None = Field(None, description="The follow-up visits after the end of treatment.")
    assessments: tuple[AssessmentSpec, ...] = Field((), description="Visits every N weeks, such as tumour imaging.")
    unscheduled: UnscheduledSpec = Field(UnscheduledSpec(), description="Visits staff add on demand.")

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
        if value.allowed and value.code is None:
            raise PydanticCustomError("visit_code_missing", "code is required when unscheduled visits are allowed")
        clash = cls._clashes(value.code, info) if value.allowed else None
        if clash:
            raise PydanticCustomError(
                "visit_code_clash", "code {code} makes codes of {clash}", {"code": value.code, "clash": clash}
            )
        return value


class InfusionSpec(Section):
    mg_per_kg: PositiveNumber = Field(description="The dose per kilogram of body weight (mg).")
    max_dose_mg: PositiveNumber = Field(description="The largest dose, whatever the weight (mg).")
    concentration_mg_per_ml: PositiveNumber = Field(description="The concentrate's strength (mg per mL).")
    vial_sizes_mg: tuple[PositiveInt, ...] = Field(
        min_length=1, description="The vial sizes available (mg), from which each dose's vials are chosen."
    )
    diluted_volume_ml: PositiveNumber = Field(description="The volume after dilution (mL).")
    minimum_weight_kg: NonNegativeNumber = Field(
        Decimal(0), description="The lightest weight accepted at a dosing visit (kg)."
    )
    maximum_weight_kg: PositiveNumber = Field(
        Decimal(250), description="The heaviest weight accepted at a dosing visit (kg)."
    )
    weight_change_flag_percent: PositiveNumber = Field(
        Decimal(10), description="A weight more than this percentage away from the first dosing weight is flagged."
    )
    kit_type: Code = Field(description="The kit type that carries the infusion (one of kits.types).")
    weight_item: Text | None = Field(
        None,
        description=(
            "Where the dose reads the weight: a number item of a visit form carried at every dosing visit, as"
            " form.item (vitals.weight); a weight given at the dosing visit is saved there. Not given: the weight"
            " is the dosing visit's own field."
        ),
    )


class TabletSpec(Section):
    tablet_mg: PositiveNumber = Field(description="The strength of one tablet (mg).")
    tablets_per_day: PositiveInt = Field(1, description="Tablets to take each day.")
    tablets_per_kit: PositiveInt = Field(
        description="Tablets in one kit; adherence counts the returned tablets against it."
    )
    kit_type: Code = Field(description="The kit type that carries the tablets (one of kits.types).")


LabRange = tuple[NonNegativeNumber, NonNegativeNumber]


class LabLimits(Section):
    """Conditions on the pre-dose labs: counts per mm3, liver enzymes as multiples of ULN."""

    neutrophils_below: NonNegativeNumber | None = Field(None, description="Neutrophils below this count (per mm³).")
    platelets_below: NonNegativeNumber | None = Field(None, description="Platelets below this count (per mm³).")
    alt_ast_uln_above: NonNegativeNumber | None = Field(
        None, description="ALT or AST above this multiple of the upper limit of normal."
    )
    neutrophils_between: LabRange | None = Field(
        None, description="Neutrophils from low to high, both included (per mm³)."
    )
    platelets_between: LabRange | None = Field(None, description="Platelets from low to high, both included (per mm³).")

    def conditions(self) -> dict[str, Any]:
        """The set conditions as `<lab>_<test>` -> limit, in the file's order."""
        return {key: value for key, value in self if value is not None}


class FirstDoseGate(Section):
    do_not_give_if: LabLimits = Field(LabLimits(), description="Labs that rule out the first infusion.")


class LaterDoseGate(Section):
    hold_if: LabLimits = Field(
        LabLimits(),
        description="Labs that hold a later infusion (repeat labs within the window may turn it into a dose).",
    )
    stop_if: LabLimits = Field(LabLimits(), description="Labs that stop treatment.")


class SafetySpec(Section):
    first_dose: FirstDoseGate = Field(FirstDoseGate(), description="The lab gate before the first infusion.")
    later_doses: LaterDoseGate = Field(LaterDoseGate(), description="The lab gates before every later infusion.")
    labs_form: Code | None = Field(
        None,
        description=(
            "Where the infusion's lab gates read the pre-dose labs: a visit form carried at every dosing visit with"
            " number items neutrophils and platelets (per mm³), alt_uln and ast_uln (x ULN); labs given at the dosing"
            " visit are saved there. Not given: the labs are the dosing visit's own fields."
        ),
    )


class DosingSpec(Section):
    infusion: InfusionSpec | None = Field(None, description="The weight-based infusion, when the trial gives one.")
    tablet: TabletSpec | None = Field(None, description="The daily tablets, when the trial gives them.")
    safety: SafetySpec = Field(SafetySpec(), description="Lab gates before each infusion.")


class KitsSpec(Section):
    types: tuple[Code, ...] = Field(
        min_length=1, description="The kit types (codes such as VIAL, PACK) that arms' kit_contents name."
    )
    storage: Text = Field("Room temperature", description="How kits are stored, as shown to the pharmacy.")
    low_stock_threshold: NonNegativeInt = Field(
        4, description="Kits per content at a site below which the supply page warns."
    )
    resupply_trigger: NonNegativeInt = Field(
        4,
        description=(
            "When a site's kits of any content (there or on their way) fall below this, every content is topped up to "
            "resupply_target in one mixed shipment."
        ),
    )
    resupply_target: PositiveInt = Field(
        8, description="Kits per content a resupply tops a site up to; a new site's initial shipment."
    )
    expiry_warning_days: PositiveInt = Field(
        60, description="The supply page warns of kits whose true expiry falls within this many days."
    )


class QuietHours(Section):
    start: Clock = Field(description="When the quiet hours begin (the site's clock).")
    end: Clock = Field(description="When they end; a participant's reminder due in them is sent then.")


class RemindersSpec(Section):
    # The reminder kinds the system sends (and their wording) are 7 and 1 days ahead; another
    # number would be accepted and never sent, so it is refused.
    days_before_window: tuple[Literal[7, 1], ...] = Field(
        (7, 1), description="Days before a visit's window opens when a reminder is due: 7, 1 or both."
    )
    send_time: Clock = Field(datetime.time(9, 0), description="The time of day reminders are due (the site's clock).")
    quiet_hours: QuietHours = Field(
        QuietHours(start="21:00", end="08:00"), description="Hours in which no reminder is sent to a participant."
    )


def _ctcae_term(value):
    from safety.ctcae import TERMS

    if not isinstance(value, str) or value not in TERMS:
        raise PydanticCustomError(
            "ctcae_term",
            "must be a CTCAE term code of safety/ctcae.py (got {value})",
            {"value": repr(value)},
        )
    return value


CtcaeTerm = Annotated[str, BeforeValidator(_ctcae_term)]


class AdverseEventSpec(Section):
    # Apart from [dosing.safety] (lab gates before a dose): this is the adverse event log's.
    special_interest: tuple[CtcaeTerm, ...] = Field(
        (), description="CTCAE term codes that are adverse events of special interest (flagged when recorded)."
    )


class RoleSpec(Section):
    capabilities: tuple[Code, ...] = Field(
        description="The role's capabilities in this trial, replacing its default ones."
    )


# --- Case report forms (crf app) ---------------------------------------------------------------
# A form is data: its items, their types, ranges and code lists, when an item shows, checks
# across items and non-blocking warnings. Visit-bound forms name visit codes as plain strings
# (or a prefix pattern such as "V*"); `_form_visit_checks` checks them against the schedule.

ITEM_TYPES = ("text", "integer", "decimal", "date", "choice", "yes_no")
NUMERIC_ITEM_TYPES = ("integer", "decimal")
VISIT_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,19}\*?$")


def _visit_code_or_pattern(value):
    if not isinstance(value, str) or not VISIT_PATTERN.match(value):
        raise PydanticCustomError(
            "visit_code",
            "must be a visit code such as V1, or a prefix pattern such as V* (got {value})",
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
    code: CodedValue = Field(
        description='The value stored: a grade or score may be digits ("0".."4"), as in CDISC code lists.'
    )
    label: Text = Field(description="The value as the form shows it.")
    label_zh: Text | None = Field(None, description="The value in Chinese.")


class CodeListSpec(Section):
    code: Code = Field(description="The list's code, named by choice items' code_list.")
    entries: tuple[CodeListEntry, ...] = Field(min_length=1, description="The values, in the order offered.")

    def entry(self, code) -> CodeListEntry | None:
        return next((entry for entry in self.entries if entry.code == code), None)


class ShowIf(Section):
    """Show the item only when another item of the form has this value (yes/no: true or false)."""

    item: Code = Field(description="The other item of the form that decides.")
    equals: Scalar = Field(description="The value of that item that shows this one (true or false for a yes/no item).")


class ItemSpec(Section):
    code: Code = Field(description="The item's code, once per form.")
    label: Text = Field(description="The item's label on the form.")
    label_zh: Text | None = Field(None, description="The label in Chinese.")
    type: Literal["text", "integer", "decimal", "date", "choice", "yes_no"] = Field(
        description="What the item holds; a choice takes a value of its code list."
    )
    unit: Text | None = Field(None, description="Integer and decimal items: the unit shown after the value.")
    unit_zh: Text | None = Field(None, description="The unit in Chinese.")
    min: Number | None = Field(None, description="Integer and decimal items: the smallest value accepted.")
    max: Number | None = Field(None, description="Integer and decimal items: the largest value accepted.")
    max_length: PositiveInt = Field(200, description="Text items: the longest answer accepted.")
    required: Boolean = Field(
        False,
        description="Required to complete the form when the item is shown; an empty one leaves the form in progress.",
    )
    code_list: Code | None = Field(None, description="Choice items: the code list of their values.")
    show_if: ShowIf | None = Field(None, description="When the item shows (and is required): another item's value.")
    unblinded_only: Boolean = Field(
        False, description="Only users who may see allocation see, enter or read (in the audit trail) this item."
    )


class CrossCheckSpec(Section):
    """One comparison of two items, when both are filled and shown. Exactly one of the four
    comparisons: dates (`not_before`, `not_after`) or numbers (`below`, `above`)."""

    item: Code = Field(description="The item checked.")
    not_before: Code | None = Field(None, description="A date item this date may not be before.")
    not_after: Code | None = Field(None, description="A date item this date may not be after.")
    below: Code | None = Field(None, description="A number item this number must be below.")
    above: Code | None = Field(None, description="A number item this number must be above.")
    message: Text | None = Field(None, description="What the form says at the item when the check fails.")
    message_zh: Text | None = Field(None, description="The message in Chinese.")

    @property
    def comparison(self) -> tuple[str, str] | None:
        """(comparison, other item), or None when the file set not exactly one."""
        named = [(name, getattr(self, name)) for name in ("not_before", "not_after", "below", "above")]
        chosen = [(name, other) for name, other in named if other is not None]
        return chosen[0] if len(chosen) == 1 else None


class FormWarningSpec(Section):
    """A non-blocking warning, recorded with the form, when `item` takes one of `any_of`."""

    item: Code = Field(description="The item whose value raises the warning.")
    any_of: tuple[Scalar, ...] = Field(min_length=1, description="The values that raise it.")
    text: Text = Field(description="The warning.")
    text_zh: Text | None = Field(None, description="The warning in Chinese.")


class FormSpec(Section):
    code: Code = Field(description="The form's code.")
    name: Text = Field(description="The form's name.")
    name_zh: Text | None = Field(None, description="The form's name in Chinese.")
    kind: Literal["visit", "log"] = Field(
        description='"visit": one record per listed visit; "log": repeating records of the participant (con-meds).'
    )
    visits: tuple[VisitCodeOrPattern, ...] = Field(
        (), description="Visit forms: the visit codes that carry the form (V1) or prefix patterns (V*)."
    )
    items: tuple[ItemSpec, ...] = Field(min_length=1, description="The form's items, in order.")
    checks: tuple[CrossCheckSpec, ...] = Field(
        (), description="Comparisons of two items; a failing one blocks the save."
    )
    warnings: tuple[FormWarningSpec, ...] = Field((), description="Warnings that never block a save and are recorded.")

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

    trial: TrialInfo = Field(description="The trial: registry number, title, sponsor, masking and this file's version.")
    sites: tuple[SiteSpec, ...] = Field(min_length=1, description="The sites that screen and randomize.")
    arms: tuple[ArmSpec, ...] = Field(min_length=2, description="The arms, their ratio and what their kits hold.")
    eligibility: EligibilitySpec = Field(description="Age limits, consent and the inclusion and exclusion criteria.")
    randomization: RandomizationSpec = Field(description="How participants are allocated to arms.")
    schedule: ScheduleSpec = Field(description="The visit schedule from the randomization day.")
    dosing: DosingSpec = Field(DosingSpec(), description="The study medication: infusion, tablets and lab gates.")
    kits: KitsSpec | None = Field(None, description="Kit types, storage and resupply; a blinded trial needs them.")
    reminders: RemindersSpec = Field(RemindersSpec(), description="When visit reminders are sent.")
    adverse_events: AdverseEventSpec = Field(AdverseEventSpec(), description="The adverse event log's settings.")
    roles: dict[Code, RoleSpec] = Field(
        default_factory=dict, description="Per role, capabilities replacing the defaults."
    )
    code_lists: tuple[CodeListSpec, ...] = Field((), description="Lists of coded values for choice items.")
    forms: tuple[FormSpec, ...] = Field((), description="The case report forms.")

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


# The items the lab gates read from `dosing.safety.labs_form`, by the names the dose logic uses.
LAB_ITEMS = ("neutrophils", "platelets", "alt_uln", "ast_uln")


def _dosing_form_checks(protocol: Protocol) -> list[str]:
    """The forms the dose reads its weight and labs from exist, hold numbers and are carried at
    every dosing visit: otherwise a dosing visit would find nowhere to save or read them."""
    errors = []
    treatment = protocol.schedule.treatment
    dosing_visits = [visit_code(treatment.code, n) for n in range(1, treatment.cycles + 1)] if treatment.dosing else []

    def check(where: str, form_code: str, item_codes: tuple[str, ...]) -> None:
        form = protocol.form(form_code)
        if form is None or form.kind != "visit":
            errors.append(f"{where}: {form_code} is not a visit form of [[forms]]")
            return
        for code in item_codes:
            item = form.item(code)
            if item is None:
                errors.append(f"{where}: form {form_code} has no item {code}")
            elif item.type not in ("integer", "decimal"):
                errors.append(f"{where}: item {form_code}.{code} must be an integer or decimal item")
            elif item.unblinded_only:
                errors.append(f"{where}: item {form_code}.{code} must be seen by whoever records the dosing visit")
        missing = [code for code in dosing_visits if not form.carried_at(code)]
        if missing:
            errors.append(f"{where}: form {form_code} is not carried at the dosing visits {', '.join(missing)}")

    infusion = protocol.dosing.infusion
    if infusion is not None and infusion.weight_item is not None:
        form_code, _dot, item_code = infusion.weight_item.partition(".")
        if not form_code or not item_code:
            errors.append(f"dosing.infusion.weight_item: {infusion.weight_item} must be form.item (vitals.weight)")
        else:
            check("dosing.infusion.weight_item", form_code, (item_code,))
    labs_form = protocol.dosing.safety.labs_form
    if labs_form is not None:
        if infusion is None:
            errors.append("dosing.safety.labs_form: only the infusion's lab gates read it; there is no dosing.infusion")
        else:
            check("dosing.safety.labs_form", labs_form, LAB_ITEMS)
    return errors


# Day 0s whose plans together make every code the schedule can: follow-up is counted in calendar
# months, so how many assessments fit through follow-up depends on the month and leap year of day 0.
_PLAN_DAY0S = tuple(datetime.date(2024, 1, 1) + datetime.timedelta(days=day) for day in range(4 * 365 + 1))


@functools.lru_cache(maxsize=64)
def _schedule_codes(schedule: ScheduleSpec) -> tuple[frozenset[str], str]:
    """Every code a participant's plan can hold (from any day 0), and the schedule in words.
    Cached: the plans of four years of day 0s take a tenth of a second, and files are parsed often."""
    from schedules.services import visit_plan

    planned = set()
    for day0 in _PLAN_DAY0S:
        planned.update(visit.code for visit in visit_plan(schedule=schedule, day0=day0))

    def numbered(pattern: str) -> str:
        last = max(n for n in range(1, LARGEST_VISIT_NUMBER + 1) if visit_code(pattern, n) in planned)
        return f"{visit_code(pattern, 1)}..{visit_code(pattern, last)}" if last > 1 else visit_code(pattern, 1)

    parts = [f"treatment {numbered(schedule.treatment.code)}", schedule.end_of_treatment.code]
    if schedule.follow_up is not None and schedule.follow_up.visits:
        parts.append(numbered(schedule.follow_up.code))
    # An assessment whose first visit falls after the plan's end makes no code at all.
    parts += [
        f"assessment {numbered(entry.code)}" for entry in schedule.assessments if visit_code(entry.code, 1) in planned
    ]
    if schedule.unscheduled.allowed:
        parts.append(f"unscheduled {schedule.unscheduled.code}")
    return frozenset(planned), ", ".join(parts)


def _form_visit_checks(protocol: Protocol) -> list[str]:
    """A visit form names only visits the schedule makes: a code it never makes (C13 of twelve
    cycles) would be a form nobody is ever asked to fill, so it is refused rather than ignored."""
    named = [(index, form) for index, form in enumerate(protocol.forms) if form.kind == "visit" and form.visits]
    if not named:
        return []
    schedule = protocol.schedule
    planned, described = _schedule_codes(schedule)
    unscheduled = schedule.unscheduled.code if schedule.unscheduled.allowed else None
    errors = []
    for index, form in named:
        for position, code in enumerate(form.visits):
            at = f"forms[{index}].visits[{position}]"
            if code.endswith("*"):
                prefix = code[:-1]
                # An unscheduled pattern makes codes from 1 up, so U* carries every unscheduled visit.
                if not any(visit.startswith(prefix) for visit in planned) and not (
                    unscheduled is not None
                    and any(visit_code(unscheduled, n).startswith(prefix) for n in range(1, LARGEST_VISIT_NUMBER + 1))
                ):
                    errors.append(f"{at}: {code} matches no visit of the schedule ({described})")
            elif code not in planned and not (unscheduled is not None and _pattern_makes(unscheduled, code)):
                errors.append(f"{at}: {code} is not a visit of the schedule ({described})")
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
        if protocol.blinded and set(arm.kit_contents) != set(protocol.kit_types):
            # Blinded: every participant gets a kit of every type, so the kits hide the arm.
            errors.append(
                f"arms[{index}].kit_contents: must name exactly the kit types {list(protocol.kit_types)}"
                f" (names {sorted(arm.kit_contents)})"
            )
        unknown = sorted(set(arm.kit_contents) - set(protocol.kit_types))
        if not protocol.blinded and unknown:
            # Open label: an arm may get no kit of a type (observation gets none at all).
            errors.append(f"arms[{index}].kit_contents: {', '.join(unknown)} is not one of kits.types")
    if protocol.kit_types and protocol.blinded:
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
    carried = {spec.kit_type for spec in (dosing.infusion, dosing.tablet) if spec is not None}
    for index, kit_type in enumerate(protocol.kit_types):
        if kit_type not in carried:
            errors.append(
                f"kits.types[{index}]: {kit_type} is carried by neither dosing.infusion nor dosing.tablet (kit_type)"
            )
    infusion = dosing.infusion
    if infusion is not None and infusion.minimum_weight_kg >= infusion.maximum_weight_kg:
        errors.append("dosing.infusion.maximum_weight_kg: must be above minimum_weight_kg")
    gates = dosing.safety
    errors += _dosing_form_checks(protocol)
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
    errors += _form_visit_checks(protocol)
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
        raise ProtocolError(errors, cross_checked=False) from None
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
