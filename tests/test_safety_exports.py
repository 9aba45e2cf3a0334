"""Adverse events in the exports (issue 18): one row per AE record in CSV and XLSX, equal to the
database; no arm blinded, the arm unblinded; only the sites the requester may report on."""

from __future__ import annotations

import datetime
import io
from pathlib import Path
from xml.etree import ElementTree

import openpyxl
import pytest
import time_machine
import xmlschema
from django.conf import settings
from django.utils import translation

from reports import services
from reports.models import Export, ExportStatus
from safety import services as safety
from safety.ctcae import TERMS
from safety.models import AdverseEvent, Seriousness
from tests import reports_data
from tests.test_reports_exports import ODM, csv_rows, odm_reference_problems

pytestmark = pytest.mark.django_db

UTC = datetime.UTC


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def frozen():
    with time_machine.travel(datetime.datetime(2026, 12, 15, 4, tzinfo=UTC), tick=False):
        yield


@pytest.fixture
def data(trial, site, other_site, cast, frozen):
    return reports_data.build(trial, site, other_site, cast)


@pytest.fixture
def events(data, cast):
    """At Nantong: an epistaxis whose grade went from 1 to 3 (two records), and a serious sepsis
    with relation and action per product. At Shanghai: a nausea."""
    nantong = next(participant for participant in data.randomized if participant.site.code == "NT")
    shanghai = next(participant for participant in data.randomized if participant.site.code == "SH")
    first = safety.ae_record(
        participant=nantong,
        recorded_by=cast.coordinator,
        details=safety.AeDetails(term="epistaxis", grade=1, onset_date=datetime.date(2026, 12, 10)),
    )
    change = safety.ae_grade_change(
        event=first,
        recorded_by=cast.coordinator,
        details=safety.AeDetails(grade=3, onset_date=datetime.date(2026, 12, 12), relation_tablets="possible"),
    )
    serious = safety.ae_record(
        participant=nantong,
        recorded_by=cast.coordinator,
        details=safety.AeDetails(
            term="sepsis",
            grade=4,
            onset_date=datetime.date(2026, 12, 13),
            serious=True,
            seriousness=(Seriousness.HOSPITALISATION, Seriousness.LIFE_THREATENING),
            awareness_at=datetime.datetime(2026, 12, 13, 9, tzinfo=UTC),
            relation_infusion="probable",
            relation_tablets="unlikely",
            action_infusion="held",
            action_tablets="none",
        ),
    )
    other = safety.ae_record(
        participant=shanghai,
        recorded_by=cast.other_coordinator,
        details=safety.AeDetails(term="nausea", grade=1, onset_date=datetime.date(2026, 12, 11)),
    )
    return {"first": first, "change": change, "serious": serious, "other": other}


def run_now(user, kind: str, format: str) -> Export:
    export = services.export_request(user=user, kind=kind, format=format, background=False)
    assert export.status == ExportStatus.DONE
    return export


def content_of(export: Export) -> bytes:
    return (Path(settings.MEDIA_ROOT) / export.file_path).read_bytes()


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def expected_row(event: AdverseEvent) -> list[str]:
    """The row the database says, written independently of the export's code."""
    event.refresh_from_db()
    participant = event.participant
    term = TERMS[event.term]
    return [
        participant.randomization_number or participant.screening_number,
        event.site.code,
        str(event.sequence),
        str(event.follows.sequence) if event.follows_id else "",
        event.term,
        term.term,
        str(term.meddra_code or ""),
        event.term_text,
        str(event.grade),
        event.onset_date.isoformat(),
        event.resolution_date.isoformat() if event.resolution_date else "",
        yes_no(event.serious),
        *[yes_no(criterion.value in event.seriousness) for criterion in Seriousness],
        event.relation_infusion,
        event.relation_tablets,
        event.action_infusion,
        event.action_tablets,
        event.outcome,
        yes_no(event.special_interest),
        event.protocol_version.version,
    ]


