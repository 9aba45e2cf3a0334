"""The Reports page, the API and every export format give the same numbers; a blinded export
has no arm anywhere; the ODM validates against the official CDISC schema and its OIDs resolve."""

from __future__ import annotations

import base64
import csv
import datetime
import io
import re
import zlib
from pathlib import Path
from xml.etree import ElementTree

import openpyxl
import pytest
import time_machine
import xmlschema
from django.conf import settings

from reports import services
from reports.models import Export, ExportStatus
from tests import factories, reports_data
from trialsite.audit import audit_context
from trialsite.models import AuditEvent, Role

ODM = "{http://www.cdisc.org/ns/odm/v1.3}"


@pytest.fixture(scope="module")
def odm_schema() -> xmlschema.XMLSchema:
    import odmlib

    path = Path(odmlib.__file__).parent / "schemas" / "odm" / "1.3.2" / "ODM1-3-2.xsd"
    return xmlschema.XMLSchema(str(path))


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def frozen():
    with time_machine.travel(datetime.datetime(2026, 12, 15, 4, tzinfo=datetime.UTC), tick=False):
        yield


@pytest.fixture
def data(trial, site, other_site, cast, frozen):
    return reports_data.build(trial, site, other_site, cast)


@pytest.fixture
def monitor_both(site, other_site):
    user = factories.make_user(Role.MONITOR, site, username="monitor-both")
    with audit_context(reason="second site"):
        user.trial_roles.create(site=other_site, role=Role.MONITOR)
    return user


@pytest.fixture
def statistician_both(site, other_site):
    user = factories.make_user(Role.STATISTICIAN, site, username="statistician-both")
    with audit_context(reason="second site"):
        user.trial_roles.create(site=other_site, role=Role.STATISTICIAN)
    return user


# --- reading the formats back ----------------------------------------------------------------


def csv_rows(content: bytes) -> list[list[str]]:
    """The rows of a CSV export: its byte order mark and any stamp lines (report tables keep
    them; listings start with their heading row) left out."""
    lines = [line for line in content.decode("utf-8-sig").splitlines() if not line.startswith("#")]
    return [row for row in csv.reader(lines) if row]


def table_totals(headings: list[str], rows: list[list]) -> dict[str, int]:
    """The "All sites" row of the enrollment table, by column heading."""
    [total] = [row for row in rows if row[0] == "All sites"]
    return {
        heading: int(value) for heading, value in zip(headings, total, strict=True) if heading not in ("Site", "Arm")
    }


def download(client, kind: str, format: str, **extra) -> bytes:
    answer = client.post("/reports/exports/", {"kind": kind, "format": format, **extra})
    assert answer.status_code == 200, answer.content[:500]
    return b"".join(answer.streaming_content)


def odm_counts(root: ElementTree.Element) -> dict[str, int]:
    subjects = root.findall(f"{ODM}ClinicalData/{ODM}SubjectData")

    def items(subject, oid):
        return [item.get("Value") for item in subject.iter(f"{ODM}ItemData") if item.get("ItemOID") == oid]

    def count(oid, predicate=lambda values: bool(values)):
        return sum(1 for subject in subjects if predicate(items(subject, oid)))

    return {
        "Screened": len(subjects),
        "Eligible": count("IT.OUTCOME", lambda values: values == ["eligible"]),
        "Screen failures": count("IT.OUTCOME", lambda values: values == ["ineligible"]),
        "Incomplete screenings": count("IT.OUTCOME", lambda values: values == ["incomplete"]),
        "Consented": count("IT.CONSENT_DATE"),
        "Enrolled": count("IT.SCREENING_NUMBER"),
        "Randomized": count("IT.RANDOMIZATION_NUMBER"),
        "Completed": count("IT.STATUS", lambda values: values == ["completed"]),
        "Withdrawn": count("IT.WITHDRAWN_ON"),
    }


REFERENCES = {
    "StudyEventRef": ("StudyEventOID", "StudyEventDef"),
    "FormRef": ("FormOID", "FormDef"),
    "ItemGroupRef": ("ItemGroupOID", "ItemGroupDef"),
    "ItemRef": ("ItemOID", "ItemDef"),
    "CodeListRef": ("CodeListOID", "CodeList"),
    "StudyEventData": ("StudyEventOID", "StudyEventDef"),
    "FormData": ("FormOID", "FormDef"),
    "ItemGroupData": ("ItemGroupOID", "ItemGroupDef"),
    "ItemData": ("ItemOID", "ItemDef"),
    "SiteRef": ("LocationOID", "Location"),
}


