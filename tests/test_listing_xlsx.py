"""The listings' workbooks hold typed cells (issue 19): dates are date cells, moments are UTC
date-and-time cells, numbers are numbers and an empty value is no cell, checked with openpyxl and
pandas against the database; the CSV of the same listing is unchanged (ISO text, `Z`)."""

from __future__ import annotations

import datetime
import io

import openpyxl
import pandas
import pytest
import time_machine

from enrollment.models import Participant, Screening
from safety import services as safety
from safety.ctcae import TERMS
from safety.models import AdverseEvent, Seriousness
from tests import reports_data
from tests.test_reports_exports import csv_rows, run_now
from tests.test_safety_exports import content_of
from trialsite.audit import audit_context

UTC = datetime.UTC


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def data(trial, site, other_site, cast):
    from schedules.services import visit_schedule_create

    with time_machine.travel(datetime.datetime(2026, 12, 15, 4, tzinfo=UTC), tick=False):
        data = reports_data.build(trial, site, other_site, cast)
        planned = data.randomized[5]
        with audit_context(actor=cast.coordinator, reason="visit plan"):
            visit_schedule_create(participant=planned, day0=datetime.date(2026, 11, 3))
        # A moment with a fraction of a second, written in another zone: the workbook has it in UTC
        # to the second, as the CSV does.
        Participant.objects.filter(pk=data.randomized[2].pk).update(
            randomized_at=datetime.datetime(
                2026, 11, 3, 23, 30, 15, 600_000, tzinfo=datetime.timezone(datetime.timedelta(hours=8))
            )
        )
        nantong = data.randomized[3]
        first = safety.ae_record(
            participant=nantong,
            recorded_by=cast.coordinator,
            details=safety.AeDetails(term="epistaxis", grade=1, onset_date=datetime.date(2026, 12, 10)),
        )
        safety.ae_grade_change(
            event=first,
            recorded_by=cast.coordinator,
            details=safety.AeDetails(grade=3, onset_date=datetime.date(2026, 12, 12)),
        )
        safety.ae_record(
            participant=nantong,
            recorded_by=cast.coordinator,
            details=safety.AeDetails(
                term="sepsis",
                grade=4,
                onset_date=datetime.date(2026, 12, 13),
                serious=True,
                seriousness=(Seriousness.HOSPITALISATION,),
                awareness_at=datetime.datetime(2026, 12, 13, 9, tzinfo=UTC),
            ),
        )
        yield data


def sheet_of(content: bytes, title: str) -> tuple[list[str], list[dict], list[list]]:
    """The sheet's headings, its rows as {heading: cell}, and the cells row by row."""
    workbook = openpyxl.load_workbook(io.BytesIO(content))
    rows = list(workbook[title].iter_rows())
    headings = [cell.value for cell in rows[0]]
    return headings, [dict(zip(headings, row, strict=True)) for row in rows[1:]], rows[1:]


def is_date_cell(cell, day: datetime.date | None) -> bool:
    """A date cell holding `day` (openpyxl reads every date cell back as a datetime), or no cell."""
    if day is None:
        return cell.value is None
    return (
        cell.is_date
        and cell.value == datetime.datetime.combine(day, datetime.time())
        and cell.number_format == "yyyy-mm-dd"
    )


def utc_second(moment: datetime.datetime) -> datetime.datetime:
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0)


def no_empty_strings(cells: list[list]) -> bool:
    return all(cell.value != "" for row in cells for cell in row)