def test_the_blinded_csv_has_one_row_per_ae_record_equal_to_the_database_and_no_arm(events, cast):
    rows = csv_rows(content_of(run_now(cast.monitor, "adverse_events", "csv")))
    headings, body = rows[0], rows[1:]
    assert body == [expected_row(events[name]) for name in ("first", "change", "serious")]
    assert "Arm" not in headings
    assert headings[:4] == ["Subject", "Site", "Event number", "Follows"]
    by_heading = [dict(zip(headings, row, strict=True)) for row in body]
    # The grade change follows the first record; the first ended on the day of the change.
    assert [row["Follows"] for row in by_heading] == ["", "1", ""]
    assert by_heading[0]["Resolution date"] == "2026-12-12" and by_heading[1]["Grade"] == "3"
    assert by_heading[0]["MedDRA code"] == "10015090" and by_heading[0]["Special interest"] == "yes"
    serious = by_heading[2]
    assert serious["Serious"] == "yes"
    assert serious["Required or prolonged hospitalisation"] == serious["Life-threatening"] == "yes"
    assert serious["Resulted in death"] == "no"
    assert serious["Relation to the study infusion"] == "probable"
    assert serious["Action taken with the study infusion"] == "held"
    text = content_of(Export.objects.latest("id")).decode()
    for word in reports_data.ARM_WORDS:
        assert word not in text
    # Shanghai's event is not the Nantong monitor's.
    assert "nausea" not in text


def test_the_unblinded_export_adds_the_participants_arm(events, data, cast):
    rows = csv_rows(content_of(run_now(cast.statistician, "adverse_events", "csv")))
    headings, body = rows[0], rows[1:]
    assert headings[-1] == "Arm"
    subject = body[0][0]
    assert [row[-1] for row in body] == [data.arms[subject]] * 3
    assert [row[:-1] for row in body] == [expected_row(events[name]) for name in ("first", "change", "serious")]
    workbook = openpyxl.load_workbook(io.BytesIO(content_of(run_now(cast.statistician, "adverse_events", "xlsx"))))
    # The workbook's cells are typed (dates as date cells, numbers as numbers); as text they are the CSV's.
    sheet = [
        [
            "" if cell is None else cell.date().isoformat() if isinstance(cell, datetime.datetime) else str(cell)
            for cell in row
        ]
        for row in workbook.worksheets[1].iter_rows(values_only=True)
    ]
    assert sheet == rows


def test_the_background_listing_and_the_dataset_workbook_carry_the_adverse_events(events, cast):
    assert "adverse_events" in services.BACKGROUND_KINDS
    workbook = openpyxl.load_workbook(io.BytesIO(content_of(run_now(cast.monitor, "dataset", "xlsx"))))
    sheet = workbook["Adverse events"]
    assert sheet.max_row == 4 and sheet.cell(1, 1).value == "Subject"


def test_the_headings_are_in_chinese_for_a_chinese_speaking_user(events, cast):
    with translation.override("zh-hans"):
        export = run_now(cast.monitor, "adverse_events", "csv")
    headings = csv_rows(content_of(export))[0]
    assert headings[:4] == ["受试者", "中心", "事件编号", "接续于"]
    assert all(not heading.isascii() for heading in headings)


@pytest.fixture(scope="module")
def odm_schema() -> xmlschema.XMLSchema:
    import odmlib

    path = Path(odmlib.__file__).parent / "schemas" / "odm" / "1.3.2" / "ODM1-3-2.xsd"
    return xmlschema.XMLSchema(str(path))


def ae_groups(document: str) -> dict[str, list[dict[str, str]]]:
    """Each subject's IG.AE repeats, as {item OID: value}, in repeat key order."""
    groups = {}
    for subject in ElementTree.fromstring(document).iter(f"{ODM}SubjectData"):
        repeats = [group for group in subject.iter(f"{ODM}ItemGroupData") if group.get("ItemGroupOID") == "IG.AE"]
        if repeats:
            assert [group.get("ItemGroupRepeatKey") for group in repeats] == [
                str(n) for n in range(1, len(repeats) + 1)
            ]
            groups[subject.get("SubjectKey")] = [
                {item.get("ItemOID"): item.get("Value") for item in group.iter(f"{ODM}ItemData")} for group in repeats
            ]
    return groups


