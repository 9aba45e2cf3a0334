import itertools
from decimal import Decimal

import pytest
from django.conf import settings
from hypothesis import given
from hypothesis import settings as settings_hypothesis
from hypothesis import strategies as st

from dosing.dose import adherence, infusion_decision, infusion_dose, vial_plan, weight_change_flagged
from dosing.exceptions import VialPlanImpossible, WeightOutOfBounds
from trialsite.protocol import check_file

DOSING = check_file(settings.PROTOCOL_FILE).dosing
INFUSION = DOSING.infusion
SAFETY = DOSING.safety
TENTH_KG = Decimal("0.1")


def dose_for(kg: str):
    return infusion_dose(weight_kg=Decimal(kg), rules=INFUSION)


def test_60_kg_gives_240_mg_in_12_ml_from_three_80_mg_vials_without_waste():
    dose = dose_for("60")
    assert dose.dose_mg == Decimal("240")
    assert dose.concentrate_ml == Decimal("12")
    assert dose.vial_plan == ((80, 3),)
    assert dose.waste_mg == 0
    assert dose.diluted_volume_ml == Decimal("100")


def test_150_kg_gives_600_mg_from_one_400_and_one_200_mg_vial():
    dose = dose_for("150")
    assert dose.dose_mg == Decimal("600")
    assert dose.concentrate_ml == Decimal("30")
    assert dose.vial_plan == ((400, 1), (200, 1))


def test_200_kg_gives_exactly_800_mg():
    dose = dose_for("200")
    assert dose.dose_mg == Decimal("800")
    assert dose.concentrate_ml == Decimal("40")
    assert dose.vial_plan == ((400, 2),)


def test_210_kg_is_capped_at_800_mg():
    assert dose_for("210").dose_mg == Decimal("800")
    assert dose_for("250").dose_mg == Decimal("800")


@pytest.mark.parametrize("kg", ["0", "-1", "-0.1", "250.1", "300", "NaN"])
def test_a_weight_of_zero_negative_or_above_250_kg_is_refused(kg):
    with pytest.raises(WeightOutOfBounds) as refused:
        dose_for(kg)
    assert refused.value.field == "weight_kg"


def test_a_fractional_weight_rounds_the_dose_to_a_tenth_of_a_mg_and_the_volume_to_a_tenth_of_a_ml():
    dose = dose_for("62.3")
    assert dose.dose_mg == Decimal("249.2")
    assert dose.concentrate_ml == Decimal("12.5")
    # 280 mg (200 + 80) wastes 30.8 mg; 4 x 80 = 320 wastes more.
    assert dose.vial_plan == ((200, 1), (80, 1))


def test_on_equal_waste_the_plan_uses_the_fewest_vials():
    # 400 mg: one 400 mg vial, two 200 mg vials or five 80 mg vials all waste nothing.
    assert vial_plan(dose_mg=Decimal("400"), vial_sizes_mg=[80, 200, 400]) == ((400, 1),)
    # 160 mg: 2 x 80 (no waste) beats 1 x 200 (40 mg waste).
    assert vial_plan(dose_mg=Decimal("160"), vial_sizes_mg=[80, 200, 400]) == ((80, 2),)


def test_a_change_of_more_than_10_percent_from_baseline_is_flagged():
    assert not weight_change_flagged(weight_kg=Decimal("66"), baseline_kg=Decimal("60"), rules=INFUSION)
    assert weight_change_flagged(weight_kg=Decimal("66.1"), baseline_kg=Decimal("60"), rules=INFUSION)
    assert not weight_change_flagged(weight_kg=Decimal("54"), baseline_kg=Decimal("60"), rules=INFUSION)
    assert weight_change_flagged(weight_kg=Decimal("53.9"), baseline_kg=Decimal("60"), rules=INFUSION)


def decide(first_dose=False, neutrophils=3000, platelets=200000, alt="1", ast="1"):
    return infusion_decision(
        first_dose=first_dose,
        neutrophils=neutrophils,
        platelets=platelets,
        alt_uln=Decimal(alt),
        ast_uln=Decimal(ast),
        rules=SAFETY,
    )


def test_normal_labs_give_the_dose():
    assert decide().decision == "give"
    assert decide(first_dose=True).decision == "give"


@pytest.mark.parametrize(
    ("labs", "expected"),
    [
        ({"neutrophils": 1999}, "hold"),
        ({"neutrophils": 2000}, "give"),
        ({"platelets": 99999}, "hold"),
        ({"platelets": 100000}, "give"),
        ({"alt": "1.51"}, "hold"),
        ({"ast": "1.6"}, "hold"),
        ({"alt": "1.5", "ast": "1.5"}, "give"),
    ],
)
def test_the_first_dose_is_not_given_below_the_first_dose_thresholds(labs, expected):
    assert decide(first_dose=True, **labs).decision == expected


