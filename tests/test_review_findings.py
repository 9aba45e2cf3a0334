"""Findings of the review of the changes since c56328a (safety deaths, SUSARs, the analysis
package, the subject key), each pinned by a test that failed before its fix."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
import time_machine
from django.db import transaction

from enrollment.models import next_subject_key
from safety import services
from safety.models import AdverseEvent, Death
from tests import dosing_factories, factories
from tests.test_races import GIVE_UP_AFTER, Racer, until_finished_or_waiting_on_a_lock
from trialsite.exceptions import TrialRuleError

pytestmark = pytest.mark.django_db

DAY0 = datetime.date(2026, 11, 3)
DIED_ON = datetime.date(2026, 12, 10)
NOW = datetime.datetime(2026, 12, 20, 9, 0, tzinfo=datetime.UTC)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def participant(frozen, cast, site):
    return dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)


def fatal() -> services.AeDetails:
    return services.AeDetails(
        term="sepsis",
        grade=5,
        onset_date=datetime.date(2026, 12, 8),
        outcome="fatal",
        serious=True,
        seriousness=("death",),
        awareness_at=NOW - datetime.timedelta(hours=2),
        died_on=DIED_ON,
        death_cause="Septic shock",
    )


def test_another_event_cannot_resolve_after_the_participants_death(participant, cast):
    """An event still open at the death stays ongoing at death; a recovery dated after the death
    is a data error the analysis package would carry (AE durations past the date of death)."""
    nausea = services.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=services.AeDetails(term="nausea", grade=1, onset_date=datetime.date(2026, 12, 1)),
    )
    services.ae_record(participant=participant, recorded_by=cast.coordinator, details=fatal())
    assert Death.objects.filter(participant=participant).exists()
    with pytest.raises(TrialRuleError) as refused:
        services.ae_resolve(
            event=nausea,
            recorded_by=cast.coordinator,
            resolution_date=DIED_ON + datetime.timedelta(days=2),
            outcome="recovered",
        )
    assert refused.value.field == "resolution_date"
    assert AdverseEvent.objects.get(pk=nausea.pk).resolution_date is None
    # On or before the day of death it may still resolve.
    services.ae_resolve(event=nausea, recorded_by=cast.coordinator, resolution_date=DIED_ON, outcome="recovered")
    assert AdverseEvent.objects.get(pk=nausea.pk).resolution_date == DIED_ON


@pytest.mark.django_db(transaction=True)
def test_a_screening_taking_its_subject_key_does_not_hold_up_the_sites_other_writes(frozen, cast, site):
    """The key is taken under a lock on the site row until the screening's transaction ends. A
    FOR UPDATE lock there conflicts with the FOR KEY SHARE lock PostgreSQL takes on the site row
    for every insert that references the site (an adverse event, a visit, an audit row...), so
    each screening made every write at its site wait; only screenings need to wait for each
    other (test_subject_key's race)."""
    participant = factories.make_participant(site, by=cast.coordinator)
    event = Racer(
        lambda: services.ae_record(
            participant=participant,
            recorded_by=cast.coordinator,
            details=services.AeDetails(term="nausea", grade=1, onset_date=datetime.date(2026, 12, 19)),
        )
    )
    with transaction.atomic():
        assert next_subject_key(site.pk).startswith(site.code)
        event.start()
        until_finished_or_waiting_on_a_lock(event)
        held_up = event.is_alive()
    event.join(GIVE_UP_AFTER)
    assert event.error is None, event.error
    assert not held_up, "the adverse event waited for the screening's lock on the site row"


def test_a_kit_assigned_at_the_last_visit_is_not_dispensed_after_the_death(participant, cast, site):
    """The death ends dosing: the kits assigned at the day's dosing visit and not yet handed out
    go back into the site's stock (as when the lab gates stop treatment), and none is dispensed
    to the participant who died."""
    from dosing import services as dosing_services
    from dosing.models import Kit

    for content in ("active", "placebo"):
        for kit_type in ("TAB", "INF"):
            dosing_factories.make_kit(kit_type=kit_type, content=content, site=site)
    with time_machine.travel(datetime.datetime(2026, 11, 3, 2, tzinfo=datetime.UTC), tick=False):
        dosing_services.visit_record(
            visit=participant.visits.get(code="C1"), actual_date=DAY0, recorded_by=cast.coordinator,
            weight_kg=Decimal("60"), neutrophils=3000, platelets=200000, alt_uln=Decimal("1"), ast_uln=Decimal("1"),
        )  # fmt: skip
    assigned = list(Kit.objects.filter(participant=participant, status=Kit.Status.ASSIGNED))
    assert assigned
    details = fatal()
    details.onset_date = details.died_on = DAY0
    services.ae_record(participant=participant, recorded_by=cast.coordinator, details=details)
    for kit in assigned:
        with pytest.raises(TrialRuleError):
            dosing_services.kit_dispense(kit=kit, label_number=kit.kit_number, dispensed_by=cast.pharmacist)
        kit.refresh_from_db()
        assert (kit.status, kit.participant_id) == (Kit.Status.AT_SITE, None)


def test_kits_assigned_before_a_withdrawal_go_back_to_stock_and_are_not_dispensed_to_them(participant, cast, site):
    from dosing import services as dosing_services
    from dosing.models import Kit
    from enrollment import services as enrollment_services

    for content in ("active", "placebo"):
        for kit_type in ("TAB", "INF"):
            dosing_factories.make_kit(kit_type=kit_type, content=content, site=site)
    with time_machine.travel(datetime.datetime(2026, 11, 3, 2, tzinfo=datetime.UTC), tick=False):
        dosing_services.visit_record(
            visit=participant.visits.get(code="C1"), actual_date=DAY0, recorded_by=cast.coordinator,
            weight_kg=Decimal("60"), neutrophils=3000, platelets=200000, alt_uln=Decimal("1"), ast_uln=Decimal("1"),
        )  # fmt: skip
    assigned = list(
        Kit.objects.filter(participant=participant, status=Kit.Status.ASSIGNED).values_list("pk", flat=True)
    )
    assert assigned
    enrollment_services.participant_withdraw(
        participant=participant, withdrawn_by=cast.coordinator, withdrawn_on=DAY0, reason="consent withdrawn"
    )
    # The kits assigned at C1 went back to the site's stock with the withdrawal.
    assert not Kit.objects.filter(participant=participant).exists()
    released = list(Kit.objects.filter(pk__in=assigned))
    assert released and all(kit.status == Kit.Status.AT_SITE and kit.participant_id is None for kit in released)
    with pytest.raises(TrialRuleError):
        dosing_services.kit_dispense(kit=released[0], label_number=released[0].kit_number, dispensed_by=cast.pharmacist)


@pytest.mark.django_db(transaction=True)
def test_an_event_recorded_while_the_death_is_being_recorded_cannot_start_after_it(frozen, cast, site):
    """The checks against the death (no onset after it) must read it under the participant's
    lock: checked before taking the lock, an event recorded at the same moment as the death
    passed them and was saved, starting after the date of death."""
    participant = dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    late = Racer(
        lambda: services.ae_record(
            participant=participant,
            recorded_by=cast.coordinator,
            details=services.AeDetails(term="nausea", grade=1, onset_date=DIED_ON + datetime.timedelta(days=3)),
        )
    )
    with transaction.atomic():
        services.ae_record(participant=participant, recorded_by=cast.coordinator, details=fatal())
        late.start()
        until_finished_or_waiting_on_a_lock(late)
    late.join(GIVE_UP_AFTER)
    assert isinstance(late.error, TrialRuleError), late.error
    assert late.error.field == "onset_date"
    assert not AdverseEvent.objects.filter(participant=participant, term="nausea").exists()
