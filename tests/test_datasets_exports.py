"""Issue 19 in the Reports app: the analysis package as a background export in every format a
statistician opens (a CSV zip, XLSX, SAS transport, SPSS, Stata), blinded unless the requester
may view allocation at every site; and the listing CSVs start with their heading row."""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import re
import subprocess
import zipfile
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest
import time_machine
from django.conf import settings

from reports import exports, selectors, services
from reports.models import Export, ExportStatus
from tests import reports_data
from tests.test_reports_exports import content_of, csv_rows, run_now
from trialsite.text import defuse_formula

BOM = b"\xef\xbb\xbf"
ANALYSIS_FORMATS = ["csv", "xlsx", "xpt", "sav", "dta"]


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def data(trial, site, other_site, cast):
    with time_machine.travel(datetime.datetime(2026, 12, 15, 4, tzinfo=datetime.UTC), tick=False):
        yield reports_data.build(trial, site, other_site, cast)


# --- The listings: the heading row first, a byte order mark ------------------------------------


@pytest.mark.parametrize("kind", ["subjects", "visits", "adverse_events"])
def test_a_listing_csv_starts_with_its_heading_row_and_pandas_reads_it_with_no_options(data, cast, kind):
    content = content_of(run_now(cast.investigator, kind, "csv"))
    assert content.startswith(BOM)
    text = content.decode("utf-8-sig")
    assert not any(line.startswith("#") for line in text.splitlines())
    scope = selectors.report_scope(cast.investigator)
    [table] = exports.tables_for(kind, scope)
    assert text.split("\r\n", 1)[0].split(",") == table.headings
    frame = pd.read_csv(io.BytesIO(content))
    assert list(frame.columns) == table.headings
    rows = csv_rows(content)[1:]
    assert len(frame) == len(rows)
    if kind == "subjects":
        assert len(frame) == 14  # every screening of reports_data at the investigator's site
        assert sorted(frame[table.headings[0]].astype(str)) == sorted(row[0] for row in rows)


def test_a_report_table_csv_keeps_its_stamp_after_the_byte_order_mark(data, cast):
    content = content_of(run_now(cast.investigator, "enrollment", "csv"))
    assert content.startswith(BOM + b"# NCT06442709 export")


# --- The analysis package on the Reports page and over the API ---------------------------------


def test_the_reports_page_offers_the_analysis_package_in_every_format(cast, client_for):
    page = client_for(cast.statistician).get("/reports/").content.decode()
    start = page.index('name="kind" value="analysis"')
    row = page[start : page.index("</tr>", start)]
    for format in ANALYSIS_FORMATS:
        assert f'name="format" value="{format}"' in row
    for button in ("CSV (zip)", "XLSX", "SAS (XPT)", "SPSS", "Stata"):
        assert f">{button}</button>" in row


def test_the_analysis_package_is_queued_in_the_background_and_has_no_odm(
    cast, api_for, django_capture_on_commit_callbacks
):
    api = api_for(cast.statistician)
    refused = api.post("/api/v1/exports/", {"kind": "analysis", "format": "odm"}, format="json")
    assert refused.status_code == 400 and "format" in refused.json()
    for format in ANALYSIS_FORMATS:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            answer = api.post("/api/v1/exports/", {"kind": "analysis", "format": format}, format="json")
        assert answer.status_code == 202, answer.content
        assert len(callbacks) == 1
        body = answer.json()
        assert body["kind"] == "analysis" and body["format"] == format and body["status"] == "queued"
        export = Export.objects.get(pk=body["id"])
        extension = "xlsx" if format == "xlsx" else "zip"
        assert export.file_name == f"NCT06442709-analysis-{export.pk}.{extension}"
        assert services.content_type(export) == (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            if format == "xlsx"
            else "application/zip"
        )
    assert api_for(cast.coordinator).post(
        "/api/v1/exports/", {"kind": "analysis", "format": "csv"}, format="json"
    ).status_code in (403, 404)


