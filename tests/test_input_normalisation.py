"""Identifiers are compared and stored as they read, not as they were typed: one patient with a
zero-width space or full-width digits in the record number is still one patient; the same for
initials and kit numbers."""

from __future__ import annotations

import datetime
import importlib

import pytest
import time_machine
from django.apps import apps
from django.db import connection

from dosing import services as dosing_services
from dosing.exceptions import LabelMismatch
from dosing.models import Kit, KitStatus
from enrollment import services
from enrollment.models import Screening
from tests import dosing_factories as df
from tests import factories
from trialsite.audit import audit_context
from trialsite.text import clean_text, identifier

SCREENED = datetime.date(2026, 11, 20)
ALL_GOOD = {"IN1": "yes", "IN2": "yes", "EX1": "no", "EX2": "no", "EX3": "no"}
FULL_WIDTH_BAD0001 = "\uff22\uff21\uff24\uff10\uff10\uff10\uff11"  # BAD0001 typed in full-width characters


@pytest.fixture(autouse=True)
def _today():
    with time_machine.travel(datetime.datetime(2026, 11, 21, 2, tzinfo=datetime.UTC), tick=False):
        yield


def screen(site, by, **overrides):
    fields = dict(
        site=site,
        screened_by=by,
        initials="LW",
        date_of_birth=datetime.date(1970, 5, 5),
        sex="M",
        hospital_record_number="BAD0001",
        screening_date=SCREENED,
        consent_version="2.1",
        consent_date=SCREENED,
        answers=ALL_GOOD,
    )
    fields.update(overrides)
    return services.screening_create(**fields)


@pytest.mark.parametrize(
    ("typed", "reads"),
    [
        ("BAD0001\u200b", "BAD0001"),  # zero-width space (Cf)
        ("\ufeffBAD\u2060000\u200d1", "BAD0001"),  # byte-order mark, word joiner, zero-width joiner
        (FULL_WIDTH_BAD0001, "BAD0001"),
        ("bad0001", "BAD0001"),  # case: the same patient typed with caps lock off
        ("\u3000BAD0001\u00a0", "BAD0001"),  # ideographic and no-break spaces at the ends
        ("BAD\u034f0001\ufe0f", "BAD0001"),  # ignorable but not Cf: grapheme joiner, variation selector
        ("BAD\u20100001", "BAD-0001"),  # a word processor's hyphen is a hyphen-minus
        ("BAD\u00ad0001", "BAD0001"),  # soft hyphen
        ("NT  10\t01", "NT 10 01"),  # white space inside: one space
    ],
)
def test_an_identifier_reads_as_it_shows(typed, reads):
    assert identifier(typed) == reads


def test_clean_text_keeps_case_and_folds_compatibility_forms():
    assert clean_text(" \u200bLot\uff11 ") == "Lot1"
    assert clean_text(None) == ""


@pytest.mark.parametrize("again", ["BAD0001\u200b", FULL_WIDTH_BAD0001, " bad0001 ", "B\u00adAD0001"])
def test_the_same_record_number_written_differently_is_the_same_patient(cast, site, again):
    screen(site, cast.coordinator)
    with pytest.raises(services.DuplicateRecordNumber) as refused:
        screen(site, cast.coordinator, hospital_record_number=again)
    assert refused.value.field == "hospital_record_number"
    assert Screening.objects.count() == 1


def test_record_number_and_initials_are_stored_normalised(cast, site):
    screening = screen(
        site, cast.coordinator, hospital_record_number="\u200bnt-\uff19\uff19", initials="\uff4c\u200b\uff57"
    )
    screening.refresh_from_db()
    assert (screening.hospital_record_number, screening.initials) == ("NT-99", "LW")


def test_a_correction_to_another_patients_record_number_is_refused_however_written(cast, site):
    screen(site, cast.coordinator)
    second = screen(site, cast.coordinator, hospital_record_number="BAD0002")
    with pytest.raises(services.DuplicateRecordNumber):
        services.screening_update(
            screening=second, changed_by=cast.coordinator, reason="typo", hospital_record_number="bad\u20600001"
        )
    corrected = services.screening_update(
        screening=second, changed_by=cast.coordinator, reason="typo", initials="\uff21\uff22"
    )
    assert corrected.initials == "AB"