def odm_reference_problems(root: ElementTree.Element) -> list[str]:
    """What the XSD cannot check: every OID reference names a definition of the right kind, the
    clinical data nests as the metadata says, and coded values are in their code lists."""
    defined: dict[str, set[str]] = {}
    for kind in (
        "Study",
        "MetaDataVersion",
        "StudyEventDef",
        "FormDef",
        "ItemGroupDef",
        "ItemDef",
        "CodeList",
        "Location",
    ):
        oids = [element.get("OID") for element in root.iter(f"{ODM}{kind}")]
        assert len(oids) == len(set(oids)), f"duplicate {kind} OIDs"
        defined[kind] = set(oids)
    problems = []
    for element_name, (attribute, kind) in REFERENCES.items():
        for element in root.iter(f"{ODM}{element_name}"):
            if element.get(attribute) not in defined[kind]:
                problems.append(f"{element_name} {attribute}={element.get(attribute)} has no {kind}")
    for clinical in root.iter(f"{ODM}ClinicalData"):
        if (
            clinical.get("StudyOID") not in defined["Study"]
            or clinical.get("MetaDataVersionOID") not in defined["MetaDataVersion"]
        ):
            problems.append("ClinicalData names an unknown study or metadata version")
    for reference in root.iter(f"{ODM}MetaDataVersionRef"):
        if reference.get("MetaDataVersionOID") not in defined["MetaDataVersion"]:
            problems.append("MetaDataVersionRef names an unknown metadata version")
    children = {
        "StudyEventDef": ("FormRef", "FormOID"),
        "FormDef": ("ItemGroupRef", "ItemGroupOID"),
        "ItemGroupDef": ("ItemRef", "ItemOID"),
    }
    allowed = {
        (kind, element.get("OID")): {child.get(attribute) for child in element.iter(f"{ODM}{child_name}")}
        for kind, (child_name, attribute) in children.items()
        for element in root.iter(f"{ODM}{kind}")
    }
    nesting = [
        ("StudyEventData", "StudyEventOID", "StudyEventDef", "FormData", "FormOID"),
        ("FormData", "FormOID", "FormDef", "ItemGroupData", "ItemGroupOID"),
        ("ItemGroupData", "ItemGroupOID", "ItemGroupDef", "ItemData", "ItemOID"),
    ]
    for parent_name, parent_attribute, kind, child_name, child_attribute in nesting:
        for parent in root.iter(f"{ODM}{parent_name}"):
            for child in parent.findall(f"{ODM}{child_name}"):
                if child.get(child_attribute) not in allowed.get((kind, parent.get(parent_attribute)), set()):
                    problems.append(
                        f"{child_name} {child.get(child_attribute)} not allowed in {parent.get(parent_attribute)}"
                    )
    code_lists = {
        code_list.get("OID"): {item.get("CodedValue") for item in code_list.iter(f"{ODM}CodeListItem")}
        for code_list in root.iter(f"{ODM}CodeList")
    }
    item_code_list = {
        item.get("OID"): item.find(f"{ODM}CodeListRef").get("CodeListOID")
        for item in root.iter(f"{ODM}ItemDef")
        if item.find(f"{ODM}CodeListRef") is not None
    }
    for item in root.iter(f"{ODM}ItemData"):
        code_list = item_code_list.get(item.get("ItemOID"))
        if code_list and item.get("Value") not in code_lists[code_list]:
            problems.append(f"{item.get('ItemOID')}={item.get('Value')} not in {code_list}")
    return problems


def run_now(user, kind: str, format: str, **extra) -> Export:
    export = services.export_request(user=user, kind=kind, format=format, background=False, **extra)
    assert export.status == ExportStatus.DONE
    return export


def content_of(export: Export) -> bytes:
    return (Path(settings.MEDIA_ROOT) / export.file_path).read_bytes()


# --- the tests -------------------------------------------------------------------------------


