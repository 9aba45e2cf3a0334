"""Findings of the review of the changes since c56328a (safety deaths, SUSARs, the analysis
package, the subject key), each pinned by a test that failed before its fix."""

from __future__ import annotations

import datetime

import pytest
import time_machine

from safety import services
from safety.models import AdverseEvent, Death
from tests import dosing_factories
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
