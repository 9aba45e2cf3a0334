"""A correction of a screening and the randomization of its participant, at the same moment.

Randomization rests on the screening's verdict, and a randomized participant's screening cannot
be changed; so whichever comes second must see what the first did. Each race runs in two real
threads, each with its own database connection. The interleaving that broke it is forced, not
hoped for: the first thread stops just before its write (in a pre_save receiver, or before the
statement itself when the write is a plain UPDATE) and goes on
only once the second thread has either finished (the old code let it through) or is waiting on
a row lock the first holds (the fix), which PostgreSQL reports in pg_blocking_pids()."""

from __future__ import annotations

import datetime
import threading
import time

import pytest
import time_machine
from django.db import connection
from django.db.models.signals import pre_save

from enrollment import services as enrollment_services
from enrollment.models import Outcome, Participant, ProtocolDeviation, Screening
from randomization import services
from randomization.models import Slot
from tests import factories

GIVE_UP_AFTER = 60  # seconds; only ever reached when something hangs


@pytest.fixture(autouse=True)
def _today():
    with time_machine.travel(datetime.datetime(2026, 11, 21, 2, tzinfo=datetime.UTC), tick=False):
        yield


@pytest.fixture
def active_list(trial, cast):
    randomization_list = services.list_generate(
        trial=trial, seed="races", slots_per_stratum=8, created_by=cast.statistician
    )
    return services.list_lock(
        randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD
    )


class Racer(threading.Thread):
    """Runs `work` on its own connection; keeps its result or exception and its backend pid."""

    def __init__(self, work):
        super().__init__(daemon=True)
        self.work = work
        self.result = self.error = self.pid = None
        self.connected = threading.Event()

    def run(self):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                self.pid = cursor.fetchone()[0]
            self.connected.set()
            self.result = self.work()
        except Exception as error:  # asserted by the test
            self.error = error
        finally:
            self.connected.set()
            connection.close()


def until_finished_or_waiting_on_a_lock(racer: Racer) -> None:
    """Return once `racer` has finished or its transaction waits on another's lock. Polls
    PostgreSQL's lock table (there is no event to wait on), with a deadline against a hang."""
    assert racer.connected.wait(GIVE_UP_AFTER)
    deadline = time.monotonic() + GIVE_UP_AFTER
    while racer.is_alive():
        with connection.cursor() as cursor:
            cursor.execute("SELECT cardinality(pg_blocking_pids(%s)) > 0", [racer.pid])
            if cursor.fetchone()[0]:
                return
        assert time.monotonic() < deadline, "the second thread neither finished nor waited on a lock"
        racer.join(0.005)


class PauseBeforeSaving:
    """A pre_save receiver that stops `racer` (only it) before it saves a `model` row, until
    released."""

    def __init__(self, model):
        self.model = model
        self.racer = None
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, sender, **kwargs):
        if threading.current_thread() is self.racer and not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(GIVE_UP_AFTER)

    def __enter__(self):
        pre_save.connect(self, sender=self.model, weak=False, dispatch_uid=f"race-{id(self)}")
        return self

    def __exit__(self, *exc):
        self.release.set()
        pre_save.disconnect(sender=self.model, dispatch_uid=f"race-{id(self)}")


class PauseBeforeStatement(PauseBeforeSaving):
    """Stops `racer` (only it) just before it sends a statement starting with `prefix` (a write
    made in SQL, which no pre_save announces), until released. `wrap` the racer's work: the
    wrapper is installed on the racer's own connection."""

    def __init__(self, prefix: str):
        super().__init__(model=None)
        self.prefix = prefix

    def __call__(self, execute, sql, params, many, context):
        if sql.lstrip().startswith(self.prefix):
            super().__call__(sender=None)
        return execute(sql, params, many, context)

    def wrap(self, work):
        def paused():
            with connection.execute_wrapper(self):
                return work()

        return paused

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release.set()


def correct_to_ineligible(participant, by):
    return lambda: enrollment_services.screening_update(
        screening=Screening(pk=participant.pk),
        changed_by=by,
        reason="liver disease found in the notes",
        answers={"EX1": "yes"},
    )