def test_the_subjects_workbook_has_dates_moments_numbers_and_empty_cells(data, cast):
    for user in (cast.monitor, cast.statistician):
        content = content_of(run_now(user, "subjects", "xlsx"))
        _headings, rows, cells = sheet_of(content, "Subjects")
        screenings = {
            (screening.participant.randomization_number or screening.participant.screening_number)
            if hasattr(screening, "participant")
            else f"SCR-{screening.pk}": screening
            for screening in Screening.objects.filter(site__in=user.trial_roles.values("site"))
        }
        assert len(rows) == len(screenings) and no_empty_strings(cells)
        for row in rows:
            screening = screenings[row["Subject"].value]
            participant = getattr(screening, "participant", None)
            assert is_date_cell(row["Screening date"], screening.screening_date)
            consent = screening.consents.order_by("-signed_on", "-pk").first()
            assert is_date_cell(row["Consent date"], consent.signed_on if consent else None)
            assert isinstance(row["Age at screening"].value, int) and row["Age at screening"].data_type == "n"
            withdrawal = getattr(participant, "withdrawal", None)
            assert is_date_cell(row["Withdrawal date"], withdrawal.withdrawn_on if withdrawal else None)
            moment = row["Randomized at (UTC)"]
            if participant is None or participant.randomized_at is None:
                assert moment.value is None
                assert row["Randomization number"].value is None
            else:
                assert moment.is_date and moment.value == utc_second(participant.randomized_at)
                assert moment.number_format == "yyyy-mm-dd hh:mm:ss"
        # pandas reads the columns as what they are, with no options.
        frame = pandas.read_excel(io.BytesIO(content), sheet_name="Subjects")
        for column in ("Screening date", "Consent date", "Randomized at (UTC)", "Withdrawal date"):
            assert pandas.api.types.is_datetime64_any_dtype(frame[column]), column
        assert pandas.api.types.is_integer_dtype(frame["Age at screening"])
        late = Participant.objects.get(pk=data.randomized[2].pk)
        [moment] = frame.loc[frame["Subject"] == late.randomization_number, "Randomized at (UTC)"]
        assert moment == pandas.Timestamp("2026-11-03 15:30:15")
        assert frame["Randomized at (UTC)"].isna().sum() == sum(
            1 for row in rows if row["Randomization number"].value is None
        )
    # The CSV of the same listing still writes the moment as ISO 8601 text in UTC with Z.
    subjects = csv_rows(content_of(run_now(cast.statistician, "subjects", "csv")))
    assert "2026-11-03T15:30:15Z" in [row[11] for row in subjects[1:]]


def test_the_visits_workbook_has_date_cells_and_numbers(data, cast):
    content = content_of(run_now(cast.monitor, "visits", "xlsx"))
    _headings, rows, cells = sheet_of(content, "Visits")
    participant = data.randomized[5]
    visits = list(participant.visits.order_by("target_date", "pk"))
    assert len(rows) == len(visits) > 3 and no_empty_strings(cells)
    for row, visit in zip(rows, visits, strict=True):
        assert row["Visit"].value == visit.code
        for heading, day in (
            ("Target date", visit.target_date),
            ("Window opens", visit.window_start),
            ("Window closes", visit.window_end),
            ("Visit date", visit.actual_date),
        ):
            assert is_date_cell(row[heading], day), heading
        if visit.cycle is None:
            assert row["Cycle"].value is None
        else:
            assert row["Cycle"].value == visit.cycle and row["Cycle"].data_type == "n"
    frame = pandas.read_excel(io.BytesIO(content), sheet_name="Visits")
    assert pandas.api.types.is_datetime64_any_dtype(frame["Target date"])
    assert frame["Visit date"].isna().all()


def test_the_adverse_events_workbook_has_date_cells_and_numbers(data, cast):
    content = content_of(run_now(cast.monitor, "adverse_events", "xlsx"))
    _headings, rows, cells = sheet_of(content, "Adverse events")
    events = list(AdverseEvent.objects.order_by("participant_id", "sequence", "pk"))
    assert len(rows) == len(events) == 3 and no_empty_strings(cells)
    for row, event in zip(rows, events, strict=True):
        assert row["Event number"].value == event.sequence and row["Grade"].value == event.grade
        assert row["Follows"].value == (event.follows.sequence if event.follows_id else None)
        assert row["MedDRA code"].value == TERMS[event.term].meddra_code and row["MedDRA code"].data_type == "n"
        assert is_date_cell(row["Onset date"], event.onset_date)
        assert is_date_cell(row["Resolution date"], event.resolution_date)
        assert row["Term in words"].value is None  # empty text is no cell
    assert rows[0]["Resolution date"].value is not None and rows[2]["Resolution date"].value is None
    frame = pandas.read_excel(io.BytesIO(content), sheet_name="Adverse events")
    assert pandas.api.types.is_datetime64_any_dtype(frame["Onset date"])
    assert pandas.api.types.is_integer_dtype(frame["Event number"])
    assert list(frame["Follows"].isna()) == [True, False, True]


def test_the_dataset_workbook_types_its_listings_too(data, cast):
    content = content_of(run_now(cast.statistician, "dataset", "xlsx"))
    _headings, rows, _cells = sheet_of(content, "Subjects")
    screening = Screening.objects.order_by("pk").first()
    [row] = [row for row in rows if row["Subject"].value == f"SCR-{screening.pk}"]
    assert is_date_cell(row["Screening date"], screening.screening_date)
    assert row["Randomized at (UTC)"].value is None
