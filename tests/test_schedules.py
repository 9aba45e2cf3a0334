"""The visit schedule as data (`[schedule]` in the protocol, the schedules app): the plan made
from it, its path-named refusals, assessments every N weeks, follow-up by calendar months, and
unscheduled visits added on page and API, all audited."""

import datetime
import re
import tomllib
from pathlib import Path

import pytest
from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db import connection
from django.utils import timezone

from dosing.reminders.models import Reminder
from enrollment.services import participant_withdraw
from schedules.exceptions import UnscheduledVisitDateInvalid, UnscheduledVisitNotPossible, UnscheduledVisitsNotAllowed
from schedules.models import Visit, VisitKind, VisitStatus
from schedules.services import unscheduled_visit_add, visit_plan
from tests import dosing_factories
from trialsite.audit import TRIGGER_NAME, blinded_visible_columns
from trialsite.exceptions import ReasonRequired
from trialsite.models import AuditEvent
from trialsite.protocol import load_protocol
from trialsite.protocol_schema import ProtocolError, parse_protocol

DAY0 = datetime.date(2026, 11, 3)

TUMOUR_ASSESSMENT = """
[[schedule.assessments]]
code = "TA{n}"
name = "Tumour assessment"
name_zh = "肿瘤评估"
interval_weeks = 8
window_before_days = 7
window_after_days = 7
"""


def protocol_text() -> str:
    return settings.PROTOCOL_FILE.read_text(encoding="utf-8")


def document(text: str | None = None) -> dict:
    return tomllib.loads(text or protocol_text())


def nct06442709_plan_before_the_schedule_section(day0: datetime.date) -> list[tuple]:
    """The plan as the code wrote it before `[schedule]`, from the old `[visits]` numbers (28-day
    cycles, -3/+3 days, 12 cycles, follow-up every 3 months, 4 visits): what the protocol's new
    section must still give."""
    before, after = datetime.timedelta(days=3), datetime.timedelta(days=3)
    plan = []
    for cycle in range(1, 13):
        target = day0 + datetime.timedelta(days=(cycle - 1) * 28)
        plan.append((f"C{cycle}", "dosing", cycle, target, target if cycle == 1 else target - before, target + after))
    end = day0 + datetime.timedelta(days=12 * 28)
    plan.append(("EOT", "end_of_treatment", None, end, end - before, end + after))
    for number in range(1, 5):
        target = end + relativedelta(months=number * 3)
        plan.append((f"FU{number}", "follow_up", None, target, target - before, target + after))
    return [(sequence, *visit) for sequence, visit in enumerate(plan, start=1)]


def as_rows(plan) -> list[tuple]:
    return [(v.sequence, v.code, v.kind, v.cycle, v.target_date, v.window_start, v.window_end) for v in plan]


# --- The plan ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "day0",
    [
        DAY0,
        datetime.date(2026, 1, 31),
        datetime.date(2027, 12, 3),
        datetime.date(2028, 2, 29),
        datetime.date(2026, 11, 2),
    ],
)
def test_nct06442709s_schedule_section_gives_exactly_the_plan_it_had(day0):
    schedule = parse_protocol(document()).schedule

    assert as_rows(visit_plan(schedule=schedule, day0=day0)) == nct06442709_plan_before_the_schedule_section(day0)


def test_nct06442709s_created_plan_is_the_same_in_the_database(site, cast):
    participant = dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)

    stored = participant.visits.order_by("sequence").values_list(
        "sequence", "code", "kind", "cycle", "target_date", "window_start", "window_end"
    )
    assert list(stored) == nct06442709_plan_before_the_schedule_section(DAY0)
    assert set(participant.visits.values_list("status", flat=True)) == {VisitStatus.SCHEDULED}


def schedule_of(**parts):
    text = protocol_text()
    protocol = parse_protocol(document(text))
    raw = document(text)["schedule"]
    for part, values in parts.items():
        if isinstance(values, dict):
            raw[part] = {**raw.get(part, {}), **values}
        else:
            raw[part] = values
    return protocol.model_copy(update={"schedule": type(protocol.schedule).model_validate(raw)}).schedule


