"""Kits that reveal nothing to a blinded insider: kit lists, packaging lots and label expiries,
shipments, the choice of kit at a visit and stock-outs. Each test names the attack it stops
(the landed code let a blinded user group participants by arm in each of these ways)."""

import datetime
import io
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError

from dosing import kitlist, services
from dosing.exceptions import KitListInvalid, NoKitAvailable
from dosing.models import Kit, KitList, KitStatus, Shipment
from schedules.models import Visit
from tests import dosing_factories as df
from trialsite.audit import audit_context

DAY0 = datetime.date(2026, 11, 3)
AT_VISIT = datetime.datetime(2026, 11, 3, 4, 0, tzinfo=datetime.UTC)
LABS = {"neutrophils": 3000, "platelets": 200000, "alt_uln": Decimal("1"), "ast_uln": Decimal("1")}
LOTS = {
    ("INF", "active"): ("TCZ-24A", datetime.date(2028, 3, 31)),
    ("INF", "placebo"): ("PBI-24A", datetime.date(2028, 6, 30)),
    ("TAB", "active"): ("ASA-24A", datetime.date(2028, 1, 31)),
    ("TAB", "placebo"): ("PBT-24A", datetime.date(2028, 9, 30)),
}


def generate(trial, user, *, packaging_lot="PK-001", kits_per_type=40, seed="kit-seed", lots=LOTS) -> KitList:
    return services.kit_list_generate(
        trial=trial, packaging_lot=packaging_lot, kits_per_type=kits_per_type, lots=lots, created_by=user, seed=seed
    )


def record(visit, user, *, on=DAY0):
    at = datetime.datetime.combine(on, datetime.time(4, 0), tzinfo=datetime.UTC)
    with time_machine.travel(at, tick=False):
        return services.visit_record(visit=visit, actual_date=on, recorded_by=user, weight_kg=Decimal("60"), **LABS)


# --- kit lists -----------------------------------------------------------------------------------


def test_a_generated_list_balances_contents_in_small_blocks_along_random_numbers():
    planned = kitlist.generate(seed="s", packaging_lot="P", kits_per_type=200, lots=LOTS, kit_types=["INF", "TAB"])
    for kit_type in ("INF", "TAB"):
        contents = [kit.content for kit in planned if kit.kit_type == kit_type]
        assert len(contents) == 200
        # Along the number line, never more than half a largest block (4) ahead in one content.
        running = 0
        for content in contents:
            running += 1 if content == "active" else -1
            assert abs(running) <= max(kitlist.BLOCK_SIZES) // 2
        numbers = [int(kit.kit_number) for kit in planned if kit.kit_type == kit_type]
        assert numbers == sorted(numbers) and len(set(numbers)) == 200
        # The numbers are spread over the whole range, not a run a person could count along.
        assert max(numbers) - min(numbers) > 10 * len(numbers)
    # Nothing an import would refuse: no trend, clustering or parity.
    assert not [finding for finding in kitlist.order_findings(planned) if finding.refused]


def test_the_same_seed_gives_the_same_list_and_another_seed_another():
    again = kitlist.generate(seed="s", packaging_lot="P", kits_per_type=20, lots=LOTS, kit_types=["INF", "TAB"])
    assert again == kitlist.generate(seed="s", packaging_lot="P", kits_per_type=20, lots=LOTS, kit_types=["INF", "TAB"])
    other = kitlist.generate(seed="t", packaging_lot="P", kits_per_type=20, lots=LOTS, kit_types=["INF", "TAB"])
    assert {kit.kit_number for kit in other}.isdisjoint({kit.kit_number for kit in again})