def test_the_page_the_csv_the_xlsx_the_odm_and_the_api_agree(data, monitor_both, client_for, api_for, odm_schema):
    client = client_for(monitor_both)
    page = client.get("/reports/")
    assert page.status_code == 200
    page_totals = {key: int(value) for key, value in re.findall(rb'data-count="all-(\w+)">(\d+)<', page.content)}
    page_totals = {key.decode(): value for key, value in page_totals.items()}
    api = api_for(monitor_both).get("/api/v1/reports/enrollment/").json()
    assert api["total"] == page_totals

    rows = csv_rows(download(client, "enrollment", "csv"))
    csv_totals = table_totals(rows[0], rows[1:])

    workbook = openpyxl.load_workbook(io.BytesIO(download(client, "enrollment", "xlsx")), read_only=True)
    sheet = list(workbook.worksheets[1].iter_rows(values_only=True))
    xlsx_totals = table_totals(list(sheet[0]), [list(row) for row in sheet[1:]])
    assert xlsx_totals == csv_totals

    odm = content_of(run_now(monitor_both, "dataset", "odm"))
    odm_schema.validate(odm.decode("utf-8"))
    from_odm = odm_counts(ElementTree.fromstring(odm))

    labels = dict(
        zip(
            [
                "screened",
                "eligible",
                "screen_failures",
                "incomplete",
                "consented",
                "enrolled",
                "randomized",
                "on_treatment",
                "completed",
                "withdrawn",
                "died",
            ],
            rows[0][1:],
            strict=True,
        )
    )
    for key, label in labels.items():
        expected = data.expected["NT"][key] + data.expected["SH"][key]
        assert page_totals[key] == csv_totals[label] == expected, key
        if label in from_odm:
            assert from_odm[label] == expected, key


def test_the_subjects_listing_has_one_row_per_screening_and_agrees_with_the_odm(data, monitor_both):
    rows = csv_rows(content_of(run_now(monitor_both, "subjects", "csv")))
    headings, body = rows[0], rows[1:]
    assert len(body) == 17
    randomized = [row for row in body if row[headings.index("Randomization number")]]
    assert len(randomized) == 10
    # Never a name, initials or a hospital record number.
    text = "\n".join(",".join(row) for row in rows)
    assert "HRN" not in text and ",TS," not in text


def test_the_odm_validates_and_every_oid_reference_resolves(data, statistician_both, monitor_both, odm_schema):
    for user in (statistician_both, monitor_both):
        export = run_now(user, "dataset", "odm")
        document = content_of(export).decode("utf-8")
        odm_schema.validate(document)
        root = ElementTree.fromstring(document)
        assert odm_reference_problems(root) == []
        assert root.get("ODMVersion") == "1.3.2"
        assert root.get("FileOID").endswith(f"V{export.data_version}")
        assert root.get("Originator") == user.username
        keys = [subject.get("SubjectKey") for subject in root.iter(f"{ODM}SubjectData")]
        assert len(keys) == len(set(keys)) == 17
        assert all(not key.startswith("HRN") for key in keys)


def test_the_unblinded_odm_carries_the_arm_of_each_participant(data, statistician_both):
    root = ElementTree.fromstring(content_of(run_now(statistician_both, "dataset", "odm")))
    arms = {}
    for subject in root.iter(f"{ODM}SubjectData"):
        # The subject key is the permanent key; the randomization number is an item.
        values = {item.get("ItemOID"): item.get("Value") for item in subject.iter(f"{ODM}ItemData")}
        if "IT.ARM" in values:
            arms[values["IT.RANDOMIZATION_NUMBER"]] = values["IT.ARM"]
    assert arms == data.arms


def test_a_broken_oid_reference_is_caught(data, monitor_both):
    document = content_of(run_now(monitor_both, "dataset", "odm")).decode("utf-8")
    broken = document.replace('ItemOID="IT.SEX" Mandatory', 'ItemOID="IT.SEXX" Mandatory', 1)
    problems = odm_reference_problems(ElementTree.fromstring(broken))
    assert problems[0] == "ItemRef ItemOID=IT.SEXX has no ItemDef"
    assert "ItemData IT.SEX not allowed in IG.SCREENING" in problems


def pdf_text(content: bytes) -> str:
    """The page streams of a PDF, inflated, so that the text drawn on the pages can be searched."""
    text = []
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", content, re.S):
        stream = stream.strip()
        if stream.endswith(b"~>"):
            stream = base64.a85decode(stream, adobe=True)
        try:
            text.append(zlib.decompress(stream).decode("latin-1"))
        except zlib.error:
            text.append(stream.decode("latin-1"))
    return "\n".join(text)


