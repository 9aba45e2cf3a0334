"""A visit form names only visits the schedule can make (refused at load and --check by its path),
and repeat labs after a held infusion go onto the protocol's labs form, audited item by item,
the decision following what the form then holds."""

import copy
import datetime
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.core.management import CommandError, call_command

from crf import selectors as crf_selectors
from dosing import services
from dosing.exceptions import DoseInputInvalid
from dosing.models import Decision, DoseRecord, RepeatLabs
from tests import dosing_factories as df
from trialsite.models import AuditEvent
from trialsite.protocol_schema import ProtocolError, parse_protocol

PROTOCOLS = Path(settings.BASE_DIR) / "protocols"
SCHEDULE_IN_WORDS = "(treatment C1..C12, EOT, FU1..FU4, unscheduled U{n})"


def _document(name: str = "NCT06442709.toml") -> dict:
    with (PROTOCOLS / name).open("rb") as file:
        return tomllib.load(file)


def _form(document: dict, code: str) -> tuple[int, dict]:
    return next((index, form) for index, form in enumerate(document["forms"]) if form["code"] == code)


def _errors(document: dict) -> list[str]:
    with pytest.raises(ProtocolError) as refused:
        parse_protocol(document)
    return refused.value.errors


def test_both_protocols_name_only_visits_their_schedules_make():
    for path in sorted(PROTOCOLS.glob("*.toml")):
        with path.open("rb") as file:
            parse_protocol(tomllib.load(file))


def test_a_visit_the_schedule_never_makes_is_refused_by_its_path():
    document = copy.deepcopy(_document())
    index, vitals = _form(document, "vitals")
    vitals["visits"] = [f"C{cycle}" for cycle in range(1, 14)]
    assert _errors(document) == [f"forms[{index}].visits[12]: C13 is not a visit of the schedule {SCHEDULE_IN_WORDS}"]


def test_an_assessment_beyond_the_plan_is_refused_and_the_schedule_names_its_last():
    document = copy.deepcopy(_document("NCT09000001.toml"))
    index, imaging = _form(document, "imaging")
    imaging["visits"] = [*imaging["visits"], "IMG13"]
    (error,) = _errors(document)
    assert error.startswith(f"forms[{index}].visits[12]: IMG13 is not a visit of the schedule")
    assert "assessment IMG1..IMG12" in error


def test_a_pattern_matching_no_visit_is_refused_and_one_matching_a_visit_is_accepted():
    document = copy.deepcopy(_document())
    index, vitals = _form(document, "vitals")
    vitals["visits"] = ["C*", "Z*"]
    assert _errors(document) == [f"forms[{index}].visits[1]: Z* matches no visit of the schedule {SCHEDULE_IN_WORDS}"]
    vitals["visits"] = ["C*", "FU*", "EOT"]
    assert parse_protocol(document).form("vitals").carried_at("FU3")


@pytest.mark.parametrize("visit", ["U1", "U27", "U*"])
def test_unscheduled_visits_may_carry_a_form_only_when_the_schedule_allows_them(visit):
    document = copy.deepcopy(_document())
    index, vitals = _form(document, "vitals")
    vitals["visits"] = [*vitals["visits"], visit]
    assert parse_protocol(document).form("vitals").carried_at(visit.rstrip("*") + ("1" if visit == "U*" else ""))

    document["schedule"]["unscheduled"] = {"allowed": False}
    (error,) = _errors(document)
    assert error.startswith(f"forms[{index}].visits[12]: {visit} ")
    assert error.endswith("of the schedule (treatment C1..C12, EOT, FU1..FU4)")


def test_load_protocol_check_refuses_a_file_naming_a_visit_the_schedule_never_makes(tmp_path):
    text = (PROTOCOLS / "NCT06442709.toml").read_text()
    carried = 'visits = ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "C10", "C11", "C12"]'
    assert carried in text
    path = tmp_path / "wrong-visit.toml"
    path.write_text(text.replace(carried, carried.replace('"C12"]', '"C12", "C13"]'), 1))
    with pytest.raises(CommandError, match=r"forms\[0\]\.visits\[12\]: C13 is not a visit of the schedule"):
        call_command("load_protocol", str(path), "--check")


# --- Repeat labs go onto the labs form -------------------------------------------------------

DAY0 = datetime.date(2026, 11, 3)
AT_VISIT = datetime.datetime(2026, 11, 3, 4, 0, tzinfo=datetime.UTC)
TWO_DAYS_LATER = datetime.datetime(2026, 11, 5, 4, 0, tzinfo=datetime.UTC)
HELD_LABS = {"neutrophils": 3000, "platelets": 90_000, "alt_uln": Decimal("1"), "ast_uln": Decimal("1")}