def test_follow_up_every_n_months_from_a_month_end_keeps_to_month_ends_without_drifting():
    # One 28-day cycle from 3 January 2027: the end-of-treatment visit falls on 31 January.
    schedule = schedule_of(treatment={"cycles": 1}, follow_up={"visits": 4, "interval_months": 3})
    plan = {v.code: v.target_date for v in visit_plan(schedule=schedule, day0=datetime.date(2027, 1, 3))}

    assert plan["EOT"] == datetime.date(2027, 1, 31)
    assert [plan[f"FU{n}"] for n in range(1, 5)] == [
        datetime.date(2027, 4, 30),
        datetime.date(2027, 7, 31),
        datetime.date(2027, 10, 31),
        datetime.date(2028, 1, 31),
    ]
    monthly = schedule_of(treatment={"cycles": 1}, follow_up={"visits": 3, "interval_months": 1})
    plan = {v.code: v.target_date for v in visit_plan(schedule=monthly, day0=datetime.date(2027, 1, 3))}
    assert [plan["FU1"], plan["FU2"], plan["FU3"]] == [
        datetime.date(2027, 2, 28),
        datetime.date(2027, 3, 31),
        datetime.date(2027, 4, 30),
    ]


def test_an_assessment_every_8_weeks_during_treatment_is_a_visit_of_its_own_in_date_order():
    schedule = parse_protocol(document(protocol_text() + TUMOUR_ASSESSMENT)).schedule
    plan = visit_plan(schedule=schedule, day0=DAY0)
    assessments = [v for v in plan if v.kind == VisitKind.ASSESSMENT]

    # Every 56 days while treatment lasts: day 336 is the end-of-treatment visit, so 5 of them.
    assert [v.code for v in assessments] == ["TA1", "TA2", "TA3", "TA4", "TA5"]
    assert [(v.target_date - DAY0).days for v in assessments] == [56, 112, 168, 224, 280]
    assert [(v.window_start, v.window_end) for v in assessments[:1]] == [
        (DAY0 + datetime.timedelta(days=49), DAY0 + datetime.timedelta(days=63))
    ]
    assert all(v.cycle is None for v in assessments)
    # In date order; on one day the cycle comes first. Sequences are 1..N without gaps.
    assert [v.code for v in plan][:5] == ["C1", "C2", "C3", "TA1", "C4"]
    assert [v.sequence for v in plan] == list(range(1, len(plan) + 1))
    assert [v.code for v in plan][-5:] == ["EOT", "FU1", "FU2", "FU3", "FU4"]


def test_an_assessment_through_follow_up_goes_on_to_the_last_follow_up_and_no_window_opens_before_day_0():
    text = protocol_text() + TUMOUR_ASSESSMENT.replace("interval_weeks = 8", "interval_weeks = 1").replace(
        'name_zh = "肿瘤评估"', 'name_zh = "肿瘤评估"\nduring = "treatment_and_follow_up"'
    )
    plan = visit_plan(schedule=parse_protocol(document(text)).schedule, day0=DAY0)
    last_follow_up = next(v for v in plan if v.code == "FU4").target_date
    assessments = [v for v in plan if v.kind == VisitKind.ASSESSMENT]

    assert assessments[-1].target_date <= last_follow_up < assessments[-1].target_date + datetime.timedelta(weeks=1)
    assert assessments[0].window_start == DAY0  # day 7 minus 7 days: not before randomization
    # Follow-up visits and assessments interleave by date.
    assert [v.target_date for v in plan] == sorted(v.target_date for v in plan)
    assert plan.index(assessments[-1]) > plan.index(next(v for v in plan if v.code == "FU3"))


