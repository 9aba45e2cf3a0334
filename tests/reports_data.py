"""A small trial with every kind of person the reports count, at two sites, with a locked
randomization list whose slots carry the arms (written through the ORM: the capability under test
is reporting, not randomization)."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field

from enrollment.models import Consent, EligibilityAnswer, Outcome, Participant, ParticipantStatus, Screening, Withdrawal
from randomization.models import RandomizationList, Slot
from tests import factories
from trialsite.audit import audit_context
from trialsite.models import Arm

UTC = datetime.UTC
ARM_WORDS = ["TOC", "ASA", "COMBO", "PBO", "Tocilizumab", "Aspirin", "Placebo"]


@dataclass
class TrialData:
    randomized: list[Participant] = field(default_factory=list)
    arms: dict[str, str] = field(default_factory=dict)  # randomization number -> arm code
    expected: dict = field(default_factory=dict)


def make_list(trial, sites, *, by) -> RandomizationList:
    arms = list(Arm.objects.filter(trial=trial).order_by("order"))
    with audit_context(actor=by, reason="test randomization list"):
        randomization_list = RandomizationList.objects.create(
            trial=trial,
            version=1,
            source=RandomizationList.Source.GENERATED,
            seed="test-seed",
            block_sizes=[4],
            slots_per_stratum=8,
            sha256=hashlib.sha256(b"test").hexdigest(),
            created_by=by,
        )
        for site in sites:
            for sequence in range(1, 9):
                Slot.objects.create(
                    randomization_list=randomization_list,
                    stratum=site.code,
                    site=site,
                    sequence=sequence,
                    block=(sequence - 1) // 4 + 1,
                    block_size=4,
                    arm=arms[(sequence - 1) % 4],
                )
        RandomizationList.objects.filter(pk=randomization_list.pk).update(
            locked_at=datetime.datetime(2026, 8, 1, tzinfo=UTC), locked_by=by, is_active=True
        )
    return randomization_list


def randomize(participant: Participant, *, by, when: datetime.datetime) -> str:
    """Take the next free slot of the participant's site, as the randomization service would."""
    with audit_context(actor=by, reason="test randomization"):
        slot = (
            Slot.objects.filter(site=participant.site, participant__isnull=True)
            .order_by("sequence")
            .select_related("arm")
            .first()
        )
        site = participant.site
        site.last_randomization_number += 1
        site.save(update_fields=["last_randomization_number"])
        number = f"{site.code}-{site.last_randomization_number:04d}"
        Participant.objects.filter(pk=participant.pk).update(
            randomization_number=number, randomized_at=when, status=ParticipantStatus.RANDOMIZED
        )
        Slot.objects.filter(pk=slot.pk).update(participant=participant, allocated_at=when)
    participant.refresh_from_db()
    return slot.arm.code


def fail_screening(site, *, by, reasons: list[str], consented: bool = True) -> Screening:
    screening = factories.make_screening(site, by=by, eligible=False)
    criteria = {criterion.code: criterion.text for criterion in site.trial.protocol.eligibility.criteria}
    with audit_context(actor=by, reason="test screen failure"):
        Screening.objects.filter(pk=screening.pk).update(
            reasons=[{"code": code, "text": criteria[code]} for code in reasons]
        )
        if not consented:
            Consent.objects.filter(screening=screening).delete()
    return screening


def incomplete_screening(site, *, by) -> Screening:
    screening = factories.make_screening(site, by=by)
    with audit_context(actor=by, reason="test incomplete screening"):
        Screening.objects.filter(pk=screening.pk).update(outcome=Outcome.INCOMPLETE)
        EligibilityAnswer.objects.filter(screening=screening, criterion_code="EX3").update(answer=None)
    return screening


def build(trial, site, other_site, cast) -> TrialData:
    """Nantong: 3 screen failures (one failing two criteria, one without consent), 1 incomplete,
    1 eligible never enrolled, 1 enrolled not randomized, 8 randomized (1 withdrawn, 1 completed).
    Shanghai: 1 screen failure and 2 randomized."""
    data = TrialData()
    coordinator, other = cast.coordinator, cast.other_coordinator
    fail_screening(site, by=coordinator, reasons=["EX1", "EX2"])
    fail_screening(site, by=coordinator, reasons=["EX1"])
    fail_screening(site, by=coordinator, reasons=["IN2"], consented=False)
    incomplete_screening(site, by=coordinator)
    factories.make_screening(site, by=coordinator)
    factories.make_participant(site, by=coordinator)
    fail_screening(other_site, by=other, reasons=["EX3"])
    make_list(trial, [site, other_site], by=cast.statistician)
    months = [
        datetime.datetime(2026, 9, 10, 2, tzinfo=UTC),
        datetime.datetime(2026, 9, 20, 2, tzinfo=UTC),
        datetime.datetime(2026, 11, 3, 2, tzinfo=UTC),
    ]
    for index in range(8):
        participant = factories.make_participant(site, by=coordinator)
        data.arms[randomize(participant, by=coordinator, when=months[index % 3])] = None
        data.randomized.append(participant)
    for index in range(2):
        participant = factories.make_participant(other_site, by=other)
        randomize(participant, by=other, when=months[index])
        data.randomized.append(participant)
    data.arms = {
        participant.randomization_number: participant.slot.arm.code
        for participant in Participant.objects.filter(randomization_number__isnull=False).select_related("slot__arm")
    }
    withdrawn, completed = data.randomized[0], data.randomized[1]
    with audit_context(actor=coordinator, reason="test withdrawal"):
        Withdrawal.objects.create(
            participant=withdrawn,
            site=site,
            withdrawn_on=datetime.date(2026, 11, 20),
            reason="moved away",
            recorded_by=coordinator,
        )
        Participant.objects.filter(pk=withdrawn.pk).update(status=ParticipantStatus.WITHDRAWN)
        Participant.objects.filter(pk=completed.pk).update(status=ParticipantStatus.COMPLETED)
    data.expected = {
        "NT": {
            "screened": 14,
            "eligible": 10,
            "screen_failures": 3,
            "incomplete": 1,
            "consented": 13,
            "enrolled": 9,
            "randomized": 8,
            "on_treatment": 6,
            "completed": 1,
            "withdrawn": 1,
            "died": 0,
        },
        "SH": {
            "screened": 3,
            "eligible": 2,
            "screen_failures": 1,
            "incomplete": 0,
            "consented": 3,
            "enrolled": 2,
            "randomized": 2,
            "on_treatment": 2,
            "completed": 0,
            "withdrawn": 0,
            "died": 0,
        },
    }
    return data
