import datetime
import threading
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.db import connection

from dosing import services
from dosing.exceptions import (
    IllegalKitTransition,
    LabelMismatch,
    NoKitAvailable,
    OutOfWindowReasonRequired,
    VisitNotOpen,
)
from dosing.models import Decision, Kit, KitStatus
from schedules.models import Visit, VisitStatus
from tests import dosing_factories as df
from trialsite.audit import audit_context
from trialsite.models import AuditEvent

DAY0 = datetime.date(2026, 11, 3)
NORMAL_LABS = {"neutrophils": 3000, "platelets": 200000, "alt_uln": Decimal("1"), "ast_uln": Decimal("1")}


@pytest.fixture
def toc(site, cast):
    """A participant in the tocilizumab-alone arm: active infusion, placebo tablets."""
    return df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)


def other_contents(site) -> None:
    """Stock of the contents a TOC participant does not take (placebo infusion, active tablets):
    a site that cannot serve every content of a kit type assigns that type to nobody."""
    df.make_kit(kit_type="INF", content="placebo", site=site)
    df.make_kit(kit_type="TAB", content="active", site=site)


def first_visit(participant) -> Visit:
    return participant.visits.get(code="C1")


def record(visit, user, *, on=DAY0, weight="60", **extra):
    with time_machine.travel(datetime.datetime.combine(on, datetime.time(4, 0), tzinfo=datetime.UTC), tick=False):
        return services.visit_record(
            visit=visit, actual_date=on, recorded_by=user, weight_kg=Decimal(weight), **(NORMAL_LABS | extra)
        )


# --- transitions -----------------------------------------------------------------------------

ALL_PAIRS = [(old, new) for old in KitStatus.values for new in KitStatus.values if old != new]


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS)
def test_every_kit_transition_is_allowed_only_when_the_table_allows_it(old, new, site, toc):
    visit = first_visit(toc)
    given_out = old in ("assigned", "dispensed", "returned")
    kit = df.make_kit(site=site, status=KitStatus.AT_SITE)
    if given_out:
        with audit_context(reason="test setup"):
            Kit.objects.filter(pk=kit.pk).update(status=old, participant=toc, visit=visit)
    else:
        with audit_context(reason="test setup"):
            Kit.objects.filter(pk=kit.pk).update(status=old)
    kit.refresh_from_db()
    extra = {"participant": toc, "visit": visit} if new in ("assigned", "dispensed", "returned") else {}

    with audit_context(reason="test transition"):
        if new in services.KIT_TRANSITIONS[old]:
            services.kit_transition(kit=kit, to=new, **extra)
            kit.refresh_from_db()
            assert kit.status == new
            change = AuditEvent.objects.filter(table_name="dosing_kit", record_pk=str(kit.pk)).last()
            assert change.old_values["status"] == old and change.new_values["status"] == new
        else:
            with pytest.raises(IllegalKitTransition):
                services.kit_transition(kit=kit, to=new, **extra)
            kit.refresh_from_db()
            assert kit.status == old


def test_the_database_refuses_an_unknown_status(site):
    from django.db import IntegrityError, transaction

    kit = df.make_kit(site=site)
    with pytest.raises(IntegrityError), transaction.atomic(), audit_context(reason="sabotage"):
        Kit.objects.filter(pk=kit.pk).update(status="lost")


# --- assignment --------------------------------------------------------------------------------


def test_a_dosing_visit_assigns_one_infusion_and_one_tablet_kit_of_the_arms_contents(site, cast, toc):
    df.make_kit(kit_type="INF", content="placebo", site=site)
    infusion = df.make_kit(kit_type="INF", content="active", site=site)
    df.make_kit(kit_type="TAB", content="active", site=site)
    tablets = df.make_kit(kit_type="TAB", content="placebo", site=site)

    outcome = record(first_visit(toc), cast.coordinator)

    assert outcome.dose.decision == Decision.GIVE
    assert outcome.dose.dose_mg == Decimal("240") and outcome.dose.concentrate_ml == Decimal("12")
    assert {kit.pk for kit in outcome.kits} == {infusion.pk, tablets.pk}
    assert not outcome.no_kit
    infusion.refresh_from_db()
    assert (infusion.status, infusion.participant_id) == (KitStatus.ASSIGNED, toc.pk)