def test_treatment_cycles_without_dosing_are_cycles_not_dosing_visits():
    schedule = schedule_of(treatment={"dosing": False})
    plan = visit_plan(schedule=schedule, day0=DAY0)

    assert {v.kind for v in plan if v.cycle} == {VisitKind.CYCLE}


# --- Path-named refusals -------------------------------------------------------------------------


def refusals(text: str) -> list[str]:
    with pytest.raises(ProtocolError) as refused:
        parse_protocol(document(text))
    return refused.value.errors


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('code = "C{n}"', 'code = "C"'), r"^schedule\.treatment\.code: must be a visit code with \{n\} once"),
        (('code = "C{n}"', 'code = "C{n}{n}"'), r"^schedule\.treatment\.code: must be a visit code"),
        (('code = "C{n}"', 'code = "CYCLE_NO_{n}"'), r"^schedule\.treatment\.code: .* at most 7 characters"),
        (("cycles = 12", "cycles = 0"), r"^schedule\.treatment\.cycles: must be a positive integer"),
        (("interval_days = 28", "cycle_length_days = 28"), r"^schedule\.treatment\.cycle_length_days: is not a key"),
        (('code = "EOT"', 'code = "END_OF_TREATMENT"'), r"^schedule\.end_of_treatment\.code: must be at most 10"),
        (('code = "EOT"', 'code = "C13"'), r"^schedule\.end_of_treatment: code C13 is also a treatment cycle's code"),
        (('code = "FU{n}"', 'code = "C{n}"'), r"^schedule\.follow_up: code C\{n\} makes codes of the treatment cycles"),
        (('code = "FU{n}"', 'code = "C1{n}"'), r"^schedule\.follow_up: code C1\{n\} makes codes of the treatment"),
        (('code = "FU{n}"', 'code = "EO{n}"'), None),
        (('code = "U{n}"', 'code = "FU{n}"'), r"^schedule\.unscheduled: code FU\{n\} makes codes of the follow-up"),
        (("interval_months = 3", "interval_months = -3"), r"^schedule\.follow_up\.interval_months: must be a positive"),
        (("window_before_days = 3", "window_before_days = 1.5"), r"^schedule\.treatment\.window_before_days: must be"),
        (("allowed = true", 'allowed = "yes"'), r"^schedule\.unscheduled\.allowed: must be true or false"),
    ],
)
def test_a_wrong_schedule_is_refused_at_its_path(change, expected):
    old, new = change
    text = protocol_text()
    assert old in text
    text = text.replace(old, new, 1)
    if expected is None:
        parse_protocol(document(text))  # EO1, EO2, ... are not EOT: no clash
        return
    assert any(re.search(expected, error) for error in refusals(text)), refusals(text)


def test_assessments_that_clash_are_named_by_their_entry():
    text = (
        protocol_text()
        + TUMOUR_ASSESSMENT
        + TUMOUR_ASSESSMENT.replace('"TA{n}"', '"T{n}"').replace('code = "T{n}"', 'code = "TA{n}"')
    )
    assert "schedule.assessments: entry [1]: code TA{n} makes codes of assessment TA{n}" in refusals(text)
    unknown = protocol_text() + TUMOUR_ASSESSMENT.replace("interval_weeks = 8", "every_weeks = 8")
    errors = refusals(unknown)
    assert "schedule.assessments[0].every_weeks: is not a key this system knows (misspelt?)" in errors
    assert "schedule.assessments[0].interval_weeks: is required" in errors


def test_the_schedule_section_is_required_and_the_old_visits_section_is_refused():
    text = protocol_text()
    start = text.index("[schedule.treatment]")
    end = text.index("[dosing.infusion]")
    old = text[:start] + "[visits]\ncycle_length_days = 28\ncycles = 12\n\n" + text[end:]
    errors = refusals(old)
    assert "schedule: is required" in errors
    assert "visits: is not a key this system knows (misspelt?)" in errors


# --- The Visit model in its own app, on its old table ------------------------------------------


