"""Pure dosing rules: the infusion dose and its vial plan, the weight-change flag, the lab
safety gates and tablet adherence. No database, no arm: the same numbers for every participant,
whatever their kits contain, so the printed preparation reveals nothing."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from django.utils.translation import gettext_lazy as _

from dosing.exceptions import VialPlanImpossible, WeightOutOfBounds
from trialsite.protocol_schema import InfusionSpec, LabLimits, SafetySpec

TENTH = Decimal("0.1")


@dataclass(frozen=True)
class InfusionDose:
    dose_mg: Decimal
    concentrate_ml: Decimal
    # ((vial size mg, count), ...), largest vial first; only sizes used.
    vial_plan: tuple[tuple[int, int], ...]
    diluted_volume_ml: Decimal

    @property
    def vial_total_mg(self) -> int:
        return sum(size * count for size, count in self.vial_plan)

    @property
    def waste_mg(self) -> Decimal:
        return Decimal(self.vial_total_mg) - self.dose_mg


def _decimal(value) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def check_weight(*, weight_kg: Decimal, rules: InfusionSpec) -> Decimal:
    """A weight above the protocol minimum (exclusive) and up to its maximum (inclusive)."""
    weight = _decimal(weight_kg)
    low, high = rules.minimum_weight_kg, rules.maximum_weight_kg
    if not weight.is_finite() or weight <= low or weight > high:
        raise WeightOutOfBounds(
            _("The body weight must be above %(low)s kg and at most %(high)s kg.") % {"low": low, "high": high}
        )
    return weight


def vial_plan(*, dose_mg: Decimal, vial_sizes_mg: list[int]) -> tuple[tuple[int, int], ...]:
    """The vials to open for `dose_mg`: of all combinations whose total covers the dose, the one
    with the least waste (mg left over); among equal waste, the fewest vials; among those, the
    most of the larger vials. Least waste comes first because that is what the protocol's
    examples ask for: 250 mg is 200 + 80 (2 vials, 30 mg wasted), not one 400 mg vial (1 vial,
    150 mg wasted); 300 mg is 4 x 80 (20 mg wasted); 480 mg is 400 + 80 (no waste, 2 vials,
    rather than 200 + 200 + 80). Returns ((size, count), ...), largest vial first, sizes used
    only. Exhaustive: at most ceil(dose / size) of each size is ever worth trying."""
    dose = _decimal(dose_mg)
    try:
        sizes = sorted({int(size) for size in vial_sizes_mg}, reverse=True)
    except (TypeError, ValueError):
        sizes = []
    if not sizes or sizes[-1] <= 0:
        raise VialPlanImpossible(_("The protocol names no usable vial sizes."))
    if not dose.is_finite() or dose <= 0:
        raise VialPlanImpossible(_("A dose must be more than 0 mg to be prepared from vials."))
    # Integer ceiling: Decimal's // truncates toward zero, so -(-dose // size) is not a ceiling.
    ranges = [range(int((dose / size).to_integral_value(rounding=ROUND_CEILING)) + 1) for size in sizes]
    best: tuple | None = None
    for counts in itertools.product(*ranges):
        total = sum(size * count for size, count in zip(sizes, counts, strict=True))
        if total < dose:
            continue
        key = (total - dose, sum(counts), tuple(-count for count in counts))
        if best is None or key < best:
            best = key
    if best is None:  # pragma: no cover - ceil(dose / largest) of the largest vial always covers it
        raise VialPlanImpossible()
    return tuple((size, -negated) for size, negated in zip(sizes, best[2], strict=True) if negated)


def infusion_dose(*, weight_kg: Decimal, rules: InfusionSpec) -> InfusionDose:
    """mg/kg x weight, capped; the concentrate volume at the vial concentration, diluted to the
    protocol's final volume. `rules` is the protocol's `[dosing.infusion]`."""
    weight = check_weight(weight_kg=weight_kg, rules=rules)
    dose = min(weight * rules.mg_per_kg, rules.max_dose_mg)
    dose = dose.quantize(TENTH, rounding=ROUND_HALF_UP)
    concentrate = (dose / rules.concentration_mg_per_ml).quantize(TENTH, rounding=ROUND_HALF_UP)
    return InfusionDose(
        dose_mg=dose,
        concentrate_ml=concentrate,
        vial_plan=vial_plan(dose_mg=dose, vial_sizes_mg=list(rules.vial_sizes_mg)),
        diluted_volume_ml=rules.diluted_volume_ml.quantize(TENTH),
    )


def weight_change_flagged(*, weight_kg: Decimal, baseline_kg: Decimal, rules: InfusionSpec) -> bool:
    """More than the protocol's percentage away from the baseline (first dosing) weight."""
    limit = rules.weight_change_flag_percent
    baseline = _decimal(baseline_kg)
    return abs(_decimal(weight_kg) - baseline) * 100 > limit * baseline