# --- The package built from the database (datasets.build) --------------------------------------


@pytest.fixture
def builder():
    from datasets import build

    return build


def unpacked(export: Export) -> dict[str, bytes]:
    content = content_of(export)
    if export.format == "xlsx":
        return {"workbook.xlsx": content}
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def workbook_text(content: bytes) -> bytes:
    sheets = pd.read_excel(io.BytesIO(content), sheet_name=None)
    return repr({name: sheet.astype(str).values.tolist() for name, sheet in sheets.items()}).encode()


@pytest.mark.parametrize("format", ANALYSIS_FORMATS)
def test_a_blinded_analysis_package_has_no_arm_anywhere_and_says_it_is_blinded(data, cast, builder, format):
    export = run_now(cast.investigator, "analysis", format)
    assert export.blinded
    files = unpacked(export)
    if format == "xlsx":
        manifest = dict(pd.read_excel(io.BytesIO(files["workbook.xlsx"]), sheet_name="manifest").values.tolist())
        assert manifest["blinded"] == 1 and manifest["export_id"] == export.pk
        files = {"workbook": workbook_text(files["workbook.xlsx"])}
    else:
        manifest = json.loads(files["manifest.json"])
        assert manifest["blinded"] is True and manifest["export_id"] == export.pk
        assert manifest["data_version"] == export.data_version
        assert manifest["site_codes"] == ["NT"]
        assert sum(entry["rows"] for entry in manifest["datasets"]) == export.row_count
        assert set(manifest["files"]) == set(files) - {"manifest.json"}
    for name, content in files.items():
        for word in reports_data.ARM_WORDS:
            # As a word: the SAS name PROTOCOL holds the letters of the arm code TOC.
            assert not re.search(rb"(?<![A-Za-z])" + word.encode() + rb"(?![A-Za-z])", content), (
                f"{word} in {name} ({format})"
            )