def test_a_generated_list_is_stored_in_number_order_with_one_label_expiry_per_packaging_lot(trial, cast):
    kit_list = generate(trial, cast.supply_manager)

    kits = list(Kit.objects.filter(kit_list=kit_list).order_by("id"))
    assert len(kits) == kit_list.kit_count == 80
    # Database ids follow the kit numbers, so an id says no more than the number printed beside it.
    assert [kit.kit_number for kit in kits] == sorted((kit.kit_number for kit in kits), key=kitlist.number_key)
    # Every content shows the packaging lot's earliest true expiry (the aspirin lot's).
    assert {(kit.packaging_lot, kit.label_expiry) for kit in kits} == {("PK-001", datetime.date(2028, 1, 31))}
    assert {kit.lot for kit in kits if (kit.kit_type, kit.content) == ("INF", "active")} == {"TCZ-24A"}


def test_an_auditor_re_derives_a_generated_kit_list_from_its_seed(trial, cast):
    kit_list = generate(trial, cast.supply_manager, kits_per_type=12)
    out, err = io.StringIO(), io.StringIO()
    lots = [f"{t}:{c}:{lot}:{expiry.isoformat()}" for (t, c), (lot, expiry) in LOTS.items()]
    arguments = ["--seed", "kit-seed", "--packaging-lot", "PK-001", "--kits-per-type", "12"]
    for lot in lots:
        arguments += ["--lot", lot]

    call_command("kit_list", *arguments, "--check", str(kit_list.pk), stdout=out, stderr=err)

    assert "matches" in err.getvalue()
    rows = out.getvalue().splitlines()
    assert rows[0] == ",".join(kitlist.CSV_HEADER) and len(rows) == 25
    stored = {(kit.kit_number, kit.content) for kit in Kit.objects.filter(kit_list=kit_list)}
    assert {(row.split(",")[0], row.split(",")[2]) for row in rows[1:]} == stored
    with pytest.raises(CommandError, match="NOT what this seed gives"):
        call_command("kit_list", *arguments[:1], "another-seed", *arguments[2:], "--check", str(kit_list.pk))


def test_the_seed_of_a_generated_list_is_secret_and_fresh_when_none_is_given(trial, cast):
    kit_list = generate(trial, cast.supply_manager, seed="", kits_per_type=4)
    assert len(kit_list.seed) == 64
    assert generate(trial, cast.supply_manager, seed="", kits_per_type=4, packaging_lot="PK-002").seed != kit_list.seed


def csv_of(rows) -> str:
    return "kit_number,kit_type,content,lot,expiry,packaging_lot\n" + "".join(f"{row}\n" for row in rows)


def test_an_import_whose_numbers_run_in_order_by_content_is_refused_with_the_statistic(trial, cast):
    # The attack: 1001-1008 all active, 1009-1016 all placebo.
    rows = [f"{1000 + n},INF,{'active' if n <= 8 else 'placebo'},L{n <= 8},2028-01-31,P1" for n in range(1, 17)]
    with pytest.raises(KitListInvalid) as refused:
        services.kits_import(csv_text=csv_of(rows), imported_by=cast.supply_manager, trial=trial)
    text = " ".join(refused.value.errors)
    assert "rank sum" in text and "z = " in text and "p = " in text
    assert not Kit.objects.exists()


def test_an_import_whose_contents_alternate_with_the_last_digit_is_refused(trial, cast):
    rows = [f"{2000 + n},TAB,{'active' if n % 2 else 'placebo'},L,2028-01-31,P1" for n in range(1, 41)]
    with pytest.raises(KitListInvalid) as refused:
        services.kits_import(csv_text=csv_of(rows), imported_by=cast.supply_manager, trial=trial)
    assert "even or odd last digit" in " ".join(refused.value.errors)


def test_a_packaging_lot_holding_one_content_is_refused(trial, cast):
    planned = kitlist.generate(seed="x", packaging_lot="P", kits_per_type=8, lots=LOTS, kit_types=["INF"])
    rows = [
        f"{kit.kit_number},INF,{kit.content},{kit.lot},{kit.expiry},{'PA' if kit.content == 'active' else 'PB'}"
        for kit in planned
    ]
    with pytest.raises(KitListInvalid) as refused:
        services.kits_import(csv_text=csv_of(rows), imported_by=cast.supply_manager, trial=trial)
    assert "Packaging lot PA, INF kits: 4 active and 0 placebo" in " ".join(refused.value.errors)