def test_the_earliest_expiry_goes_first_and_a_kit_expiring_before_the_next_window_closes_is_skipped(site, cast, toc):
    c2_window_end = toc.visits.get(code="C2").window_end  # 2026-12-04
    # One packaging lot per label expiry, each holding both infusion contents, as real lots do.
    lots = {
        "PL-ONDAY": DAY0,
        "PL-SHORT": c2_window_end - datetime.timedelta(days=1),
        "PL-EXACT": c2_window_end,
        "PL-LATER": datetime.date(2027, 6, 1),
    }
    for lot, expiry in lots.items():
        df.make_kit(kit_type="INF", site=site, expiry=expiry, number=f"A-{lot}", packaging_lot=lot)
        df.make_kit(kit_type="INF", content="placebo", site=site, expiry=expiry, number=f"P-{lot}", packaging_lot=lot)
    df.make_kit(kit_type="TAB", content="placebo", site=site)
    df.make_kit(kit_type="TAB", content="active", site=site)

    outcome = record(first_visit(toc), cast.coordinator)

    assert "A-PL-EXACT" in {kit.kit_number for kit in outcome.kits}


def test_the_packaging_lot_is_chosen_alike_for_every_content(site, cast, toc):
    # An earlier lot that has lost its placebo infusions is passed over for everyone: given to
    # the active arm only, its label would name the content.
    df.make_kit(kit_type="INF", content="active", site=site, expiry=datetime.date(2027, 1, 25), packaging_lot="OLD")
    later = df.make_kit(
        kit_type="INF", content="active", site=site, expiry=datetime.date(2027, 10, 31), packaging_lot="NEW"
    )
    df.make_kit(kit_type="INF", content="placebo", site=site, expiry=datetime.date(2027, 10, 31), packaging_lot="NEW")
    df.make_kit(kit_type="TAB", content="placebo", site=site)
    df.make_kit(kit_type="TAB", content="active", site=site)

    outcome = record(first_visit(toc), cast.coordinator)

    assert later.pk in {kit.pk for kit in outcome.kits}


def test_at_the_last_dosing_visit_a_kit_must_last_until_the_visit_date(site, cast):
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    last = participant.visits.get(code="C12")
    with audit_context(reason="test: earlier cycles done"):
        participant.visits.filter(sequence__lt=last.sequence).update(status=VisitStatus.COMPLETED, actual_date=DAY0)
    expiry_needed = services.kit_expiry_needed(last)
    # The EOT window closes after C12: that is "the next visit's window".
    assert expiry_needed == participant.visits.get(code="EOT").window_end


def test_no_kit_available_keeps_the_visit_and_tells_only_the_supply_manager_the_content(
    site, cast, toc, django_capture_on_commit_callbacks
):
    cast.supply_manager.email = "supply@example.org"
    cast.supply_manager.save()
    cast.pharmacist.email = "pharmacist@example.org"
    cast.pharmacist.save()
    df.make_kit(kit_type="TAB", content="placebo", site=site)
    df.make_kit(kit_type="TAB", content="active", site=site)
    df.make_kit(kit_type="INF", content="placebo", site=site)  # wrong content for TOC

    with django_capture_on_commit_callbacks(execute=True):
        outcome = record(first_visit(toc), cast.coordinator)

    assert outcome.no_kit
    visit = first_visit(toc)
    assert visit.status == VisitStatus.COMPLETED and visit.dose.decision == Decision.GIVE
    # All or nothing: the tablet kit that was there is not assigned either.
    assert outcome.kits == []
    assert not Kit.objects.filter(status=KitStatus.ASSIGNED).exists()
    assert {tuple(message.to) for message in mail.outbox} == {("supply@example.org",)}
    (shortage,) = [message for message in mail.outbox if "No kit available" in message.subject]
    assert "INF kits, Active: 0 available" in shortage.body
    assert str(NoKitAvailable().message) == "No kit available; the supply manager has been notified."


def test_assigning_again_after_resupply_gives_both_kits(site, cast, toc):
    df.make_kit(kit_type="TAB", content="placebo", site=site)
    other_contents(site)
    outcome = record(first_visit(toc), cast.coordinator)
    assert outcome.no_kit
    infusion = df.make_kit(kit_type="INF", content="active", site=site)

    kits = services.kits_assign(visit=first_visit(toc), assigned_by=cast.pharmacist)

    assert infusion.pk in {kit.pk for kit in kits}
    assert len(kits) == 2


