"""Minimization (Pocock-Simon with a random element): better balance on the factors' margins
than simple randomization, unequal ratios kept, deterministic when probability is 1, every
allocation re-derivable by the auditor from the seed and the history, and exactly one
allocation per participant under concurrency."""

from __future__ import annotations

import random
import re
import statistics
import threading
from collections import Counter
from fractions import Fraction

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from enrollment.models import Participant
from randomization import methods, services
from randomization.models import RandomizationList, Slot
from tests import factories
from trialsite.protocol import load_protocol

ARMS = ("TOC", "ASA", "COMBO", "PBO")
FACTORS = """
[[randomization.factors]]
code = "liver"
label = "Liver metastasis"
levels = ["yes", "no"]
weight = 1

[[randomization.factors]]
code = "ecog"
label = "ECOG performance status"
levels = ["e0", "e1", "e2"]
weight = 2
"""


def minimization_protocol_text(*, probability: str = "0.8", toc_ratio: int = 1) -> str:
    """The trial's own protocol file with [randomization] turned into minimization."""
    text = settings.PROTOCOL_FILE.read_text(encoding="utf-8")
    section = (
        "[randomization]\n"
        'method = "minimization"\n'
        "stratify_by_site = true\n"
        "site_weight = 1\n"
        f"probability = {probability}\n"
        "require_eligibility_signature = true\n" + FACTORS + "\n"
    )
    # The section runs to the next table that is not one of its own.
    text, replaced = re.subn(r"(?ms)^\[randomization\]\n.*?(?=^\[(?!\[?randomization))", section, text)
    assert replaced == 1
    text, replaced = re.subn(r'(code = "TOC"\n(?:[^\[].*\n)*?ratio = )1', rf"\g<1>{toc_ratio}", text, count=1)
    assert replaced == 1
    # The second site the `other_site` fixture adds: a reload drops a site its file does not name.
    text, replaced = re.subn(
        r"(?m)^\[\[arms\]\]",
        '[[sites]]\ncode = "SH"\nname = "Hospital SH"\ntime_zone = "Asia/Shanghai"\n\n[[arms]]',
        text,
        count=1,
    )
    assert replaced == 1
    return text


@pytest.fixture
def minimize(trial, cast, tmp_path):
    """Reload the trial (nobody screened yet) from its protocol file turned into minimization,
    and lock a minimization list; returns a function taking the protocol's options."""

    def load(*, probability="0.8", toc_ratio=1, seed="minimization seed"):
        path = tmp_path / "minimization.toml"
        path.write_text(minimization_protocol_text(probability=probability, toc_ratio=toc_ratio), encoding="utf-8")
        reloaded = load_protocol(path)
        assert reloaded.pk == trial.pk and reloaded.protocol.randomization.method == "minimization"
        created = services.list_generate(trial=reloaded, seed=seed, created_by=cast.statistician)
        return services.list_lock(randomization_list=created, locked_by=cast.statistician, password=factories.PASSWORD)

    return load


def levels_of(number: int) -> dict[str, str]:
    """A fixed, unbalanced mix of factor levels (most participants without liver metastasis)."""
    draw = random.Random(number)
    return {"liver": "yes" if draw.random() < 0.3 else "no", "ecog": draw.choice(["e0", "e0", "e1", "e2"])}


def enrol(site, by, stratification):
    return factories.make_participant(site, by=by, stratification=stratification)


def arm_of(participant) -> str:
    return Slot.objects.select_related("arm").get(participant=participant).arm.code


def margin_imbalance(assignments, ratios=None) -> Fraction:
    """Sum over every factor level of the range of ratio-adjusted counts per arm."""
    ratios = ratios or dict.fromkeys(ARMS, 1)
    counts = Counter()
    for levels, arm in assignments:
        for factor, level in levels.items():
            counts[(factor, level, arm)] += 1
    total = Fraction(0)
    for factor, level in {(factor, level) for levels, _arm in assignments for factor, level in levels.items()}:
        adjusted = [Fraction(counts[(factor, level, arm)], ratios[arm]) for arm in ratios]
        total += max(adjusted) - min(adjusted)
    return total


def test_minimization_balances_the_margins_better_than_simple_randomization(minimize, cast, site, other_site):
    minimize()
    assignments = []
    for number in range(200):
        at_nantong = number % 3 != 0
        levels = levels_of(number)
        participant = enrol(
            site if at_nantong else other_site, cast.coordinator if at_nantong else cast.other_coordinator, levels
        )
        services.participant_randomize(
            participant=participant, randomized_by=cast.coordinator if at_nantong else cast.other_coordinator
        )
        assignments.append(({"site": "NT" if at_nantong else "SH", **levels}, arm_of(participant)))

    minimized = margin_imbalance(assignments)
    simple = [
        margin_imbalance([(levels, draw.choice(ARMS)) for levels, _arm in assignments])
        for draw in (random.Random(run) for run in range(200))
    ]
    # Eight margins (2 sites, 2 liver levels, 3 ECOG levels... and their arms): simple
    # randomization leaves a median total range of about 40 here; minimization a few per margin.
    assert minimized * 3 < statistics.median(simple), (minimized, statistics.median(simple))
    arms = Counter(arm for _levels, arm in assignments)
    assert set(arms) == set(ARMS) and max(arms.values()) - min(arms.values()) <= 4, arms