GIVE, HOLD, STOP = "give", "hold", "stop"

LAB_LABELS = {
    "neutrophils": _("Neutrophils"),
    "platelets": _("Platelets"),
    "alt_ast_uln": _("ALT/AST"),
}
LAB_UNITS = {"neutrophils": "/mm³", "platelets": "/mm³", "alt_ast_uln": "× ULN"}  # noqa: RUF001


def _amount(lab: str, value) -> str:
    """90000 -> "90,000 /mm³"; 1.6 -> "1.6 x ULN" (with the multiplication sign): what a lab report would print."""
    number = _decimal(value)
    shown = f"{int(number):,}" if number == number.to_integral_value() and lab != "alt_ast_uln" else f"{number}"
    return f"{shown} {LAB_UNITS.get(lab, '')}".strip()


@dataclass(frozen=True)
class Decision:
    decision: str
    reasons: list[str] = field(default_factory=list)


def _breaches(values: dict[str, Decimal], limits: LabLimits) -> list[str]:
    """Each condition (`<lab>_below`, `<lab>_above`, `<lab>_between` [low, high] inclusive) that
    the values meet, in words."""
    reasons = []
    for key, limit in limits.conditions().items():
        lab, _sep, test = key.rpartition("_")
        value = values.get(lab)
        if value is None:
            continue
        label = LAB_LABELS.get(lab, lab)
        if test == "below" and value < _decimal(limit):
            reasons.append(
                _("%(lab)s %(value)s: below the limit of %(limit)s")
                % {"lab": label, "value": _amount(lab, value), "limit": _amount(lab, limit)}
            )
        elif test == "above" and value > _decimal(limit):
            reasons.append(
                _("%(lab)s %(value)s: above the limit of %(limit)s")
                % {"lab": label, "value": _amount(lab, value), "limit": _amount(lab, limit)}
            )
        elif test == "between" and _decimal(limit[0]) <= value <= _decimal(limit[1]):
            reasons.append(
                _("%(lab)s %(value)s: in the range %(low)s to %(high)s")
                % {
                    "lab": label,
                    "value": _amount(lab, value),
                    "low": _amount(lab, limit[0]),
                    "high": _amount(lab, limit[1]),
                }
            )
    return [str(reason) for reason in reasons]


def infusion_decision(
    *, first_dose: bool, neutrophils: int, platelets: int, alt_uln: Decimal, ast_uln: Decimal, rules: SafetySpec
) -> Decision:
    """Give, hold or stop, from the protocol's `[dosing.safety]`. At the first dose a breach of
    `do_not_give_if` holds the dose; later `stop_if` outranks `hold_if`."""
    values = {
        "neutrophils": _decimal(neutrophils),
        "platelets": _decimal(platelets),
        "alt_ast_uln": max(_decimal(alt_uln), _decimal(ast_uln)),
    }
    if first_dose:
        reasons = _breaches(values, rules.first_dose.do_not_give_if)
        return Decision(HOLD, reasons) if reasons else Decision(GIVE)
    later = rules.later_doses
    stop_reasons = _breaches(values, later.stop_if)
    if stop_reasons:
        return Decision(STOP, stop_reasons)
    hold_reasons = _breaches(values, later.hold_if)
    if hold_reasons:
        return Decision(HOLD, hold_reasons)
    return Decision(GIVE)


def adherence(*, tablets_taken: int, days_elapsed: int) -> Decimal | None:
    """Tablets taken per day elapsed (1.00 = one a day as prescribed); None before a day passed."""
    if days_elapsed <= 0:
        return None
    return (Decimal(tablets_taken) / Decimal(days_elapsed)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