def test_no_kit_raised_from_a_direct_assignment_names_no_content(site, cast, toc):
    outcome = record(first_visit(toc), cast.coordinator)
    assert outcome.no_kit
    with pytest.raises(NoKitAvailable) as refused:
        services.kits_assign(visit=first_visit(toc), assigned_by=cast.pharmacist)
    assert "active" not in str(refused.value).lower() and "placebo" not in str(refused.value).lower()


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_assignments_never_share_a_kit(site, cast):
    participants = [df.randomized_participant(site, arm_code="COMBO", by=cast.coordinator, day0=DAY0) for _ in range(2)]
    visits = []
    for participant in participants:
        visit = first_visit(participant)
        with audit_context(reason="test: visit done, kits not yet assigned"):
            Visit.objects.filter(pk=visit.pk).update(status=VisitStatus.COMPLETED, actual_date=DAY0)
        visits.append(visit)
    for _ in range(2):
        df.make_kit(kit_type="INF", content="active", site=site)
        df.make_kit(kit_type="TAB", content="active", site=site)
    # The placebo kits are there too: a site that cannot serve every content assigns nothing.
    df.make_kit(kit_type="INF", content="placebo", site=site)
    df.make_kit(kit_type="TAB", content="placebo", site=site)
    barrier = threading.Barrier(2)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def assign(index: int) -> None:
        try:
            barrier.wait()
            kits = services.kits_assign(visit=visits[index], assigned_by=cast.pharmacist)
            results[index] = [kit.pk for kit in kits]
        except BaseException as error:  # reported to the main thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=assign, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert len(results[0]) == len(results[1]) == 2
    assert not set(results[0]) & set(results[1])
    assert Kit.objects.filter(status=KitStatus.ASSIGNED).count() == 4


# --- recording ---------------------------------------------------------------------------------


def test_a_visit_outside_the_window_needs_a_reason_and_is_flagged_as_a_deviation(site, cast, toc):
    second = toc.visits.get(code="C2")
    record(first_visit(toc), cast.coordinator)
    late = second.window_end + datetime.timedelta(days=1)

    with pytest.raises(OutOfWindowReasonRequired):
        record(second, cast.coordinator, on=late)

    outcome = record(second, cast.coordinator, on=late, out_of_window_reason="Participant was in hospital")
    assert outcome.visit.is_deviation
    assert outcome.visit.out_of_window_reason == "Participant was in hospital"


def test_a_weight_change_above_10_percent_from_baseline_is_flagged(site, cast, toc):
    record(first_visit(toc), cast.coordinator, weight="60")
    outcome = record(toc.visits.get(code="C2"), cast.coordinator, on=datetime.date(2026, 12, 1), weight="53.5")
    assert outcome.dose.weight_change_flagged
    assert outcome.dose.baseline_weight_kg == Decimal("60")


def test_a_stop_decision_ends_treatment_without_kits_for_every_arm(site, cast, toc):
    df.make_kit(kit_type="INF", site=site)
    df.make_kit(kit_type="TAB", content="placebo", site=site)
    other_contents(site)
    record(first_visit(toc), cast.coordinator)
    df.make_kit(kit_type="INF", site=site)

    outcome = record(toc.visits.get(code="C2"), cast.coordinator, on=datetime.date(2026, 12, 1), neutrophils=400)

    assert outcome.dose.decision == Decision.STOP
    assert outcome.kits == []
    assert toc.visits.get(code="C3").status == VisitStatus.CANCELLED
    assert toc.visits.get(code="EOT").status == VisitStatus.SCHEDULED


def test_a_held_infusion_still_gets_its_tablet_kit(site, cast, toc):
    df.make_kit(kit_type="INF", site=site)
    tablets = df.make_kit(kit_type="TAB", content="placebo", site=site)
    other_contents(site)
    outcome = record(first_visit(toc), cast.coordinator, platelets=90000)
    assert outcome.dose.decision == Decision.HOLD
    assert [kit.pk for kit in outcome.kits] == [tablets.pk]