@pytest.fixture
def held(site, cast):
    """A participant whose C1 infusion was held for low platelets (labs typed at the visit)."""
    for content in ("active", "placebo", "active", "placebo"):
        df.make_kit(kit_type="INF", content=content, site=site)
        df.make_kit(kit_type="TAB", content=content, site=site)
    participant = df.randomized_participant(site, arm_code="COMBO", by=cast.coordinator, day0=DAY0)
    visit = participant.visits.get(code="C1")
    with time_machine.travel(AT_VISIT, tick=False):
        outcome = services.visit_record(
            visit=visit, actual_date=DAY0, recorded_by=cast.coordinator, weight_kg=Decimal("60"), **HELD_LABS
        )
    assert outcome.dose.decision == Decision.HOLD
    return visit


def _labs_on_form(visit) -> dict:
    labs_form = visit.site.trial.protocol.dosing.safety.labs_form
    return {name: crf_selectors.value(visit.participant, labs_form, visit.code, name) for name in HELD_LABS}


def _repeat(visit, user, **labs):
    with time_machine.travel(TWO_DAYS_LATER, tick=False):
        return services.visit_repeat_labs(
            visit=visit, recorded_by=user, measured_on=TWO_DAYS_LATER.date(), **{**HELD_LABS, **labs}
        )


def test_repeat_labs_replace_the_labs_form_values_with_a_reason_and_the_dose_follows_them(held, cast):
    outcome = _repeat(held, cast.coordinator, platelets=150_000)
    assert _labs_on_form(held) == {**HELD_LABS, "platelets": 150_000}
    assert outcome.dose.decision == Decision.GIVE and DoseRecord.objects.get(visit=held).decision == Decision.GIVE
    # Only the value that changed has a new audit row, carrying the repeat's date as its reason.
    (update,) = AuditEvent.objects.filter(table_name="crf_itemvalue", action="UPDATE", subject_id=held.participant_id)
    assert update.reason == "repeat labs on 2026-11-05" and update.actor_id == cast.coordinator.pk
    assert (update.old_values["value"], update.new_values["value"]) == (90_000, 150_000)
    # The repeat is still kept as history.
    repeat = RepeatLabs.objects.get(visit=held)
    assert (repeat.platelets, repeat.decision) == (150_000, Decision.GIVE)


def test_repeat_labs_still_low_keep_the_hold_and_the_form_holds_the_latest(held, cast):
    _repeat(held, cast.coordinator, platelets=95_000)
    outcome = _repeat(held, cast.coordinator, platelets=96_000)
    assert outcome.dose.decision == Decision.HOLD
    assert _labs_on_form(held)["platelets"] == 96_000
    assert list(RepeatLabs.objects.filter(visit=held).order_by("id").values_list("platelets", flat=True)) == [
        95_000,
        96_000,
    ]
    updates = AuditEvent.objects.filter(table_name="crf_itemvalue", action="UPDATE", subject_id=held.participant_id)
    assert [event.new_values["value"] for event in updates.order_by("id")] == [95_000, 96_000]


def test_repeat_labs_the_form_refuses_are_refused_at_their_field_and_change_nothing(held, cast):
    with pytest.raises(DoseInputInvalid) as refused:
        # Above the labs form's range for ALT.
        _repeat(held, cast.coordinator, platelets=150_000, alt_uln=Decimal("1000"))
    assert refused.value.field == "alt_uln"
    assert _labs_on_form(held) == HELD_LABS
    assert not RepeatLabs.objects.filter(visit=held).exists()
    assert DoseRecord.objects.get(visit=held).decision == Decision.HOLD


def test_the_repeat_labs_page_saves_onto_the_labs_form(held, cast, client_for):
    recovered = {
        "measured_on": "2026-11-05",
        "neutrophils": "3.2",
        "neutrophils_unit": "1e9_per_l",
        "platelets": "150",
        "platelets_unit": "1e9_per_l",
        "alt_uln": "1",
        "ast_uln": "1",
    }
    with time_machine.travel(TWO_DAYS_LATER, tick=False):
        response = client_for(cast.coordinator).post(f"/visits/{held.pk}/repeat-labs/", recovered)
    assert response.status_code == 302, response.content.decode()
    assert _labs_on_form(held) == {**HELD_LABS, "neutrophils": 3200, "platelets": 150_000}
    assert DoseRecord.objects.get(visit=held).decision == Decision.GIVE
