"""Randomized participants and kits for the dosing tests, written directly through the ORM
(inside an audit context) so these tests do not depend on the randomization services."""

from __future__ import annotations

import datetime
import itertools

from django.utils import timezone

from dosing.models import Kit
from enrollment.models import Participant, ParticipantStatus
from randomization.models import RandomizationList, Slot
from schedules.services import visit_schedule_create
from tests import factories
from trialsite.audit import audit_context
from trialsite.models import Site

_numbers = itertools.count(1)


def allocation_list(site: Site, *, by) -> RandomizationList:
    """A new, unlocked list version, made the trial's active list once its slot is written.

    The database refuses slots added to a locked list, so each allocation made here comes with
    its own list version (created, given its one slot, then locked and activated)."""
    previous = RandomizationList.objects.filter(trial=site.trial).order_by("-version").first()
    version = previous.version + 1 if previous else 1
    return RandomizationList.objects.create(
        trial=site.trial,
        version=version,
        source=RandomizationList.Source.IMPORTED,
        slots_per_stratum=100,
        sha256="0" * 64,
        reason="" if version == 1 else "test allocation",
        created_by=by,
    )


def randomized_participant(
    site: Site, *, arm_code: str, by, day0: datetime.date = datetime.date(2026, 11, 3), schedule: bool = True
) -> Participant:
    participant = factories.make_participant(site, by=by)
    number = next(_numbers)
    randomized_at = datetime.datetime.combine(day0, datetime.time(9, 0), tzinfo=site.zone)
    with audit_context(actor=by, reason="test randomization"):
        randomization_list = allocation_list(site, by=by)
        Slot.objects.create(
            randomization_list=randomization_list,
            stratum=site.code,
            site=site,
            sequence=number,
            block=1,
            block_size=4,
            arm=site.trial.arms.get(code=arm_code),
            participant=participant,
            allocated_at=randomized_at,
        )
        RandomizationList.objects.filter(trial=site.trial, is_active=True).update(is_active=False)
        RandomizationList.objects.filter(pk=randomization_list.pk).update(
            locked_at=timezone.now(), locked_by=by, is_active=True
        )
        participant.status = ParticipantStatus.RANDOMIZED
        participant.randomization_number = f"{site.code}-{number:04d}"
        participant.randomized_at = randomized_at
        participant.save(update_fields=["status", "randomization_number", "randomized_at"])
        if schedule:
            visit_schedule_create(participant=participant, day0=day0)
    return participant


def make_kit(
    *,
    kit_type: str = "INF",
    content: str = "active",
    site: Site | None = None,
    status: str = Kit.Status.AT_SITE,
    expiry: datetime.date = datetime.date(2028, 1, 31),
    number: str | None = None,
    lot: str = "LOT-1",
    packaging_lot: str = "PL-1",
    label_expiry: datetime.date | None = None,
    trial=None,
) -> Kit:
    from trialsite.models import Trial

    # A depot kit (no site) belongs to the trial given, or to the first trial loaded.
    trial = trial or (site.trial if site is not None else Trial.objects.order_by("id").first())
    with audit_context(reason="test kit"):
        return Kit.objects.create(
            trial=trial,
            kit_number=number or f"K{next(_numbers):06d}",
            kit_type=kit_type,
            content=content,
            lot=lot,
            expiry=expiry,
            packaging_lot=packaging_lot,
            label_expiry=label_expiry or expiry,
            status=status,
            site=site,
        )
