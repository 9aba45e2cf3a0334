"""Allocation: the next free slot of the stratum, exactly once, under any concurrency; only for
eligible, consented, not-withdrawn, not-yet-randomized participants; blinded everywhere."""

import datetime
import re
import threading
from collections import defaultdict

import pytest
from django.core import mail
from django.db import connection

from enrollment.models import Consent, Outcome, Participant, Screening, Withdrawal
from randomization import services
from randomization.models import Slot, Unblinding
from randomization.selectors import arm_for
from tests import factories
from trialsite.audit import audit_context
from trialsite.exceptions import PasswordIncorrect
from trialsite.models import AuditEvent

ARM_WORDS = re.compile(r"\b(TOC|ASA|COMBO|PBO|Tocilizumab|Aspirin|Placebo)\b", re.IGNORECASE)


@pytest.fixture
def active_list(trial, cast):
    randomization_list = services.list_generate(
        trial=trial, seed="allocation", slots_per_stratum=120, created_by=cast.statistician
    )
    return services.list_lock(
        randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD
    )


def test_randomizing_gives_the_next_slot_a_number_and_a_visit_plan_but_no_arm(active_list, cast, site):
    participant = factories.make_participant(site, by=cast.coordinator)
    services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    participant.refresh_from_db()
    assert participant.randomization_number == "NT-0001"
    assert participant.status == "randomized"
    assert participant.slot.sequence == 1 and participant.slot.stratum == "NT"
    assert participant.visits.count() == 17
    assert arm_for(cast.coordinator, participant) is None
    assert arm_for(cast.statistician, participant) == participant.slot.arm


def test_a_participant_is_randomized_once(active_list, cast, site):
    participant = factories.make_participant(site, by=cast.coordinator)
    services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    with pytest.raises(services.AlreadyRandomized):
        services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    assert Slot.objects.filter(participant=participant).count() == 1


def test_only_eligible_consented_not_withdrawn_participants_are_randomized(active_list, cast, site):
    ineligible = factories.make_participant(site, by=cast.coordinator)
    Screening.objects.filter(pk=ineligible.pk).update(outcome=Outcome.INELIGIBLE)
    with pytest.raises(services.NotEligible):
        services.participant_randomize(participant=ineligible, randomized_by=cast.coordinator)

    late_consent = factories.make_participant(site, by=cast.coordinator)
    with audit_context(reason="consent dated after screening, for the test"):
        Consent.objects.filter(screening_id=late_consent.pk).update(signed_on=datetime.date(2026, 12, 31))
    with pytest.raises(services.NotConsented):
        services.participant_randomize(participant=late_consent, randomized_by=cast.coordinator)

    withdrawn = factories.make_participant(site, by=cast.coordinator)
    with audit_context(actor=cast.coordinator, reason="withdrew"):
        Withdrawal.objects.create(
            participant=withdrawn,
            site=site,
            withdrawn_on=datetime.date(2026, 11, 3),
            reason="moved away",
            recorded_by=cast.coordinator,
        )
    with pytest.raises(services.ParticipantWithdrawn):
        services.participant_randomize(participant=withdrawn, randomized_by=cast.coordinator)
    assert not Slot.objects.filter(participant__isnull=False).exists()


def test_without_a_locked_list_nobody_is_randomized(trial, cast, site):
    services.list_generate(trial=trial, seed="unlocked", slots_per_stratum=8, created_by=cast.statistician)
    participant = factories.make_participant(site, by=cast.coordinator)
    with pytest.raises(services.NoActiveList):
        services.participant_randomize(participant=participant, randomized_by=cast.coordinator)


def test_an_exhausted_stratum_is_refused_and_the_statistician_alerted_without_arms(
    trial, cast, site, django_capture_on_commit_callbacks
):
    cast.statistician.email = "stats@sponsor.example"
    cast.statistician.save()
    small = services.list_generate(trial=trial, seed="tiny", slots_per_stratum=1, created_by=cast.statistician)
    services.list_lock(randomization_list=small, locked_by=cast.statistician, password=factories.PASSWORD)
    services.participant_randomize(
        participant=factories.make_participant(site, by=cast.coordinator), randomized_by=cast.coordinator
    )
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(services.StratumExhausted) as refused:
        services.participant_randomize(
            participant=factories.make_participant(site, by=cast.coordinator), randomized_by=cast.coordinator
        )
    assert not ARM_WORDS.search(str(refused.value.message))
    [alert] = mail.outbox
    assert alert.to == ["stats@sponsor.example"] and "NT" in alert.subject
    assert not ARM_WORDS.search(alert.subject + alert.body)