def test_the_api_refuses_a_full_width_duplicate_at_the_field(cast, site, api_for):
    screen(site, cast.coordinator)
    answer = api_for(cast.coordinator).post(
        "/api/v1/screenings/",
        {
            "initials": "LW",
            "date_of_birth": "1970-05-05",
            "sex": "M",
            "hospital_record_number": FULL_WIDTH_BAD0001 + "\u200b",
            "screening_date": SCREENED.isoformat(),
            "consent_version": "2.1",
            "consent_date": SCREENED.isoformat(),
            "answers": ALL_GOOD,
        },
        format="json",
    )
    assert answer.status_code == 400
    assert list(answer.json()) == ["hospital_record_number"]


# --- Kit numbers ---------------------------------------------------------------------------


def import_kits(text, trial, user):
    return dosing_services.kits_import(
        csv_text="kit_number,kit_type,content,lot,expiry\n" + text, imported_by=user, trial=trial
    )


def test_an_imported_kit_number_is_stored_normalised_and_its_twin_is_a_repeat(trial, cast):
    from dosing.exceptions import KitListInvalid

    with pytest.raises(KitListInvalid) as refused:
        import_kits(
            "K7Q2-1001,INF,active,L1,2028-01-31\n\uff2b\uff17\uff31\uff12-1001\u200b,INF,active,L1,2028-01-31\n",
            trial,
            cast.supply_manager,
        )
    assert "repeats line 2" in refused.value.errors[0]
    import_kits("\u200bk7q2\u20111001 ,INF,active,L1,2028-01-31\n", trial, cast.supply_manager)
    assert list(Kit.objects.values_list("kit_number", flat=True)) == ["K7Q2-1001"]


def test_a_label_read_with_invisible_or_full_width_characters_matches_its_kit(site, cast):
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    kit = df.make_kit(site=site, number="INF-1001")
    with audit_context(actor=cast.pharmacist, reason="test: assigned at C1"):
        Kit.objects.filter(pk=kit.pk).update(
            status=KitStatus.ASSIGNED, participant=participant, visit=participant.visits.get(code="C1")
        )
    with pytest.raises(LabelMismatch):
        dosing_services.kit_dispense(kit=kit, label_number="INF-1002", dispensed_by=cast.pharmacist)
    dosing_services.kit_dispense(
        kit=kit, label_number="\uff49\uff4e\uff46\u2010\uff11\uff10\uff10\uff11\u200b", dispensed_by=cast.pharmacist
    )
    kit.refresh_from_db()
    assert kit.status == KitStatus.DISPENSED


# --- Record numbers stored before normalisation ----------------------------------------------


def test_the_data_migration_normalises_stored_record_numbers_and_leaves_twins_for_a_person(cast, site, capsys):
    migration = importlib.import_module("enrollment.migrations.0002_record_numbers_normalised")
    plain = factories.make_screening(site, by=cast.coordinator, record_number="NT-1")
    typed = factories.make_screening(site, by=cast.coordinator, record_number="NT-2")
    twin = factories.make_screening(site, by=cast.coordinator, record_number="NT-3")
    with audit_context(actor=cast.coordinator, reason="written by the old code"):
        Screening.objects.filter(pk=typed.pk).update(hospital_record_number="nt\uff0d\uff12\u200b")
        Screening.objects.filter(pk=twin.pk).update(hospital_record_number="NT-1\u200b")
    with connection.schema_editor() as editor:
        migration.normalise(apps, editor)
    stored = dict(Screening.objects.values_list("pk", "hospital_record_number"))
    assert stored == {plain.pk: "NT-1", typed.pk: "NT-2", twin.pk: "NT-1\u200b"}
    assert str(twin.pk) in capsys.readouterr().out