def test_a_2_to_1_ratio_is_kept_overall_and_on_the_margins(minimize, trial):
    randomization_list = minimize(toc_ratio=2)
    trial.refresh_from_db()
    history = []
    for number in range(300):
        levels = levels_of(number)
        history.append("|".join(["NT" if number % 2 else "SH", f"liver={levels['liver']}", f"ecog={levels['ecog']}"]))
    decisions = [
        decision
        for _n, decision in methods.replay(seed=randomization_list.seed, protocol=trial.protocol, history=history)
    ]
    arms = Counter(decision.arm for decision in decisions)
    # TOC 2/5 of 300 = 120, each other arm 60.
    assert abs(arms["TOC"] - 120) <= 8, arms
    for code in ("ASA", "COMBO", "PBO"):
        assert abs(arms[code] - 60) <= 8, arms
    ratios = {"TOC": 2, "ASA": 1, "COMBO": 1, "PBO": 1}
    assignments = [
        (methods.stratum_levels(stratum), decision.arm) for stratum, decision in zip(history, decisions, strict=False)
    ]
    simple = statistics.median(
        margin_imbalance(
            [(levels, draw.choices(list(ratios), weights=list(ratios.values()))[0]) for levels, _ in assignments],
            ratios,
        )
        for draw in (random.Random(run) for run in range(100))
    )
    assert margin_imbalance(assignments, ratios) * 3 < simple


def test_probability_one_is_deterministic_minimization_as_computed_by_hand():
    """Two arms; history: sex F in A twice, age old in B once. A new old woman:
    - in A: sex F counts A3 B0 (range 3, weight 1), age old A1 B1 (range 0, weight 2): total 3;
    - in B: sex F A2 B1 (range 1), age old A0 B2 (range 2, x2 = 4): total 5.
    A is the minimum, and with probability 1 it is always taken, whatever the seed."""
    counts = {("sex", "F", "A"): 2, ("age", "old", "B"): 1}
    for seed in ("one", "two", "three", "four", "five"):
        decision = methods.minimization_choice(
            seed=seed,
            sequence=4,
            arms=[("A", 1), ("B", 1)],
            weights={"sex": Fraction(1), "age": Fraction(2)},
            probability=Fraction(1),
            levels={"sex": "F", "age": "old"},
            counts=counts,
        )
        assert decision.totals == {"A": 3, "B": 5}
        assert decision.arm == "A" and decision.preferred == "A" and decision.took_preferred


def test_with_probability_below_one_the_other_arm_is_sometimes_taken():
    taken = Counter(
        methods.minimization_choice(
            seed="coin",
            sequence=sequence,
            arms=[("A", 1), ("B", 1)],
            weights={"sex": Fraction(1)},
            probability=Fraction(4, 5),
            levels={"sex": "F"},
            counts={("sex", "F", "A"): 1},
        ).arm
        for sequence in range(1, 1001)
    )
    assert 750 <= taken["B"] <= 850, taken


def test_ratio_adjusted_counts_prefer_the_arm_below_its_share():
    """2:1, history TOC 2, PBO 1 on the level: already balanced (1 and 1 adjusted). Adding to
    TOC gives 3/2 vs 1 (range 1/2); adding to PBO gives 1 vs 2 (range 1): TOC is preferred."""
    decision = methods.minimization_choice(
        seed="ratio",
        sequence=4,
        arms=[("TOC", 2), ("PBO", 1)],
        weights={"site": Fraction(1)},
        probability=Fraction(1),
        levels={"site": "NT"},
        counts={("site", "NT", "TOC"): 2, ("site", "NT", "PBO"): 1},
    )
    assert decision.totals == {"TOC": Fraction(1, 2), "PBO": Fraction(1)} and decision.arm == "TOC"


def test_the_first_allocation_is_drawn_by_ratio():
    first = Counter(
        methods.minimization_choice(
            seed=f"seed {number}",
            sequence=1,
            arms=[("TOC", 2), ("PBO", 1)],
            weights={"site": Fraction(1)},
            probability=Fraction(1),
            levels={"site": "NT"},
            counts={},
        ).arm
        for number in range(600)
    )
    assert 360 <= first["TOC"] <= 440, first