def randomize(participant, by):
    return lambda: services.participant_randomize(participant=participant, randomized_by=by)


@pytest.mark.django_db(transaction=True)
def test_a_correction_past_its_check_makes_a_concurrent_randomization_wait_and_refuse(active_list, cast, site):
    participant = factories.make_participant(site, by=cast.coordinator)
    with PauseBeforeSaving(Screening) as pause:
        correction = pause.racer = Racer(correct_to_ineligible(participant, cast.coordinator))
        correction.start()
        assert pause.reached.wait(GIVE_UP_AFTER), correction.error
        # The correction has checked "not randomized" and is about to save "ineligible".
        randomization = Racer(randomize(participant, cast.coordinator))
        randomization.start()
        until_finished_or_waiting_on_a_lock(randomization)
        pause.release.set()
        correction.join(GIVE_UP_AFTER)
        randomization.join(GIVE_UP_AFTER)

    assert correction.error is None
    assert isinstance(randomization.error, services.NotEligible), randomization.error
    participant.refresh_from_db()
    assert participant.randomization_number is None
    assert Screening.objects.get(pk=participant.pk).outcome == Outcome.INELIGIBLE
    assert not Slot.objects.filter(participant=participant).exists()


@pytest.mark.django_db(transaction=True)
def test_a_randomization_past_its_check_makes_a_concurrent_correction_wait_then_record_a_deviation(
    active_list, cast, site
):
    participant = factories.make_participant(site, by=cast.coordinator)
    with PauseBeforeStatement("UPDATE randomization_slot") as pause:
        randomization = pause.racer = Racer(pause.wrap(randomize(participant, cast.coordinator)))
        randomization.start()
        assert pause.reached.wait(GIVE_UP_AFTER), randomization.error
        # The randomization has read "eligible" and is about to take its slot.
        correction = Racer(correct_to_ineligible(participant, cast.coordinator))
        correction.start()
        until_finished_or_waiting_on_a_lock(correction)
        pause.release.set()
        randomization.join(GIVE_UP_AFTER)
        correction.join(GIVE_UP_AFTER)

    # The correction waited for the allocation, then saw a randomized participant: corrected,
    # still randomized, and the changed verdict recorded as a protocol deviation.
    assert randomization.error is None and correction.error is None, (randomization.error, correction.error)
    participant = Participant.objects.select_related("screening").get(pk=participant.pk)
    assert participant.randomization_number is not None
    assert participant.screening.outcome == Outcome.INELIGIBLE
    assert ProtocolDeviation.objects.get(participant=participant).kind == "eligibility_changed"


@pytest.mark.django_db(transaction=True)
def test_a_sign_off_and_a_correction_lock_in_the_same_order(cast, site):
    """Sign-off locked the participant and then (by the join) the screening; a correction locks
    the screening and then the participant. Paused inside the sign-off, the correction must wait
    for it, then see an eligibility signed off under its feet and still finish: no deadlock."""
    from trialsite.models import Signature

    participant = factories.make_participant(site, by=cast.coordinator, signed=False)
    with PauseBeforeSaving(Signature) as pause:
        signing = pause.racer = Racer(
            lambda: enrollment_services.eligibility_sign(
                participant=participant, signer=cast.investigator, password=factories.PASSWORD
            )
        )
        signing.start()
        assert pause.reached.wait(GIVE_UP_AFTER), signing.error
        correction = Racer(correct_to_ineligible(participant, cast.coordinator))
        correction.start()
        until_finished_or_waiting_on_a_lock(correction)
        # Waiting on the signer, not finished ahead of it with the verdict the signer read.
        assert correction.is_alive()
        pause.release.set()
        signing.join(GIVE_UP_AFTER)
        correction.join(GIVE_UP_AFTER)

    assert signing.error is None and correction.error is None, (signing.error, correction.error)
    assert Screening.objects.get(pk=participant.pk).outcome == Outcome.INELIGIBLE