def test_a_generated_list_imported_from_its_csv_sorted_by_content_is_stored_in_number_order(trial, cast):
    planned = kitlist.generate(seed="y", packaging_lot="P9", kits_per_type=24, lots=LOTS, kit_types=["INF", "TAB"])
    lines = kitlist.to_csv(planned).splitlines()
    by_content = [lines[0], *sorted(lines[1:], key=lambda line: line.split(",")[2])]

    kits = services.kits_import(csv_text="\n".join(by_content) + "\n", imported_by=cast.supply_manager, trial=trial)

    assert len(kits) == 48
    stored = list(Kit.objects.order_by("id").values_list("kit_number", flat=True))
    assert stored == sorted(stored, key=kitlist.number_key)
    assert set(Kit.objects.values_list("label_expiry", flat=True)) == {datetime.date(2028, 1, 31)}


def test_a_five_column_list_becomes_one_packaging_lot_with_the_earliest_label_expiry(trial, cast):
    text = (
        "kit_number,kit_type,content,lot,expiry\n"
        "A1B2-0001,INF,active,L1,2028-01-31\n"
        "C3D4-0002,INF,placebo,L2,2028-02-29\n"
    )
    services.kits_import(csv_text=text, imported_by=cast.supply_manager, trial=trial)
    assert len(set(Kit.objects.values_list("packaging_lot", "label_expiry"))) == 1


# --- shipments -----------------------------------------------------------------------------------


def test_every_shipment_carries_every_content_alike_from_the_same_packaging_lots(trial, site, cast):
    generate(
        trial,
        cast.supply_manager,
        packaging_lot="PK-EARLY",
        lots={k: (v[0], DAY0.replace(year=2027)) for k, v in LOTS.items()},
    )
    generate(trial, cast.supply_manager, packaging_lot="PK-LATE", seed="second")

    shipment = services.shipment_create(site=site, per_content={"INF": 5, "TAB": 3}, shipped_by=cast.supply_manager)

    kits = list(Kit.objects.filter(shipment=shipment))
    counts = {}
    for kit in kits:
        counts[(kit.kit_type, kit.content, kit.packaging_lot)] = (
            counts.get((kit.kit_type, kit.content, kit.packaging_lot), 0) + 1
        )
    assert counts == {
        ("INF", "active", "PK-EARLY"): 5,
        ("INF", "placebo", "PK-EARLY"): 5,
        ("TAB", "active", "PK-EARLY"): 3,
        ("TAB", "placebo", "PK-EARLY"): 3,
    }
    assert {kit.status for kit in kits} == {KitStatus.SHIPPED}


def test_a_single_content_shipment_cannot_be_asked_for(site, cast, api_for):
    refused = api_for(cast.supply_manager).post(
        "/api/v1/supply/shipments/",
        {"site": "NT", "kit_type": "INF", "content": "active", "quantity": 1},
        format="json",
    )
    assert refused.status_code == 400
    assert "per_content" in refused.json()


def test_resupply_ships_a_fixed_mixed_shipment_whatever_content_ran_low(trial, site, cast):
    generate(trial, cast.supply_manager)
    first = services.resupply_site(site=site)
    # A new site: the target (8 of each content of each type) as its initial shipment.
    assert Kit.objects.filter(shipment=first).count() == 32
    assert services.resupply_site(site=site) is None  # nothing more is needed: idempotent
    with time_machine.travel(AT_VISIT, tick=False):
        services.shipment_receive(shipment=first, received_by=cast.pharmacist)
    # Five active infusions leave the site: below the trigger (4) for that content only.
    with audit_context(reason="test: kits given out"):
        for kit in Kit.objects.filter(site=site, kit_type="INF", content="active")[:5]:
            Kit.objects.filter(pk=kit.pk).update(status=KitStatus.DAMAGED)

    second = services.resupply_site(site=site)

    # The attack: a size of "target minus the lowest content" told the pharmacist, who counts each
    # type's kits, how the contents had split. Now every type comes, 8 of each content.
    shipped = list(Kit.objects.filter(shipment=second).values_list("kit_type", "content"))
    assert sorted(shipped) == sorted(
        [("INF", "active")] * 8 + [("INF", "placebo")] * 8 + [("TAB", "active")] * 8 + [("TAB", "placebo")] * 8
    )