def test_identical_participants_go_to_every_arm_before_any_arm_twice_when_probability_is_one(minimize, cast, site):
    minimize(probability="1")
    participants = [enrol(site, cast.coordinator, {"liver": "yes", "ecog": "e1"}) for _ in range(4)]
    for participant in participants:
        services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    assert sorted(arm_of(participant) for participant in participants) == sorted(ARMS)
    slots = Slot.objects.filter(participant__in=participants).order_by("sequence")
    assert [slot.sequence for slot in slots] == [1, 2, 3, 4]
    assert {slot.stratum for slot in slots} == {"NT|liver=yes|ecog=e1"}
    assert all(slot.block == 0 and slot.block_size == 0 for slot in slots)


def test_a_minimization_list_is_a_seed_without_slots(minimize, cast, trial):
    randomization_list = minimize()
    assert randomization_list.method == RandomizationList.Method.MINIMIZATION
    assert randomization_list.slots_per_stratum == 0 and randomization_list.block_sizes == []
    assert not Slot.objects.filter(randomization_list=randomization_list).exists()
    with pytest.raises(services.InvalidList):
        services.list_import(
            trial=randomization_list.trial,
            csv_text="stratum,sequence,block,block_size,arm\n",
            created_by=cast.statistician,
        )
    with pytest.raises(CommandError, match="minimization"):
        call_command("randomization_list", seed="x", size=4)


@pytest.mark.django_db(transaction=True)
def test_a_locked_minimization_list_takes_only_filled_slots(minimize, cast, site, superuser_sql):
    from django.db import DatabaseError

    from trialsite.audit import audit_context

    randomization_list = minimize()
    with pytest.raises(DatabaseError, match="locked"), audit_context(actor=cast.statistician, reason="test"):
        Slot.objects.create(
            randomization_list=randomization_list,
            stratum="NT|liver=yes|ecog=e0",
            site=site,
            sequence=1,
            block=0,
            block_size=0,
            arm=randomization_list.trial.arms.get(code="TOC"),
        )


def tamper(superuser_sql, slot, arm_code: str) -> None:
    """Give `slot` another arm behind the application's back: as the superuser, with triggers
    off (the locked-list guard refuses it otherwise), as tests/test_audit_chain.py tampers."""
    arm_id = slot.randomization_list.trial.arms.get(code=arm_code).pk
    superuser_sql(
        f"SET session_replication_role = replica; UPDATE randomization_slot SET arm_id = {int(arm_id)} "
        f"WHERE id = {int(slot.pk)}"
    )


def audit() -> str:
    try:
        call_command("randomization_audit")
    except CommandError as error:
        return f"FAILED {error}"
    return "passed"


@pytest.mark.django_db(transaction=True)
def test_the_auditor_re_derives_every_allocation_and_names_the_first_changed_one(
    minimize, cast, site, superuser_sql, capsys
):
    minimize()
    participants = []
    for number in range(12):
        participant = enrol(site, cast.coordinator, levels_of(number))
        services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
        participants.append(participant)
    assert audit() == "passed"
    assert "12 allocations re-derived" in capsys.readouterr().out

    fifth = Slot.objects.select_related("arm", "participant").get(sequence=5)
    other = next(code for code in ARMS if code != fifth.arm.code)
    # Behind the application's back (the locked-list guard refuses it otherwise).
    tamper(superuser_sql, fifth, other)
    result = audit()
    assert result.startswith("FAILED list v1: allocation 5 (")
    assert f"recorded as {other}" in result and f"give {fifth.arm.code}" in result


@pytest.mark.django_db(transaction=True)
def test_the_auditor_also_re_derives_a_permuted_blocks_list(trial, cast, site, superuser_sql):
    created = services.list_generate(trial=trial, seed="blocks", slots_per_stratum=8, created_by=cast.statistician)
    services.list_lock(randomization_list=created, locked_by=cast.statistician, password=factories.PASSWORD)
    assert audit() == "passed"
    slot = Slot.objects.select_related("arm").get(randomization_list=created, stratum="NT", sequence=3)
    other = next(code for code in ARMS if code != slot.arm.code)
    tamper(superuser_sql, slot, other)
    assert audit().startswith("FAILED list v1: slot 3 of stratum NT is recorded as")