def normalized(kind: str, value, format: str):
    """A value as read back by the statistician's tools, in one comparable form: None when
    missing, text as the CSV has it, numbers as floats, dates and UTC moments as Python values."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if kind == "text":
        text = str(value)
        if format in ("xpt", "sav", "dta"):
            # No missing text in these formats; CSV and XLSX defuse formulas, these do not.
            return defuse_formula(text) if text else None
        return text.replace("\r\n", "\n") if format == "xlsx" else text
    if kind in ("integer", "decimal", "boolean"):
        return float(Decimal(value) if isinstance(value, str) else value)
    if kind == "date":
        if isinstance(value, str):
            return datetime.date.fromisoformat(value)
        return value.date() if isinstance(value, datetime.datetime) else value
    if kind == "datetime":
        if isinstance(value, str):
            return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
        return pd.Timestamp(value).to_pydatetime()
    raise AssertionError(kind)


def test_the_unblinded_statisticians_package_has_the_same_values_in_every_format(
    data, cast, builder, statistician_both, client_for, tmp_path
):
    """Every value of every dataset, read back from the CSV (csv module and pandas), the
    workbook (pandas), SAS transport, SPSS and Stata (pyreadstat), is the same value."""
    exports_by_format = {format: run_now(statistician_both, "analysis", format) for format in ANALYSIS_FORMATS}
    assert not any(export.blinded for export in exports_by_format.values())
    csv_files = unpacked(exports_by_format["csv"])
    manifest = json.loads(csv_files["manifest.json"])
    assert manifest["blinded"] is False and manifest["site_codes"] == ["NT", "SH"]
    codebook = pd.read_csv(io.BytesIO(csv_files["codebook.csv"]), dtype=str, keep_default_na=False)
    names = [entry["name"] for entry in manifest["datasets"]]
    assert names, "the package has datasets"
    assert sum(entry["rows"] for entry in manifest["datasets"]) > 14
    workbook = pd.read_excel(io.BytesIO(content_of(exports_by_format["xlsx"])), sheet_name=None)
    readers = {"xpt": pyreadstat.read_xport, "sav": pyreadstat.read_sav, "dta": pyreadstat.read_dta}
    stats_files = {format: unpacked(exports_by_format[format]) for format in readers}
    compared = 0
    for name in names:
        variables = codebook[codebook.dataset == name].drop_duplicates("variable")
        kinds = dict(zip(variables.variable, variables.type, strict=True))
        # The CSV as text, cell by cell: the reference every other format is compared with.
        records = list(csv.reader(io.StringIO(csv_files[f"{name}.csv"].decode("utf-8-sig"), newline="")))
        assert records[0] == list(variables.variable)
        reference = [
            {
                column: normalized(kinds[column], cell or None, "csv")
                for column, cell in zip(records[0], row, strict=True)
            }
            for row in records[1:]
        ]
        assert len(reference) == next(entry["rows"] for entry in manifest["datasets"] if entry["name"] == name)
        frame = pd.read_csv(io.BytesIO(csv_files[f"{name}.csv"]))
        assert list(frame.columns) == records[0] and len(frame) == len(reference)
        sheet = workbook[name[:31]]
        assert list(sheet.columns) == records[0] and len(sheet) == len(reference)
        read = {"xlsx": (sheet, {column: column for column in records[0]})}
        for format, reader in readers.items():
            path = tmp_path / f"{name}.{format}"
            path.write_bytes(stats_files[format][f"{name}.{format}"])
            stats, meta = reader(str(path))
            column = "sas_name" if format == "xpt" else "sav_dta_name"
            read[format] = (stats, dict(zip(variables.variable, variables[column], strict=True)))
            assert all(meta.column_names_to_labels.values()), (format, name)
        for index, expected_row in enumerate(reference):
            for column, expected in expected_row.items():
                kind = kinds[column]
                for format, (table, renamed) in read.items():
                    actual = normalized(kind, table[renamed[column]].iloc[index], format)
                    wanted = expected
                    if format == "xpt" and kind == "text" and wanted:
                        wanted = wanted.encode()[:200].decode("utf-8", errors="ignore")
                    if format == "xlsx" and kind == "text" and wanted:
                        wanted = wanted.replace("\r\n", "\n")
                    if kind == "text" and format == "xlsx" and not isinstance(table[column].iloc[index], str):
                        # A column of digits is read as numbers by pandas; compare what it shows.
                        actual = None if actual is None else str(table[column].iloc[index])
                        wanted = None if wanted is None else str(type(table[column].iloc[index])(wanted))
                    assert actual == wanted, (name, column, index, format, actual, wanted)
                    compared += 1
    assert compared > 1000

    download = client_for(statistician_both).get(f"/reports/exports/{exports_by_format['sav'].pk}/download/")
    assert download.status_code == 200
    assert download["Content-Type"] == "application/zip"
    assert f'filename="NCT06442709-analysis-{exports_by_format["sav"].pk}.zip"' in download["Content-Disposition"]


@pytest.fixture
def statistician_both(site, other_site):
    from tests import factories
    from trialsite.audit import audit_context
    from trialsite.models import Role

    user = factories.make_user(Role.STATISTICIAN, site, username="statistician-both")
    with audit_context(reason="second site"):
        user.trial_roles.create(site=other_site, role=Role.STATISTICIAN)
    return user


def test_a_queued_analysis_export_runs_once_and_leaves_a_zip(cast, builder):
    export = services.export_request(user=cast.statistician, kind="analysis", format="sav", background=True)
    assert export.status == ExportStatus.QUEUED
    assert services.export_run(export_id=export.pk) is True
    assert services.export_run(export_id=export.pk) is False  # a second delivery changes nothing
    export.refresh_from_db()
    assert export.status == ExportStatus.DONE and export.progress == 100
    assert (Path(settings.MEDIA_ROOT) / export.file_path).suffix == ".zip"


# --- Through a real Celery worker and the browser ----------------------------------------------


@pytest.fixture
def celery_worker(transactional_db, tmp_path):
    from tests.worker import CeleryWorker, close_test_connection

    worker = CeleryWorker(
        broker_url=settings.CELERY_BROKER_URL,
        log_path=tmp_path / "worker.log",
        extra_env={"MEDIA_ROOT": str(settings.MEDIA_ROOT)},
    )
    worker.start()
    yield worker
    worker.stop()
    close_test_connection()


@pytest.mark.worker
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_statistician_asks_for_the_spss_package_and_downloads_it_when_the_worker_is_done(
    trial, site, other_site, cast, builder, celery_worker, live_server, request, monkeypatch, tmp_path
):
    # Playwright's sync API runs an event loop; only for this test (check --deploy refuses it).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from django.test import Client
    from playwright.sync_api import sync_playwright

    from tests.browser_support import SCREENSHOTS, launch_chromium

    reports_data.build(trial, site, other_site, cast)
    client = Client()
    client.force_login(cast.statistician)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(accept_downloads=True)
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                    "url": live_server.url,
                }
            ]
        )
        page = context.new_page()
        page.goto(f"{live_server.url}/reports/")
        page.locator("form:has(input[name=kind][value=analysis]):has(input[name=format][value=sav]) button").click()
        link = page.wait_for_selector("tr[data-export-status=done] .export-link a", timeout=60_000)
        with page.expect_download() as download_info:
            link.click()
        download = download_info.value
        export = Export.objects.get(requested_by=cast.statistician, kind="analysis")
        assert download.suggested_filename == f"NCT06442709-analysis-{export.pk}.zip"
        page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
        archive_path = tmp_path / download.suggested_filename
        download.save_as(archive_path)
        browser.close()
    with zipfile.ZipFile(archive_path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["export_id"] == export.pk and manifest["blinded"] is False
        subjects = tmp_path / "subjects.sav"
        subjects.write_bytes(archive.read("subjects.sav"))
    frame, meta = pyreadstat.read_sav(str(subjects))
    assert len(frame) == 14 and meta.column_names[0] == "subject_key"
    assert export.row_count == sum(entry["rows"] for entry in manifest["datasets"])


def test_a_listing_workbook_has_empty_cells_not_empty_strings(data, cast):
    import openpyxl

    workbook = openpyxl.load_workbook(io.BytesIO(content_of(run_now(cast.investigator, "subjects", "xlsx"))))
    values = [cell.value for row in workbook.worksheets[1].iter_rows(min_row=2) for cell in row]
    assert values and "" not in values
    assert None in values  # reports_data has people screened and never randomized


def test_r_reads_the_built_package_with_the_script_beside_it(data, cast, builder, tmp_path):
    export = run_now(cast.statistician, "analysis", "csv")
    with zipfile.ZipFile(content_of_path(export)) as archive:
        archive.extractall(tmp_path)
        manifest = json.loads(archive.read("manifest.json"))
    program = (
        'source("read_NCT06442709.R"); package <- read_package(); '
        "for (name in names(package)) cat(name, nrow(package[[name]]), ncol(package[[name]]), "
        'sum(sapply(package[[name]], function(x) is.null(attr(x, "label")))), "\\n")'
    )
    output = subprocess.run(
        ["Rscript", "--vanilla", "-e", program], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    read = {line.split()[0]: [int(number) for number in line.split()[1:]] for line in output.splitlines()}
    codebook = pd.read_csv(tmp_path / "codebook.csv", dtype=str, keep_default_na=False)
    assert read == {
        entry["name"]: [entry["rows"], codebook[codebook.dataset == entry["name"]].variable.nunique(), 0]
        for entry in manifest["datasets"]
    }


def content_of_path(export: Export) -> Path:
    return Path(settings.MEDIA_ROOT) / export.file_path