def test_visits_keep_their_table_triggers_and_blinded_columns(site, cast):
    participant = dosing_factories.randomized_participant(site, arm_code="PBO", by=cast.coordinator)
    first = participant.visits.order_by("sequence").first()

    assert (Visit._meta.label, Visit._meta.db_table) == ("schedules.Visit", "dosing_visit")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'dosing_visit'::regclass AND tgname = %s", [TRIGGER_NAME]
        )
        assert cursor.fetchone()[0] == 1
    created = AuditEvent.objects.get(table_name="dosing_visit", record_pk=str(first.pk), action="INSERT")
    assert (created.actor, created.subject_id, created.site_id) == (cast.coordinator, participant.pk, site.pk)
    assert {"code", "kind", "target_date", "status"} <= blinded_visible_columns(Visit)


def test_randomization_does_not_import_dosing_and_schedules_imports_neither():
    """No import cycle: randomization creates the plan through schedules; dosing may read the
    allocation (randomization), never the other way round."""
    root = Path(settings.BASE_DIR)
    for package, others in (("randomization", ("dosing",)), ("schedules", ("dosing", "randomization"))):
        for path in (root / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            text = path.read_text(encoding="utf-8")
            for other in others:
                assert not re.search(rf"^\s*(from|import) {other}\b", text, re.M), f"{path} imports {other}"


def test_no_visit_code_is_written_in_the_code():
    """Visit codes come from the protocol's patterns: none is written in the application's code
    or templates, as a value or a pattern (only protocol files, migrations and tests name them)."""
    root = Path(settings.BASE_DIR)
    code = re.compile(r"""(["'](C\d{1,2}|EOT|FU\d|TA\d|U\d)["'])|(["'](C|FU|TA|U)\{)|\b(EOT|FU\d)\b""")
    offenders = []
    for package in ("trialsite", "enrollment", "randomization", "schedules", "dosing", "reports", "templates"):
        for path in (root / package).rglob("*"):
            if path.suffix not in (".py", ".html") or "migrations" in path.parts:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if code.search(line):
                    offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == []


# --- Unscheduled visits --------------------------------------------------------------------------


@pytest.fixture
def participant(site, cast):
    return dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)


def test_an_unscheduled_visit_is_numbered_placed_after_the_plan_and_audited_with_its_reason(participant, cast):
    planned = participant.visits.count()

    first = unscheduled_visit_add(
        participant=participant, visit_date=DAY0 + datetime.timedelta(days=10), added_by=cast.coordinator, reason="rash"
    )
    second = unscheduled_visit_add(
        participant=participant,
        visit_date=DAY0 + datetime.timedelta(days=12),
        added_by=cast.coordinator,
        reason="fever",
    )

    assert [(v.code, v.kind, v.sequence) for v in (first, second)] == [
        ("U1", VisitKind.UNSCHEDULED, planned + 1),
        ("U2", VisitKind.UNSCHEDULED, planned + 2),
    ]
    assert (first.target_date, first.window_start, first.window_end) == (DAY0 + datetime.timedelta(days=10),) * 3
    assert first.status == VisitStatus.SCHEDULED and first.site_id == participant.site_id
    created = AuditEvent.objects.get(table_name="dosing_visit", record_pk=str(first.pk), action="INSERT")
    assert (created.reason, created.actor, created.subject_id) == (
        "unscheduled visit: rash",
        cast.coordinator,
        participant.pk,
    )
    # A visit still ahead gets its missed-visit reminder like any visit.
    ahead = unscheduled_visit_add(
        participant=participant,
        visit_date=timezone.localdate(timezone=participant.site.zone) + datetime.timedelta(days=2),
        added_by=cast.coordinator,
        reason="wound check",
    )
    assert ahead.code == "U3"
    assert Reminder.objects.filter(visit=ahead, kind=Reminder.Kind.MISSED_VISIT).exists()