def test_a_depot_too_short_to_resupply_tells_the_supply_manager_and_ships_nothing(
    site, cast, django_capture_on_commit_callbacks
):
    cast.supply_manager.email = "supply@example.org"
    cast.supply_manager.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert services.resupply_site(site=site) is None
    assert not Shipment.objects.exists()
    (message,) = mail.outbox
    assert message.to == ["supply@example.org"] and "depot is short" in message.subject


# --- kit choice and stock-outs ---------------------------------------------------------------------


@pytest.fixture
def stocked_site(trial, site, cast):
    generate(trial, cast.supply_manager, kits_per_type=40)
    shipment = services.shipment_create(site=site, per_content={"INF": 12, "TAB": 12}, shipped_by=cast.supply_manager)
    services.shipment_receive(shipment=shipment, received_by=cast.pharmacist)
    return site


def test_kit_numbers_given_out_within_a_content_do_not_rise_over_time(stocked_site, cast):
    # The attack: the lowest number was handed out first, so a later, lower number named the
    # other content. Ten TOC participants dosed one after another get active infusions in an
    # order that is not the order of their numbers (a sorted order by chance: 1 in 10!).
    given = []
    for _ in range(10):
        participant = df.randomized_participant(stocked_site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
        outcome = record(participant.visits.get(code="C1"), cast.coordinator)
        given.append(next(kit.kit_number for kit in outcome.kits if kit.kit_type == "INF"))
    assert given != sorted(given, key=kitlist.number_key)


@pytest.mark.parametrize(("kit_type", "content"), [("INF", "active"), ("INF", "placebo"), ("TAB", "active")])
def test_a_stock_out_of_one_content_answers_every_participant_alike(stocked_site, cast, api_for, kit_type, content):
    # The attack: a stock-out answered "no kit" only to the participants of the missing content.
    with audit_context(reason="test: stock-out"):
        Kit.objects.filter(site=stocked_site, kit_type=kit_type, content=content).update(status=KitStatus.DAMAGED)
    answers = {}
    for arm in ("TOC", "ASA", "COMBO", "PBO"):
        participant = df.randomized_participant(stocked_site, arm_code=arm, by=cast.coordinator, day0=DAY0)
        visit = participant.visits.get(code="C1")
        with time_machine.travel(AT_VISIT, tick=False):
            response = api_for(cast.coordinator).post(
                f"/api/v1/visits/{visit.pk}/record/",
                {"actual_date": DAY0.isoformat(), "weight_kg": "60", **{k: str(v) for k, v in LABS.items()}},
                format="json",
            )
        body = response.json()
        answers[arm] = (response.status_code, body["no_kit"], body["message"], len(body["visit"]["kits"]))
        assert not Kit.objects.filter(visit=visit).exists()
    assert len(set(answers.values())) == 1, answers
    assert next(iter(answers.values()))[:2] == (200, True)
    assert str(NoKitAvailable().message) == next(iter(answers.values()))[2]


def test_a_visit_waits_for_all_its_kits_and_gets_them_once_the_site_is_resupplied(stocked_site, trial, cast):
    with audit_context(reason="test: stock-out"):
        Kit.objects.filter(site=stocked_site, kit_type="TAB", content="placebo").update(status=KitStatus.DAMAGED)
    participant = df.randomized_participant(stocked_site, arm_code="COMBO", by=cast.coordinator, day0=DAY0)
    visit = participant.visits.get(code="C1")
    assert record(visit, cast.coordinator).no_kit
    resupply = services.resupply_site(site=stocked_site)
    services.shipment_receive(shipment=resupply, received_by=cast.pharmacist)

    kits = services.kits_assign(visit=Visit.objects.get(pk=visit.pk), assigned_by=cast.pharmacist)

    assert sorted((kit.kit_type, kit.content) for kit in Kit.objects.filter(pk__in=[k.pk for k in kits])) == [
        ("INF", "active"),
        ("TAB", "active"),
    ]


def test_the_blinded_kit_api_shows_the_label_not_the_manufacturing_lot_or_true_expiry(stocked_site, cast, api_for):
    kits = api_for(cast.pharmacist).get("/api/v1/kits/").json()["results"]
    assert kits
    for kit in kits:
        assert set(kit) == {"id", "kit_number", "kit_type", "status", "packaging_lot", "label_expiry"}
    lots = {lot for lot, _expiry in LOTS.values()}
    body = api_for(cast.pharmacist).get("/api/v1/kits/").content.decode()
    assert not [lot for lot in lots if lot in body]
    assert "2028-03-31" not in body and "2028-06-30" not in body


def test_the_supply_managers_reason_to_release_or_destroy_a_kit_is_not_shown_to_blinded_readers(site, cast, api_for):
    # A release decision may rest on the content's stability data ("active: stable 3 h at 12 °C").
    kept, lost = df.make_kit(site=site), df.make_kit(site=site, content="placebo")
    for kit in (kept, lost):
        services.kit_report_excursion(kit=kit, reported_by=cast.pharmacist, description="fridge at 12 °C for 3 h")
    services.kit_release(kit=kept, released_by=cast.supply_manager, reason="active lot TCZ-24A stable 3 h at 12 °C")
    services.kit_destroy(kit=lost, destroyed_by=cast.supply_manager, reason="placebo lot PBI-24A out of range")

    for reader in (cast.pharmacist, cast.monitor, cast.investigator):
        pages = [api_for(reader).get(f"/api/v1/audit-events/?table=dosing_kit&pk={kit.pk}") for kit in (kept, lost)]
        bodies = " ".join(page.content.decode() for page in pages)
        assert "TCZ-24A" not in bodies and "PBI-24A" not in bodies and "placebo" not in bodies
    queue = api_for(cast.pharmacist).get("/api/v1/kits/").content.decode()
    assert "TCZ-24A" not in queue and "stable" not in queue
    supply = api_for(cast.supply_manager).get("/api/v1/supply/kits/").json()["results"]
    assert {kit["supply_note"] for kit in supply} >= {"active lot TCZ-24A stable 3 h at 12 °C"}


def test_a_stop_from_repeat_labs_takes_back_the_held_visits_tablets(stocked_site, cast):
    # A review found it: C2 held (tablets assigned), repeat labs in the stop range, and the tablet
    # kit stayed on the pharmacist's list and could be dispensed.
    participant = df.randomized_participant(stocked_site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    record(participant.visits.get(code="C1"), cast.coordinator)
    visit = participant.visits.get(code="C2")
    day = visit.target_date
    with time_machine.travel(datetime.datetime.combine(day, datetime.time(4, 0), tzinfo=datetime.UTC), tick=False):
        held = services.visit_record(
            visit=visit,
            actual_date=day,
            recorded_by=cast.coordinator,
            weight_kg=Decimal("60"),
            **(LABS | {"platelets": 90000}),
        )
        assert held.dose.decision == "hold"
        (tablets,) = held.kits
        services.visit_repeat_labs(
            visit=visit,
            recorded_by=cast.coordinator,
            measured_on=day,
            neutrophils=3000,
            platelets=20000,
            alt_uln=Decimal("1"),
            ast_uln=Decimal("1"),
        )
    tablets.refresh_from_db()
    assert (tablets.status, tablets.participant_id) == (KitStatus.AT_SITE, None)
    with audit_context(reason="test: a stale assignment"):
        Kit.objects.filter(pk=tablets.pk).update(status=KitStatus.ASSIGNED, participant=participant, visit=visit)
    from dosing.exceptions import TreatmentStopped

    with pytest.raises(TreatmentStopped):
        services.kit_dispense(
            kit=Kit.objects.get(pk=tablets.pk), label_number=tablets.kit_number, dispensed_by=cast.pharmacist
        )