def test_the_odm_carries_each_ae_record_as_a_repeat_and_validates(events, cast, odm_schema):
    document = content_of(run_now(cast.monitor, "dataset", "odm")).decode("utf-8")
    odm_schema.validate(document)
    assert odm_reference_problems(ElementTree.fromstring(document)) == []
    groups = ae_groups(document)
    [(subject, repeats)] = groups.items()
    assert subject == events["first"].participant.screening.subject_key
    [numbered] = [
        item.get("Value")
        for element in ElementTree.fromstring(document).iter(f"{ODM}SubjectData")
        if element.get("SubjectKey") == subject
        for item in element.iter(f"{ODM}ItemData")
        if item.get("ItemOID") == "IT.RANDOMIZATION_NUMBER"
    ]
    assert numbered == events["first"].participant.randomization_number
    csv_body = csv_rows(content_of(run_now(cast.monitor, "adverse_events", "csv")))[1:]
    for repeat, row, name in zip(repeats, csv_body, ("first", "change", "serious"), strict=True):
        event = events[name]
        event.refresh_from_db()
        assert repeat["IT.AE_SEQUENCE"] == str(event.sequence) == row[2]
        assert repeat.get("IT.AE_FOLLOWS", "") == row[3]
        assert repeat["IT.AE_TERM"] == event.term and repeat["IT.AE_GRADE"] == str(event.grade)
        assert repeat.get("IT.AE_MEDDRA", "") == row[6]
        assert repeat["IT.AE_ONSET_DATE"] == event.onset_date.isoformat()
        assert repeat.get("IT.AE_RESOLUTION_DATE", "") == row[10]
        assert repeat["IT.AE_SERIOUS"] == row[11]
        assert repeat["IT.AE_OUTCOME"] == event.outcome
        assert repeat["IT.AE_VERSION"] == event.protocol_version.version
    serious = repeats[2]
    assert serious["IT.AE_SER_HOSPITALISATION"] == serious["IT.AE_SER_LIFE_THREATENING"] == "yes"
    assert serious["IT.AE_SER_DEATH"] == "no"
    assert (serious["IT.AE_RELATION_INFUSION"], serious["IT.AE_ACTION_INFUSION"]) == ("probable", "held")
    assert repeats[1]["IT.AE_FOLLOWS"] == "1" and repeats[1]["IT.AE_RELATION_TABLETS"] == "possible"
    assert "IT.ARM" not in document


def test_the_odm_built_by_postgresql_equals_the_one_built_from_the_python_rows(
    events, cast, site, other_site, odm_schema
):
    """With AEs at both sites, awkward text in the words, and both scopes."""
    from reports import exports, selectors
    from tests import factories
    from trialsite.audit import audit_context
    from trialsite.models import Role

    with audit_context(reason="edge case of the export"):
        AdverseEvent.objects.filter(pk=events["other"].pk).update(term="other", term_text='a"b<c>&d\\e\nf中')
        statistician = factories.make_user(Role.STATISTICIAN, site, username="statistician-both")
        statistician.trial_roles.create(site=other_site, role=Role.STATISTICIAN)
    for user in (statistician, cast.monitor):
        scope = selectors.report_scope(user)
        stamp = exports.make_stamp(scope, export_id=7)
        written = {}
        for use_sql in (True, False):
            stream = io.StringIO()
            count = exports.write_odm(scope, stream, stamp, use_sql=use_sql)
            written[use_sql] = (count, stream.getvalue())
        assert written[True] == written[False], user.username
        odm_schema.validate(written[True][1])
        groups = ae_groups(written[True][1])
        if user == statistician:
            assert len(groups) == 2 and 'Value="a&quot;b&lt;c&gt;&amp;d&#92;e&#10;f中"' in written[True][1]
            assert 'ItemOID="IT.ARM"' in written[True][1]
        else:
            assert len(groups) == 1


def test_the_reports_page_offers_the_listing_and_it_is_queued_in_the_background(
    events, cast, client_for, django_capture_on_commit_callbacks
):
    client = client_for(cast.monitor)
    page = client.get("/reports/").content.decode()
    assert 'name="kind" value="adverse_events"' in page
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        answer = client.post("/reports/exports/", {"kind": "adverse_events", "format": "xlsx"})
    assert answer.status_code == 302 and len(callbacks) == 1
    export = Export.objects.get(requested_by=cast.monitor, kind="adverse_events")
    assert export.status == ExportStatus.QUEUED and export.blinded
    assert services.export_run(export_id=export.pk) is True
    workbook = openpyxl.load_workbook(io.BytesIO(content_of(Export.objects.get(pk=export.pk))))
    assert workbook.worksheets[1].max_row == 4