def test_a_blinded_pis_exports_have_no_arm_anywhere(data, cast, client_for, api_for):
    """Every format, every table: no arm code or name, not in a heading, a cell, a code list
    or a diagram."""
    client = client_for(cast.investigator)
    files = {}
    for kind in ("enrollment", "screen_failures", "enrollment_by_month", "consort"):
        files[f"{kind}.csv"] = download(client, kind, "csv")
        workbook = openpyxl.load_workbook(io.BytesIO(download(client, kind, "xlsx")), read_only=True)
        files[f"{kind}.xlsx"] = repr(
            [list(sheet.iter_rows(values_only=True)) for sheet in workbook.worksheets]
        ).encode()
    files["consort.svg"] = download(client, "consort_diagram", "svg")
    for kind, format in [("subjects", "csv"), ("visits", "csv"), ("dataset", "odm"), ("dataset", "xlsx")]:
        content = content_of(run_now(cast.investigator, kind, format))
        if format == "xlsx":
            workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True)
            content = repr([list(sheet.iter_rows(values_only=True)) for sheet in workbook.worksheets]).encode()
        files[f"{kind}.{format}"] = content
    files["report.pdf"] = pdf_text(download(client, "report", "pdf")).encode("latin-1")
    assert b"Allocated" in files["report.pdf"]  # the PDF text really is searchable
    files["page"] = client.get("/reports/").content
    files["api"] = api_for(cast.investigator).get("/api/v1/reports/enrollment/").content
    files["api-consort"] = api_for(cast.investigator).get("/api/v1/reports/consort/").content
    for name, content in files.items():
        for word in reports_data.ARM_WORDS:
            assert word.encode() not in content, f"{word} in {name}"
    assert b"Arm" not in files["subjects.csv"]


def test_the_unblinded_statistician_sees_arm_columns(data, cast, client_for):
    rows = csv_rows(download(client_for(cast.statistician), "enrollment", "csv"))
    assert rows[0][:2] == ["Site", "Arm"]
    assert {row[1] for row in rows[1:]} == {"All arms", "TOC", "ASA", "COMBO", "PBO"}
    subjects = csv_rows(content_of(run_now(cast.statistician, "subjects", "csv")))
    assert subjects[0][-1] == "Arm"
    arms = {row[0]: row[-1] for row in subjects[1:] if row[-1]}
    assert arms == {number: arm for number, arm in data.arms.items() if number.startswith("NT")}


def test_every_export_is_stamped_and_in_the_audit_trail(data, cast, client_for):
    content = download(client_for(cast.investigator), "enrollment", "csv").decode("utf-8-sig")
    export = Export.objects.get(requested_by=cast.investigator)
    stamp = content.splitlines()[:3]
    assert stamp[0].startswith("# NCT06442709 export")
    assert "Exported by investigator at 2026-12-15T04:00:00Z (UTC); data version" in stamp[1]
    assert f"data version {export.data_version}" in stamp[1]
    assert "blinded" in stamp[2]
    # A blinded export's data version counts the events its reader's trail shows (the site's and
    # the trial's own), never an event id, whose step would count writes hidden from them
    # (tests/test_audit_gaps.py).
    from trialsite.selectors import audit_events_for

    shown = audit_events_for(cast.investigator).filter(site_id__isnull=False).count()
    trial_rows = AuditEvent.objects.filter(table_name__in=["trialsite_trial", "trialsite_protocolversion"]).count()
    assert export.data_version == shown + trial_rows
    unblinded = services.export_request(user=cast.statistician, kind="enrollment", format="csv", background=False)
    assert unblinded.data_version == AuditEvent.objects.exclude(table_name="reports_export").latest("id").id
    assert export.row_count == 2 and export.blinded and export.site_ids == [cast.investigator.trial_roles.get().site_id]
    audit = AuditEvent.objects.filter(table_name="reports_export", record_pk=str(export.pk))
    assert audit.filter(action="INSERT", actor=cast.investigator).exists()
    assert audit.filter(action="UPDATE", new_values__status="done").exists()