def test_an_unscheduled_visit_needs_a_reason_a_date_from_randomization_and_a_participant_in_the_trial(
    participant, cast
):
    with pytest.raises(ReasonRequired):
        unscheduled_visit_add(participant=participant, visit_date=DAY0, added_by=cast.coordinator, reason="  ")
    with pytest.raises(UnscheduledVisitDateInvalid):
        unscheduled_visit_add(
            participant=participant, visit_date=DAY0 - datetime.timedelta(days=1), added_by=cast.coordinator, reason="x"
        )
    participant_withdraw(participant=participant, withdrawn_by=cast.coordinator, withdrawn_on=DAY0, reason="moved away")
    with pytest.raises(UnscheduledVisitNotPossible):
        unscheduled_visit_add(participant=participant, visit_date=DAY0, added_by=cast.coordinator, reason="x")
    assert not participant.visits.filter(kind=VisitKind.UNSCHEDULED).exists()


def test_the_coordinator_adds_one_on_the_participant_page(participant, cast, client_for):
    client = client_for(cast.coordinator)
    page = client.get(f"/participants/{participant.pk}/")
    assert b'id="add-unscheduled-visit"' in page.content

    refused = client.post(f"/participants/{participant.pk}/visits/unscheduled/", {"visit_date": "", "reason": ""})
    assert refused.status_code == 400
    added = client.post(
        f"/participants/{participant.pk}/visits/unscheduled/",
        {"visit_date": (DAY0 + datetime.timedelta(days=5)).isoformat(), "reason": "headache"},
    )

    visit = participant.visits.get(kind=VisitKind.UNSCHEDULED)
    assert added.status_code == 302 and added["Location"] == f"/visits/{visit.pk}/"
    assert visit.code == "U1"


def test_the_api_adds_one_and_refuses_what_the_page_refuses(participant, cast, api_for):
    api = api_for(cast.coordinator)
    url = f"/api/v1/participants/{participant.pk}/unscheduled-visits/"

    created = api.post(url, {"visit_date": DAY0.isoformat(), "reason": "cough"}, format="json")
    too_early = api.post(
        url, {"visit_date": (DAY0 - datetime.timedelta(days=1)).isoformat(), "reason": "cough"}, format="json"
    )

    assert created.status_code == 201, created.content
    assert (created.json()["code"], created.json()["kind"]) == ("U1", "unscheduled")
    assert too_early.status_code == 400 and "visit_date" in too_early.json()


def test_staff_who_do_not_record_visits_cannot_add_one(participant, cast, client_for, api_for):
    for role in ("pharmacist", "other_coordinator"):
        assert client_for(cast[role]).get(f"/participants/{participant.pk}/visits/unscheduled/").status_code == 404
        answer = api_for(cast[role]).post(
            f"/api/v1/participants/{participant.pk}/unscheduled-visits/",
            {"visit_date": DAY0.isoformat(), "reason": "x"},
            format="json",
        )
        assert answer.status_code in (403, 404)
    assert not participant.visits.filter(kind=VisitKind.UNSCHEDULED).exists()


@pytest.fixture
def trial_without_unscheduled_visits(cast, tmp_path):
    """The trial's file with unscheduled visits not allowed, loaded over it before anyone is
    screened (so it replaces the loaded version)."""
    path = tmp_path / "NCT06442709.toml"
    path.write_text(protocol_text().replace("allowed = true", "allowed = false"), encoding="utf-8")
    return load_protocol(path)


def test_a_protocol_without_unscheduled_visits_refuses_them_and_offers_no_button(
    trial_without_unscheduled_visits, cast, client_for
):
    site = trial_without_unscheduled_visits.sites.get(code="NT")
    participant = dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)

    with pytest.raises(UnscheduledVisitsNotAllowed):
        unscheduled_visit_add(participant=participant, visit_date=DAY0, added_by=cast.coordinator, reason="x")
    client = client_for(cast.coordinator)
    assert b'id="add-unscheduled-visit"' not in client.get(f"/participants/{participant.pk}/").content
    assert client.get(f"/participants/{participant.pk}/visits/unscheduled/").status_code == 404
