"""`load_demo` gives every loaded trial its demo, from its protocol alone: a locked list, kits at
its first site when it has kit types, participants at each stage its protocol has (a PI's
signature only where asked), and a second run adds nothing to any trial."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command

from dosing.models import Kit, KitStatus, Shipment
from enrollment.models import Participant, ParticipantStatus, Screening
from randomization.models import RandomizationList, Slot
from schedules.models import VisitKind, VisitStatus
from trialsite.protocol import load_protocol

PROTOCOLS = sorted((Path(settings.BASE_DIR) / "protocols").glob("*.toml"))
NOW = datetime.datetime(2026, 11, 21, 2, 0, tzinfo=datetime.UTC)


@pytest.fixture
def trials(db, settings):
    settings.DEBUG = True
    assert len(PROTOCOLS) >= 2, "the demo is checked in two trials unlike each other"
    with time_machine.travel(NOW, tick=False):
        yield [load_protocol(path) for path in PROTOCOLS]


def load_demo() -> str:
    out = io.StringIO()
    call_command("load_demo", stdout=out)
    return out.getvalue()


def counts(trial) -> dict:
    return {
        "lists": RandomizationList.objects.filter(trial=trial).count(),
        "kits": Kit.objects.filter(trial=trial).count(),
        "shipments": Shipment.objects.filter(site__trial=trial).count(),
        "screenings": Screening.objects.filter(site__trial=trial).count(),
        "participants": Participant.objects.filter(site__trial=trial).count(),
    }


def test_every_loaded_trial_gets_its_demo_once(trials, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        output = load_demo()
    for trial in trials:
        protocol = trial.protocol
        site = trial.sites.filter(staff_roles__user__username="coordinator").get()
        assert f"demo data in {trial.nct_id} at {site.code}:" in output
        active = RandomizationList.objects.get(trial=trial, is_active=True)
        assert active.locked_at and active.seed.startswith("DEMO-ONLY-") and active.seed in output
        if protocol.kit_types:
            at_site = Kit.objects.filter(site=site).exclude(status=KitStatus.SHIPPED)
            assert set(at_site.values_list("kit_type", flat=True)) == set(protocol.kit_types)
            assert not Shipment.objects.filter(site=site, received_at__isnull=True).exists()
        else:
            assert not Kit.objects.filter(trial=trial).exists()
        participants = Participant.objects.filter(site=site)
        signature = protocol.randomization.require_eligibility_signature
        # One ready to randomize, one randomized, and one waiting for the PI only where the PI signs.
        assert participants.count() == (3 if signature else 2)
        enrolled = participants.filter(status=ParticipantStatus.ENROLLED)
        assert enrolled.count() == (2 if signature else 1)
        if signature:
            assert enrolled.filter(eligibility_signature__isnull=True).count() == 1
        randomized = participants.get(status=ParticipantStatus.RANDOMIZED)
        first_dose = randomized.visits.filter(kind=VisitKind.DOSING).order_by("sequence").first()
        assert first_dose.status == VisitStatus.COMPLETED
        assert randomized.randomization_number in output
        arm_kits = Slot.objects.get(participant=randomized).arm.kit_contents
        assert sorted(first_dose.kits.values_list("kit_type", flat=True)) == sorted(arm_kits)
        # The screen failure answered the protocol's first exclusion criterion, and says so in its words.
        failed_by = next(c for c in protocol.eligibility.criteria if c.kind == "exclusion")
        failure = Screening.objects.get(site=site, hospital_record_number="DEMO0004")
        assert not hasattr(failure, "participant") or failure.participant is None
        assert failed_by.code in output and failed_by.text.lower() in output.lower()

    before = {trial.pk: counts(trial) for trial in trials}
    again = load_demo()
    assert again.count("demo data already loaded: nothing added") == len(trials)
    assert {trial.pk: counts(trial) for trial in trials} == before