@pytest.mark.parametrize(
    ("labs", "expected"),
    [
        ({"neutrophils": 1500}, "give"),
        ({"neutrophils": 1001}, "give"),
        ({"neutrophils": 1000}, "hold"),
        ({"neutrophils": 500}, "hold"),
        ({"neutrophils": 499}, "stop"),
        ({"platelets": 100001}, "give"),
        ({"platelets": 100000}, "hold"),
        ({"platelets": 50000}, "hold"),
        ({"platelets": 49999}, "stop"),
        ({"alt": "5"}, "give"),
        ({"alt": "5.01"}, "stop"),
        ({"ast": "6"}, "stop"),
        ({"neutrophils": 700, "platelets": 40000}, "stop"),
    ],
)
def test_later_doses_are_held_or_treatment_stopped_by_the_later_thresholds(labs, expected):
    assert decide(**labs).decision == expected


def test_every_reason_is_recorded_in_words():
    decision = decide(neutrophils=400, alt="6")
    assert decision.decision == "stop"
    assert len(decision.reasons) == 2
    assert "400" in decision.reasons[0] and "500" in decision.reasons[0]


def test_adherence_is_tablets_taken_per_day_elapsed():
    assert adherence(tablets_taken=28, days_elapsed=28) == Decimal("1.00")
    assert adherence(tablets_taken=21, days_elapsed=28) == Decimal("0.75")
    assert adherence(tablets_taken=3, days_elapsed=0) is None


# --- The vial plan at every weight the protocol allows -----------------------------------------

VIAL_SIZES = list(INFUSION.vial_sizes_mg)


def _covering_plans(dose: Decimal, sizes: list[int]) -> list[tuple[Decimal, int, dict[int, int]]]:
    """Every combination that covers `dose`, as (waste, vials, {size: count}); brute force, with
    plain integer ceilings computed independently of dose.py."""
    tenths = int(dose * 10)
    limits = [-(-tenths // (size * 10)) for size in sizes]
    plans = []
    for counts in itertools.product(*[range(limit + 1) for limit in limits]):
        total = sum(size * count for size, count in zip(sizes, counts, strict=True))
        if total * 10 >= tenths:
            plans.append((Decimal(total) - dose, sum(counts), dict(zip(sizes, counts, strict=True))))
    return plans


def _check_plan(dose: Decimal, plan: tuple[tuple[int, int], ...], sizes: list[int]) -> None:
    chosen = {size: 0 for size in sizes} | dict(plan)
    total = sum(size * count for size, count in chosen.items())
    assert total >= dose, f"{plan} does not cover {dose} mg"
    waste, vials = Decimal(total) - dose, sum(chosen.values())
    for other_waste, other_vials, other in _covering_plans(dose, sizes):
        assert other_waste >= waste, f"{other} wastes less than {plan} for {dose} mg"
        if other_waste == waste:
            assert other_vials >= vials, f"{other} uses fewer vials than {plan} for {dose} mg"
    assert [size for size, _count in plan] == sorted((size for size, _count in plan), reverse=True)
    assert all(count > 0 for _size, count in plan)


def test_the_issue_examples_least_waste_first_then_fewest_vials():
    assert dose_for("62.5").dose_mg == Decimal("250")
    assert dose_for("62.5").vial_plan == ((200, 1), (80, 1))
    assert dose_for("75").vial_plan == ((80, 4),)
    assert dose_for("120").vial_plan == ((400, 1), (80, 1))
    # Under 50 kg: the dose is below the 200 mg vial, which old code never tried (Decimal // truncates).
    assert dose_for("47.5").dose_mg == Decimal("190")
    assert dose_for("47.5").vial_plan == ((200, 1),)
    assert dose_for("0.1").vial_plan == ((80, 1),)


def test_every_weight_the_protocol_allows_in_tenth_kg_steps_gets_the_best_plan():
    low = INFUSION.minimum_weight_kg
    high = INFUSION.maximum_weight_kg
    weight, checked = low + TENTH_KG, 0
    while weight <= high:
        dose = dose_for(str(weight))
        _check_plan(dose.dose_mg, dose.vial_plan, VIAL_SIZES)
        assert dose.waste_mg >= 0
        weight += TENTH_KG
        checked += 1
    assert checked == int((high - low) * 10)


@settings_hypothesis(max_examples=300, deadline=None)
@given(
    dose_tenths=st.integers(min_value=1, max_value=12_000),
    sizes=st.lists(st.integers(min_value=10, max_value=500), min_size=1, max_size=3, unique=True),
)
def test_any_dose_and_vial_sizes_get_the_least_waste_then_fewest_vials(dose_tenths, sizes):
    dose = Decimal(dose_tenths) / 10
    _check_plan(dose, vial_plan(dose_mg=dose, vial_sizes_mg=sizes), sizes)


@pytest.mark.parametrize(("dose", "sizes"), [("0", [80]), ("-5", [80]), ("NaN", [80]), ("100", []), ("100", [0])])
def test_an_impossible_vial_plan_is_a_named_refusal_not_an_assert(dose, sizes):
    with pytest.raises(VialPlanImpossible) as refused:
        vial_plan(dose_mg=Decimal(dose), vial_sizes_mg=sizes)
    assert refused.value.field == "weight_kg"
