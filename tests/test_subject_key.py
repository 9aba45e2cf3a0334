"""The permanent subject key (issue 19): given when a screening is first saved, per site in
screening order, never changed by a correction, enrollment or randomization; exports and
imports name the person by it."""

from __future__ import annotations

import datetime
import importlib

import pytest
import time_machine
from django.apps import apps
from django.db import IntegrityError, transaction

from enrollment import services
from enrollment.models import Screening
from tests import factories
from tests.test_races import GIVE_UP_AFTER, PauseBeforeSaving, Racer, until_finished_or_waiting_on_a_lock
from trialsite.audit import audit_context

SCREENED = datetime.date(2026, 11, 20)


@pytest.fixture(autouse=True)
def _today():
    with time_machine.travel(datetime.datetime(2026, 11, 21, 2, tzinfo=datetime.UTC), tick=False):
        yield


def screen(site, by, record_number, **overrides):
    answers = {
        criterion.code: ("yes" if criterion.kind == "inclusion" else "no")
        for criterion in site.trial.protocol.eligibility.criteria
    }
    fields = dict(
        site=site,
        screened_by=by,
        initials="LW",
        date_of_birth=datetime.date(1970, 5, 5),
        sex="M",
        hospital_record_number=record_number,
        screening_date=SCREENED,
        consent_version="2.1",
        consent_date=SCREENED,
        answers=answers,
    )
    fields.update(overrides)
    return services.screening_create(**fields)


def test_each_site_numbers_its_screenings_from_one_with_its_code(cast, site, other_site):
    first = screen(site, cast.coordinator, "NT-1001")
    failure = screen(site, cast.coordinator, "NT-1002", date_of_birth=datetime.date(2015, 1, 1))
    third = screen(site, cast.coordinator, "NT-1003")
    elsewhere = screen(other_site, cast.other_coordinator, "SH-1001")
    assert failure.outcome == "ineligible"
    assert [first.subject_key, failure.subject_key, third.subject_key] == ["NT-P00001", "NT-P00002", "NT-P00003"]
    assert elsewhere.subject_key == "SH-P00001"
    # Apart at a glance from the randomization number (NT-0001) and the screening number (S-NT-0001).
    assert first.subject_key not in (first.participant.screening_number, "NT-0001")


def test_the_key_survives_a_correction_enrollment_and_randomization(cast, site, trial):
    from randomization import services as randomization_services

    randomization_list = randomization_services.list_generate(
        trial=trial, seed="subject key", slots_per_stratum=8, created_by=cast.statistician
    )
    randomization_services.list_lock(
        randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD
    )
    screening = screen(site, cast.coordinator, "NT-1001", sex="F")
    key = screening.subject_key
    services.screening_update(
        screening=screening, changed_by=cast.coordinator, reason="typo in the notes", initials="LX"
    )
    participant = screening.participant
    services.eligibility_sign(participant=participant, signer=cast.investigator, password=factories.PASSWORD)
    randomization_services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    assert Screening.objects.get(pk=screening.pk).subject_key == key == "NT-P00001"


def test_a_site_never_holds_one_key_twice(cast, site):
    first = factories.make_screening(site, by=cast.coordinator)
    second = factories.make_screening(site, by=cast.coordinator)
    assert (first.subject_key, second.subject_key) == ("NT-P00001", "NT-P00002")
    with pytest.raises(IntegrityError), transaction.atomic(), audit_context(reason="test"):
        Screening.objects.filter(pk=second.pk).update(subject_key=first.subject_key)


def test_the_same_site_code_in_two_trials_keeps_two_sequences(cast, site, settings):
    """Keys are unique per trial: another protocol's NT site counts its own people."""
    from pathlib import Path

    from trialsite.protocol import load_protocol

    other_file = next(
        p
        for p in sorted((Path(settings.BASE_DIR) / "protocols").glob("*.toml"))
        if p.name != Path(settings.PROTOCOL_FILE).name
    )
    other_trial = load_protocol(other_file)
    twin = factories.make_site(other_trial, site.code)
    coordinator = factories.make_user("coordinator", twin, username="twin_coordinator")
    factories.make_screening(site, by=cast.coordinator)
    assert factories.make_screening(twin, by=coordinator).subject_key == "NT-P00001"


def test_the_migration_numbers_existing_screenings_in_the_order_they_were_created(cast, site, other_site):
    made = [
        factories.make_screening(where, by=by)
        for where, by in [(site, cast.coordinator), (other_site, cast.other_coordinator)]
        + [(site, cast.coordinator)] * 2
    ]
    # Created out of key order on purpose: the backfill follows created_at, then the id.
    Screening.objects.filter(pk=made[0].pk).update(created_at=made[3].created_at + datetime.timedelta(seconds=1))
    with audit_context(reason="test: the keys as before the migration"):
        for screening in made:
            Screening.objects.filter(pk=screening.pk).update(subject_key=f"before-{screening.pk}")
    migration = importlib.import_module("enrollment.migrations.0009_screening_subject_key")
    with audit_context(reason="test: the migration's backfill"):
        migration.backfill(apps, None)
    keys = dict(Screening.objects.values_list("pk", "subject_key"))
    assert [keys[screening.pk] for screening in made] == ["NT-P00003", "SH-P00001", "NT-P00001", "NT-P00002"]


@pytest.mark.django_db(transaction=True)
def test_two_screenings_saved_at_once_at_one_site_take_different_keys(cast, site):
    with PauseBeforeSaving(Screening) as pause:
        first = pause.racer = Racer(lambda: screen(site, cast.coordinator, "NT-2001"))
        first.start()
        assert pause.reached.wait(GIVE_UP_AFTER), first.error
        # The first has taken its key and not yet saved it: the second must wait, not read the same maximum.
        second = Racer(lambda: screen(site, cast.coordinator, "NT-2002"))
        second.start()
        until_finished_or_waiting_on_a_lock(second)
        assert second.is_alive()
        pause.release.set()
        first.join(GIVE_UP_AFTER)
        second.join(GIVE_UP_AFTER)
    assert first.error is None and second.error is None, (first.error, second.error)
    assert (first.result.subject_key, second.result.subject_key) == ("NT-P00001", "NT-P00002")


def test_the_participant_page_shows_the_key(cast, site, client_for):
    participant = factories.make_participant(site, by=cast.coordinator)
    page = client_for(cast.coordinator).get(f"/participants/{participant.pk}/")
    assert participant.screening.subject_key in page.content.decode()


def test_the_participant_list_shows_the_key(cast, site, client_for):
    participant = factories.make_participant(site, by=cast.coordinator)
    page = client_for(cast.coordinator).get("/participants/")
    assert f"<td>{participant.screening.subject_key}</td>" in page.content.decode()
