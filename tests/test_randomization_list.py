"""The randomization list: permuted blocks from a seed, re-derivable, balanced, immutable once locked."""

from collections import Counter

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from randomization import generator, services
from randomization.models import RandomizationList, Slot
from tests import factories
from trialsite.exceptions import PasswordIncorrect, ReasonRequired

ARMS = [("TOC", 1), ("ASA", 1), ("COMBO", 1), ("PBO", 1)]


def slots_for(seed, size=200, strata=("NT", "SH")):
    return generator.generate(seed=seed, strata=list(strata), size=size, arms=ARMS, block_sizes=[4, 8])


def complete_blocks(slots):
    blocks = {}
    for slot in slots:
        blocks.setdefault((slot.stratum, slot.block), []).append(slot)
    return [block for block in blocks.values() if len(block) == block[0].block_size]


def test_block_sizes_come_only_from_the_allowed_set_and_both_are_used():
    sizes = {slot.block_size for slot in slots_for("seed-1")}
    assert sizes == {4, 8}


def test_every_complete_block_is_exactly_balanced():
    for block in complete_blocks(slots_for("seed-2", size=500)):
        counts = Counter(slot.arm for slot in block)
        assert set(counts) == {"TOC", "ASA", "COMBO", "PBO"}
        assert len(set(counts.values())) == 1


def test_the_ratio_is_1_1_1_1_in_each_stratum_after_each_complete_block():
    for stratum in ("NT", "SH"):
        running = Counter()
        stratum_slots = [slot for slot in slots_for("seed-3", size=300) if slot.stratum == stratum]
        for index, slot in enumerate(stratum_slots):
            running[slot.arm] += 1
            last_of_block = index + 1 == len(stratum_slots) or stratum_slots[index + 1].block != slot.block
            if (
                last_of_block
                and sum(running.values()) % 4 == 0
                and (index + 1 < len(stratum_slots) or len(stratum_slots) % slot.block_size == 0)
            ):
                assert len(set(running.values())) == 1, (stratum, index, running)


def test_the_same_seed_gives_the_same_list_and_another_seed_another():
    assert slots_for("same") == slots_for("same")
    assert [slot.arm for slot in slots_for("same")] != [slot.arm for slot in slots_for("other")]
    # Strata are independent streams: adding a stratum does not change another's slots.
    assert [s for s in slots_for("same", strata=("NT",))] == [s for s in slots_for("same") if s.stratum == "NT"]


def test_the_stream_draws_are_unbiased_and_within_range():
    stream = generator.StratumStream("seed", "NT")
    draws = Counter(stream.below(3) for _ in range(30_000))
    assert set(draws) == {0, 1, 2}
    assert all(abs(count - 10_000) < 500 for count in draws.values())


def test_the_auditor_command_prints_the_list_the_application_generates(trial, capsys):
    call_command("randomization_list", "--seed", "audit-me", "--size", "12")
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "stratum,sequence,block,block_size,arm"
    assert len(printed.splitlines()) == 13
    expected = generator.generate(seed="audit-me", strata=["NT"], size=12, arms=ARMS, block_sizes=[4, 8])
    assert printed == generator.as_csv(expected)
    call_command("randomization_list", "--seed", "audit-me", "--size", "12", "--strata", "NT,SH")
    assert len(capsys.readouterr().out.splitlines()) == 25


@pytest.fixture
def statistician(cast):
    return cast.statistician


def test_a_generated_list_stores_its_digest_and_matches_the_command(trial, statistician):
    randomization_list = services.list_generate(
        trial=trial, seed="s3cret", slots_per_stratum=16, created_by=statistician
    )
    # The cast works at two sites, so the trial has two strata.
    slots = generator.generate(seed="s3cret", strata=["NT", "SH"], size=16, arms=ARMS, block_sizes=[4, 8])
    assert randomization_list.sha256 == generator.digest(slots)
    stored = list(
        randomization_list.slots.order_by("stratum", "sequence").values_list("stratum", "sequence", "arm__code")
    )
    assert stored == [(slot.stratum, slot.sequence, slot.arm) for slot in slots]


def test_a_second_list_needs_a_reason(trial, statistician):
    services.list_generate(trial=trial, seed="one", slots_per_stratum=8, created_by=statistician)
    with pytest.raises(ReasonRequired):
        services.list_generate(trial=trial, seed="two", slots_per_stratum=8, created_by=statistician)
    second = services.list_generate(
        trial=trial, seed="two", slots_per_stratum=8, created_by=statistician, reason="more participants at the site"
    )
    assert second.version == 2


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("NT,1,1,4,TOC\nNT,2,1,4,XYZ\n", "Line 3: unknown arm XYZ"),
        ("NT,1,1,4,TOC\nMARS,2,1,4,ASA\n", "Line 3: unknown stratum MARS"),
        ("NT,1,1,4,TOC\nNT,1,1,4,ASA\n", "Line 3: duplicate sequence 1 in NT"),
        ("NT,1,1,4,TOC\nNT,3,1,4,ASA\n", "sequence 2 is missing"),
        ("NT,1,1,4,=cmd|' /C calc'!A0\n", "Line 2: a cell starts with a formula character"),
        ("NT,1,1,4\n", "Line 2: expected 5 columns"),
    ],
)
def test_an_imported_csv_is_refused_with_the_line_of_the_problem(trial, statistician, rows, message):
    with pytest.raises(services.InvalidList, match=message):
        services.list_import(
            trial=trial, csv_text="stratum,sequence,block,block_size,arm\n" + rows, created_by=statistician
        )
    assert not RandomizationList.objects.exists()


def test_a_good_csv_imports(trial, statistician):
    csv_text = generator.as_csv(slots_for("external", size=8, strata=("NT",)))
    imported = services.list_import(trial=trial, csv_text=csv_text, created_by=statistician)
    assert imported.slots.count() == 8
    assert imported.source == RandomizationList.Source.IMPORTED


def test_locking_needs_the_password_and_a_locked_list_cannot_change_in_the_database(trial, statistician):
    randomization_list = services.list_generate(trial=trial, seed="lock", slots_per_stratum=8, created_by=statistician)
    with pytest.raises(PasswordIncorrect):
        services.list_lock(randomization_list=randomization_list, locked_by=statistician, password="nope")
    services.list_lock(randomization_list=randomization_list, locked_by=statistician, password=factories.PASSWORD)
    statements = [
        "UPDATE randomization_slot SET arm_id = (SELECT min(id) FROM trialsite_arm) WHERE sequence = 1",
        "DELETE FROM randomization_slot",
        "UPDATE randomization_randomizationlist SET sha256 = 'forged'",
        "DELETE FROM randomization_randomizationlist",
        # Appending a slot would add an allocation the list's hash never covered.
        "INSERT INTO randomization_slot (randomization_list_id, stratum, site_id, sequence, block, block_size, arm_id) "
        "SELECT randomization_list_id, stratum, site_id, 999, block, block_size, arm_id "
        "FROM randomization_slot WHERE sequence = 1 LIMIT 1",
    ]
    for statement in statements:
        with pytest.raises(DatabaseError, match="locked"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert Slot.objects.filter(randomization_list=randomization_list).count() == 16