@pytest.mark.django_db(transaction=True)
def test_concurrent_allocations_are_made_one_at_a_time_none_lost_or_doubled(minimize, cast, site, other_site):
    randomization_list = minimize()
    participants = [
        enrol(
            site if index % 2 else other_site,
            cast.coordinator if index % 2 else cast.other_coordinator,
            levels_of(index),
        )
        for index in range(64)
    ]
    errors = []
    start = threading.Barrier(16)

    def worker(chunk):
        try:
            start.wait()
            for participant in chunk:
                coordinator = cast.coordinator if participant.site_id == site.pk else cast.other_coordinator
                services.participant_randomize(participant=participant, randomized_by=coordinator)
        except Exception as error:  # collected and asserted below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(participants[number::16],)) for number in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    slots = Slot.objects.filter(randomization_list=randomization_list)
    assert slots.count() == 64
    assert slots.values("participant").distinct().count() == 64
    assert sorted(slots.values_list("sequence", flat=True)) == list(range(1, 65))
    # Allocated one after another: sequence order is time order.
    in_time_order = list(slots.order_by("allocated_at", "sequence").values_list("sequence", flat=True))
    assert in_time_order == sorted(in_time_order)
    assert Participant.objects.filter(randomization_number__isnull=False).count() == 64
    # Each allocation saw every earlier one: the replay from the seed agrees with all of them.
    assert audit() == "passed"


def test_the_list_pages_say_minimization_and_make_a_list_without_slots(cast, client_for, trial, tmp_path):
    path = tmp_path / "minimization.toml"
    path.write_text(minimization_protocol_text(), encoding="utf-8")
    load_protocol(path)
    client = client_for(cast.statistician)
    page = client.get("/randomization/lists/")
    assert page.status_code == 200
    assert b'name="slots_per_stratum"' not in page.content and b"nothing to import" in page.content
    response = client.post("/randomization/lists/", {"action": "generate", "seed": "page seed", "reason": ""})
    assert response.status_code == 302, response.content
    created = RandomizationList.objects.get(trial=trial)
    assert created.method == "minimization" and not created.slots.exists()
    detail = client.get(f"/randomization/lists/{created.pk}/")
    assert b"no slot is generated in advance" in detail.content
    participant = enrol(trial.sites.get(code="NT"), cast.coordinator, {"liver": "yes", "ecog": "e0"})
    created = services.list_lock(randomization_list=created, locked_by=cast.statistician, password=factories.PASSWORD)
    services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    margins = client.get(f"/randomization/lists/{created.pk}/").content.decode()
    assert "Liver metastasis" in margins and "ECOG performance status" in margins and "<td>Site</td>" in margins
    chinese = client.get(f"/randomization/lists/{created.pk}/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "最小化" in chinese and "no slot is generated" not in chinese


def test_the_api_makes_a_minimization_list_from_a_seed_alone(cast, api_for, trial, tmp_path):
    path = tmp_path / "minimization.toml"
    path.write_text(minimization_protocol_text(), encoding="utf-8")
    load_protocol(path)
    answer = api_for(cast.statistician).post("/api/v1/randomization/lists/", {"seed": "api seed"}, format="json")
    assert answer.status_code == 201, answer.content
    assert answer.json()["method"] == "minimization" and answer.json()["slots_per_stratum"] == 0
    assert "seed" not in answer.json()


@pytest.mark.parametrize("role", ["monitor", "investigator"])
def test_a_blinded_audit_reader_sees_no_arm_nor_allocation_number_of_a_minimization_slot(
    minimize, cast, site, api_for, role
):
    from trialsite import selectors as trial_selectors

    minimize()
    for number in range(6):
        participant = enrol(site, cast.coordinator, levels_of(number))
        services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    answer = api_for(cast[role]).get("/api/v1/audit-events/?table=randomization_slot")
    assert answer.status_code == 200, answer.content
    events = answer.json()["results"]
    assert len(events) == 6
    for event in events:
        for secret in ("arm_id", "sequence", "block", "block_size", "randomization_list_id"):
            assert event["new_values"][secret] == trial_selectors.BLINDED_VALUE, (secret, event)


def test_changed_minimization_weights_stop_allocation_from_the_old_list(minimize, cast, site, trial, tmp_path):
    minimize()
    path = tmp_path / "reweighted.toml"
    path.write_text(minimization_protocol_text().replace("weight = 2", "weight = 3"), encoding="utf-8")
    load_protocol(path)
    participant = enrol(site, cast.coordinator, levels_of(1))
    with pytest.raises(methods.MinimizationRulesChanged):
        services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    assert not Slot.objects.filter(participant=participant).exists()
    assert audit().startswith("FAILED list v1: the protocol's minimization rules")


def test_a_draft_minimization_list_made_before_new_weights_cannot_be_locked(minimize, cast, trial, tmp_path):
    minimize()
    trial.refresh_from_db()
    draft = services.list_generate(
        trial=trial, seed="second seed", created_by=cast.statistician, reason="a second list, to lock later"
    )
    path = tmp_path / "reweighted.toml"
    path.write_text(minimization_protocol_text().replace("weight = 2", "weight = 3"), encoding="utf-8")
    load_protocol(path)
    with pytest.raises(services.ListOutdated, match="minimization rules"):
        services.list_lock(randomization_list=draft, locked_by=cast.statistician, password=factories.PASSWORD)
    draft.refresh_from_db()
    assert draft.locked_at is None