def test_missed_visits_are_marked_when_the_window_closes_once(site, cast, toc):
    c1 = first_visit(toc)
    assert services.visits_mark_missed(today=c1.window_end) == 0
    assert services.visits_mark_missed(today=c1.window_end + datetime.timedelta(days=1)) == 1
    assert services.visits_mark_missed(today=c1.window_end + datetime.timedelta(days=1)) == 0
    assert first_visit(toc).status == VisitStatus.MISSED


# --- dispensing, returns, quarantine, expiry ---------------------------------------------------


def assigned_kits(site, cast, participant):
    df.make_kit(kit_type="INF", site=site, number="INF-1001")
    df.make_kit(kit_type="TAB", content="placebo", site=site, number="TAB-2001")
    other_contents(site)
    return {kit.kit_type: kit for kit in record(first_visit(participant), cast.coordinator).kits}


def test_a_label_mismatch_is_refused_and_the_kit_stays_assigned(site, cast, toc):
    kits = assigned_kits(site, cast, toc)
    with pytest.raises(LabelMismatch) as refused:
        services.kit_dispense(kit=kits["INF"], label_number="TAB-2001", dispensed_by=cast.pharmacist)
    assert refused.value.field == "label_number"
    kits["INF"].refresh_from_db()
    assert kits["INF"].status == KitStatus.ASSIGNED

    services.kit_dispense(kit=kits["INF"], label_number=" inf-1001 ", dispensed_by=cast.pharmacist)
    kits["INF"].refresh_from_db()
    assert kits["INF"].status == KitStatus.DISPENSED


def test_returned_tablets_are_counted(site, cast, toc):
    kits = assigned_kits(site, cast, toc)
    with time_machine.travel(datetime.datetime(2026, 11, 3, 5, tzinfo=datetime.UTC), tick=False):
        services.kit_dispense(kit=kits["TAB"], label_number="TAB-2001", dispensed_by=cast.pharmacist)
    with time_machine.travel(datetime.datetime(2026, 12, 1, 5, tzinfo=datetime.UTC), tick=False):
        kit = services.kit_return(
            kit=kits["TAB"], returned_by=cast.pharmacist, returned_on=datetime.date(2026, 12, 1), tablets_returned=7
        )
    assert (kit.status, kit.tablets_returned) == (KitStatus.RETURNED, 7)


def test_a_temperature_excursion_quarantines_until_released_or_destroyed(site, cast):
    kept = df.make_kit(site=site)
    lost = df.make_kit(site=site)
    for kit in (kept, lost):
        services.kit_report_excursion(kit=kit, reported_by=cast.pharmacist, description="fridge at 12 °C for 3 h")
    services.kit_release(kit=kept, released_by=cast.supply_manager, reason="stability data cover 3 h")
    services.kit_destroy(kit=lost, destroyed_by=cast.supply_manager, reason="out of stability range")
    kept.refresh_from_db()
    lost.refresh_from_db()
    assert (kept.status, lost.status) == (KitStatus.AT_SITE, KitStatus.DAMAGED)


def test_kits_expire_the_day_after_their_expiry_date_once(site):
    kit = df.make_kit(site=site, expiry=datetime.date(2026, 11, 3))
    assert services.kits_expire(today=datetime.date(2026, 11, 3)) == 0
    assert services.kits_expire(today=datetime.date(2026, 11, 4)) == 1
    assert services.kits_expire(today=datetime.date(2026, 11, 4)) == 0
    kit.refresh_from_db()
    assert kit.status == KitStatus.EXPIRED


def test_a_withdrawn_participants_visits_are_not_marked_missed(site, cast, toc):
    with audit_context(reason="test: withdrawn"):
        type(toc).objects.filter(pk=toc.pk).update(status="withdrawn")
    assert services.visits_mark_missed(today=datetime.date(2027, 1, 1)) == 0


def test_a_withdrawn_participant_gets_no_kit(site, cast, toc):
    df.make_kit(kit_type="INF", site=site)
    df.make_kit(kit_type="TAB", content="placebo", site=site)
    with audit_context(reason="test: visit done"):
        Visit.objects.filter(pk=first_visit(toc).pk).update(status=VisitStatus.COMPLETED, actual_date=DAY0)
        type(toc).objects.filter(pk=toc.pk).update(status="withdrawn")
    with pytest.raises(VisitNotOpen):
        services.kits_assign(visit=first_visit(toc), assigned_by=cast.pharmacist)
    assert not Kit.objects.filter(status=KitStatus.ASSIGNED).exists()