def test_spreadsheet_formulas_in_the_data_are_defused(data, cast, site):
    from reports.exports import safe_cell

    assert safe_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert safe_cell("+1") == "'+1"
    assert safe_cell("@SUM") == "'@SUM"
    assert safe_cell("\tx") == "'\tx"
    assert safe_cell("-2") == "'-2"
    assert safe_cell(-2) == -2
    assert safe_cell("NT-0001") == "NT-0001"
    # A stored reason is data, never a formula, in CSV and in XLSX. A code the protocol does not
    # know is labelled by itself (a screening's own text is never a label: it names the person).
    criteria_text = "=cmd|' /C calc'!A0"
    with audit_context(reason="test"):
        from enrollment.models import Screening

        screening = reports_data.fail_screening(site, by=cast.coordinator, reasons=["EX1"])
        Screening.objects.filter(pk=screening.pk).update(reasons=[{"code": criteria_text, "text": "age 17"}])
    rows = csv_rows(content_of(run_now(cast.investigator, "screen_failures", "csv")))
    assert ["'" + criteria_text, "'" + criteria_text] == rows[-2][:2]
    workbook = openpyxl.load_workbook(io.BytesIO(content_of(run_now(cast.investigator, "screen_failures", "xlsx"))))
    values = [cell.value for row in workbook.worksheets[1].iter_rows() for cell in row]
    assert "'" + criteria_text in values and criteria_text not in values


def test_headings_are_in_chinese_for_a_chinese_speaking_user(data, cast, client_for):
    client = client_for(cast.investigator)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    rows = csv_rows(download(client, "enrollment", "csv"))
    assert "筛选" in "".join(rows[0])