@pytest.mark.django_db(transaction=True)
def test_200_participants_randomized_from_16_threads_use_every_slot_once_in_order(trial, cast, site, other_site):
    randomization_list = services.list_generate(
        trial=trial, seed="stampede", slots_per_stratum=130, created_by=cast.statistician
    )
    services.list_lock(randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD)
    participants = [
        factories.make_participant(
            site if index % 2 else other_site, by=cast.coordinator if index % 2 else cast.other_coordinator
        )
        for index in range(200)
    ]
    errors = []
    start = threading.Barrier(16)

    def worker(chunk):
        try:
            start.wait()
            for participant in chunk:
                # Each by a coordinator of the participant's site: the audit trigger refuses to
                # credit a change to someone with no role there.
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
    used = Slot.objects.filter(randomization_list=randomization_list, participant__isnull=False)
    assert used.count() == 200
    assert used.values("participant").distinct().count() == 200
    by_stratum = defaultdict(list)
    for stratum, sequence, allocated_at in used.values_list("stratum", "sequence", "allocated_at"):
        by_stratum[stratum].append((sequence, allocated_at))
    for stratum, slots in by_stratum.items():
        sequences = sorted(sequence for sequence, _ in slots)
        assert sequences == list(range(1, len(sequences) + 1)), stratum  # no slot skipped
        in_time_order = [sequence for sequence, _ in sorted(slots, key=lambda pair: pair[1])]
        assert in_time_order == sorted(in_time_order), stratum  # taken in sequence order
    for code in ("NT", "SH"):
        numbers = sorted(Participant.objects.filter(site__code=code).values_list("randomization_number", flat=True))
        assert numbers == [f"{code}-{n:04d}" for n in range(1, 101)]


def test_emergency_unblinding_shows_the_arm_to_that_pi_for_that_participant_only(
    active_list, cast, site, django_capture_on_commit_callbacks
):
    first = factories.make_participant(site, by=cast.coordinator)
    second = factories.make_participant(site, by=cast.coordinator)
    for participant in (first, second):
        services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    with pytest.raises(PasswordIncorrect):
        services.participant_unblind(
            participant=first, unblinded_by=cast.investigator, password="guess", reason="anaphylaxis"
        )
    with django_capture_on_commit_callbacks(execute=True):
        arm = services.participant_unblind(
            participant=first,
            unblinded_by=cast.investigator,
            password=factories.PASSWORD,
            reason="anaphylaxis in the ward",
        )
    first.refresh_from_db()
    assert arm == first.slot.arm
    assert first.unblinded_at is not None
    assert arm_for(cast.investigator, first) == arm
    assert arm_for(cast.investigator, second) is None
    assert arm_for(cast.monitor, first) is None
    unblinding = Unblinding.objects.get()
    assert (unblinding.unblinded_by, unblinding.reason) == (cast.investigator, "anaphylaxis in the ward")
    assert unblinding.sponsor_notified_at is not None
    [notice] = mail.outbox
    assert notice.to == [site.trial.sponsor_contact_email]
    assert first.randomization_number in notice.subject and "anaphylaxis" in notice.body
    assert not ARM_WORDS.search(notice.subject + notice.body)
    assert AuditEvent.objects.filter(
        table_name="randomization_unblinding", actor=cast.investigator, reason__startswith="Emergency unblinding"
    ).exists()


def test_a_coordinator_cannot_break_the_blind(active_list, cast, site):
    from django.http import Http404

    participant = factories.make_participant(site, by=cast.coordinator)
    services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    with pytest.raises(Http404):
        services.participant_unblind(
            participant=participant, unblinded_by=cast.coordinator, password=factories.PASSWORD, reason="curious"
        )