def test_the_consort_svg_and_png_are_drawn_from_the_same_numbers(data, cast, client_for):
    client = client_for(cast.statistician)
    svg = download(client, "consort_diagram", "svg").decode()
    ElementTree.fromstring(svg)
    assert "Assessed for eligibility (n=14)" in svg
    assert "Randomized (n=8)" in svg
    assert "Allocated to Tocilizumab" in svg
    png = download(client, "consort_diagram", "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    assert image.width > 800


def test_the_pdf_report_is_a_pdf_with_the_numbers(data, cast, client_for):
    content = download(client_for(cast.investigator), "report", "pdf")
    assert content.startswith(b"%PDF-")
    text = pdf_text(content)
    assert "Assessed for eligibility \\(n=14\\)" in text


def test_listings_are_queued_in_the_background_and_downloaded_only_by_the_requester(
    data, cast, client_for, api_for, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        answer = api_for(cast.investigator).post(
            "/api/v1/exports/", {"kind": "dataset", "format": "odm"}, format="json"
        )
    assert answer.status_code == 202
    assert len(callbacks) == 1
    body = answer.json()
    assert body["status"] == "queued" and body["download_url"] is None
    assert services.export_run(export_id=body["id"]) is True
    assert services.export_run(export_id=body["id"]) is False  # a second delivery changes nothing
    detail = api_for(cast.investigator).get(f"/api/v1/exports/{body['id']}/").json()
    assert detail["status"] == "done" and detail["progress"] == 100
    assert client_for(cast.investigator).get(detail["download_url"]).status_code == 200
    assert client_for(cast.monitor).get(detail["download_url"]).status_code == 404
    assert api_for(cast.monitor).get(f"/api/v1/exports/{body['id']}/").status_code == 404


def test_the_api_refuses_a_format_a_kind_does_not_come_in(cast, api_for):
    answer = api_for(cast.investigator).post("/api/v1/exports/", {"kind": "dataset", "format": "csv"}, format="json")
    assert answer.status_code == 400
    assert "format" in answer.json()
    assert api_for(cast.coordinator).post("/api/v1/exports/", {"kind": "dataset", "format": "odm"}).status_code == 404
    assert api_for(cast.investigator).get("/api/v1/reports/enrollment/?site=abc").status_code == 404


def test_the_reports_page_is_in_the_menu_of_those_who_may_export(cast, client_for):
    assert b'href="/reports/"' in client_for(cast.investigator).get("/").content
    assert b'href="/reports/"' not in client_for(cast.coordinator).get("/").content
    assert client_for(cast.coordinator).get("/reports/").status_code == 404


def test_a_blinded_export_never_queries_an_arm(data, cast):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        for kind, format in [("dataset", "odm"), ("dataset", "xlsx"), ("subjects", "csv"), ("report", "pdf")]:
            run_now(cast.investigator, kind, format)
    sql = " ".join(query["sql"] for query in queries.captured_queries)
    assert "enrollment_screening" in sql
    # Read from, not named: the data version's count of the blinded trail names every audited
    # table as a value of the trail's table_name.
    assert not re.search(r'(?:FROM|JOIN)\s+"?(?:randomization_slot|trialsite_arm)\b', sql, re.IGNORECASE)


def test_the_csv_and_odm_built_by_postgresql_equal_those_built_from_the_python_rows(
    data, cast, site, statistician_both, monitor_both, monkeypatch
):
    """For CSV and ODM PostgreSQL formats the large listings; XLSX and PDF use the Python rows.
    Both must give the same bytes, including the edge cases each cell has."""
    from enrollment.models import Screening
    from reports import exports, selectors
    from schedules.models import Visit
    from schedules.services import visit_schedule_create

    coordinator = cast.coordinator
    leap = factories.make_screening(
        site, by=coordinator, date_of_birth=datetime.date(2000, 2, 29), screening_date=datetime.date(2026, 2, 28)
    )
    factories.make_screening(
        site, by=coordinator, date_of_birth=datetime.date(1966, 11, 2), screening_date=datetime.date(2026, 11, 2)
    )
    awkward = factories.make_screening(site, by=coordinator, eligible=False)
    with audit_context(actor=coordinator, reason="edge cases of the export"):
        Screening.objects.filter(pk=awkward.pk).update(reasons=[{"code": "a\"b<c>&d'e\\f\ng\th\r中"}])
        Screening.objects.filter(pk=leap.pk).update(
            reasons=[{"code": "=HYPERLINK(1)"}, "not a dict", {"text": "no code"}, {"code": "-EX2"}],
            sex="+",
        )
        for participant in data.randomized[:2]:
            visits = visit_schedule_create(participant=participant, day0=datetime.date(2026, 11, 3))
        Visit.objects.filter(pk=visits[0].pk).update(actual_date=datetime.date(2026, 11, 4), status="completed")

    # Small blocks, so the listing is read in several COPYs as 100,000 participants would be.
    monkeypatch.setattr(exports, "COPY_BLOCK_SUBJECTS", 4)
    outputs = {}
    for user in (statistician_both, monitor_both):
        scope = selectors.report_scope(user)
        stamp = exports.make_stamp(scope, export_id=7)
        for kind in ("subjects", "visits"):
            written = {}
            for use_copy in (True, False):
                stream = io.StringIO(newline="")
                count = exports.write_csv(exports.tables_for(kind, scope), stream, stamp, use_copy=use_copy)
                written[use_copy] = (count, stream.getvalue())
            assert written[True] == written[False], (user.username, kind)
            assert written[True][0] > 2
            outputs[user.username, kind] = written[True][1]

        written = {}
        for use_sql in (True, False):
            stream = io.StringIO()
            count = exports.write_odm(scope, stream, stamp, use_sql=use_sql)
            written[use_sql] = (count, stream.getvalue())
        assert written[True] == written[False], (user.username, "odm")
        outputs[user.username, "odm"] = written[True][1]

    assert "completed,2026-11-04" in outputs["monitor-both", "visits"]
    odm = outputs["monitor-both", "odm"]
    assert 'Value="&apos;' not in odm and 'Value="=HYPERLINK(1);;-EX2"' in odm
    assert 'Value="a&quot;b&lt;c&gt;&amp;d\'e&#92;f&#10;g&#9;h&#13;中"' in odm
    assert 'ItemOID="IT.VISIT_DATE" Value="2026-11-04"' in odm and "IT.ARM" not in odm
    assert 'ItemOID="IT.ARM"' in outputs["statistician-both", "odm"]
    assert "Arm" in outputs["statistician-both", "subjects"] and "Arm" not in outputs["monitor-both", "subjects"]
    subjects = csv_rows(outputs["monitor-both", "subjects"].encode())
    leap_row = next(row for row in subjects if row[3] == "'+")
    assert leap_row[4] == "25"  # 28 February 2026: the 26th birthday (1 March) has not come
    assert leap_row[6] == "'=HYPERLINK(1);;-EX2"  # the cell as a whole is neutralized
