"""The analysis package's writers (issue 19), read back with the statistician's tools: pandas
`read_csv` with no options and `read_excel`, pyreadstat for SAS transport, SPSS and Stata.
Every value of a hand-built package (Chinese text, empty values, dates, moments in another zone
with microseconds, decimals, yes/no, code lists, names longer than SAS allows) is compared."""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import math
import subprocess
import zipfile
from decimal import Decimal
from zoneinfo import ZoneInfo

import pandas as pd
import pyreadstat
import pytest
from openpyxl import load_workbook

from datasets import writers
from datasets.spec import CodeList, Dataset, Manifest, Package, Variable

SHANGHAI = ZoneInfo("Asia/Shanghai")
LONG_TEXT = "肝功能异常伴黄疸" * 30  # 240 characters, 720 bytes: more than SAS transport v5 holds

SEX = CodeList("sex", (("M", "Male", "男"), ("F", "Female", "女")))
GRADE = CodeList("ctcae_grade", tuple((str(n), f"Grade {n}", f"{n}级") for n in range(1, 6)))

SUBJECT_VARIABLES = [
    Variable("subject_key", "Subject key", "text", label_zh="受试者编号"),
    Variable("site_code", "Site", "text", label_zh="中心"),
    Variable("sex", "Sex", "text", label_zh="性别", code_list="sex"),
    Variable("date_of_birth", "Date of birth", "date", label_zh="出生日期"),
    Variable("randomized_at", "Randomized at", "datetime", label_zh="随机时间"),
    Variable("weight_at_screening_kg", "Weight at screening", "decimal", label_zh="筛选时体重", unit="kg"),
    Variable("weight_at_baseline_kg", "Weight at baseline", "decimal", label_zh="基线体重", unit="kg"),
    Variable("age", "Age at screening", "integer", label_zh="筛选时年龄", unit="years"),
    Variable("eligible", "Eligible", "boolean", label_zh="符合入选标准"),
    Variable("consent_version", "Consent version", "integer", sas_name="CONSVER"),
    Variable(
        "eligibility_signed_by_the_pi_at1",
        "Eligibility confirmed and signed by the principal investigator on the screening form",
        "boolean",
        label_zh="研究者签署入选确认",
    ),
    Variable("notes", "Notes", "text", label_zh="备注"),
    # Nobody has died: a date column without a single value is still a date column.
    Variable("death_date", "Date of death", "date", label_zh="死亡日期"),
    Variable("death_recorded_at", "Death recorded at", "datetime"),
]
SUBJECT_ROWS = [
    (
        "NT-0001",
        "CN01",
        "F",
        datetime.date(1961, 3, 9),
        datetime.datetime(2026, 2, 3, 9, 15, 42, 123456, tzinfo=SHANGHAI),
        Decimal("61.5"),
        Decimal("60.25"),
        64,
        True,
        2,
        True,
        "受试者诉轻度头痛 已告知研究者",
    ),
    (
        "NT-0002",
        "CN02",
        "M",
        datetime.date(1999, 12, 31),
        None,
        Decimal("80"),
        None,
        26,
        False,
        1,
        False,
        '=HYPERLINK("http://x")',
    ),
    (
        "SCR-17",
        "CN01",
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ),
    (
        "NT-0003",
        "CN02",
        "M",
        datetime.date(1950, 1, 1),
        datetime.datetime(2026, 3, 1, 0, 0, 0, tzinfo=datetime.UTC),
        Decimal("102.125"),
        Decimal("99.9"),
        76,
        True,
        2,
        True,
        'line one\r\nline "two", with a comma\n' + LONG_TEXT,
    ),
]
SUBJECT_ROWS = [(*row, None, None) for row in SUBJECT_ROWS]  # death_date, death_recorded_at
AE_VARIABLES = [
    Variable("subject_key", "Subject key", "text", label_zh="受试者编号"),
    Variable("ae_number", "AE number", "integer", label_zh="不良事件编号"),
    Variable("term", "CTCAE term", "text", label_zh="CTCAE术语"),
    Variable("grade", "CTCAE grade", "text", label_zh="CTCAE分级", code_list="ctcae_grade"),
    Variable("onset_date", "Onset date", "date", label_zh="发生日期"),
    Variable("serious", "Serious", "boolean", label_zh="严重"),
]
AE_ROWS = [
    ("NT-0001", 1, "Headache", "1", datetime.date(2026, 2, 10), False),
    ("NT-0001", 2, "丙氨酸氨基转移酶升高", "3", datetime.date(2026, 2, 20), True),
    ("NT-0003", 1, "-Nausea", "2", None, None),
]
# 32 characters: longer than a sheet name (31) and a SAS member name (8).
LONG_DATASET = "protocol_deviations_out_of_windo"
DEVIATION_VARIABLES = [
    Variable("subject_key", "Subject key", "text"),
    Variable("visit_code", "Visit", "text"),
    Variable("days_outside_window", "Days outside the window", "integer", unit="days"),
]
DEVIATION_ROWS = [("NT-0001", "W4", 3), ("NT-0003", "W8", -2)]


def make_package() -> Package:
    # The rows are generators: a writer may read each dataset once, as a cursor gives them.
    return Package(
        manifest=Manifest(
            trial="NCT06442709",
            export_id=42,
            exported_by="statistician",
            exported_at=datetime.datetime(2026, 4, 1, 8, 0, 0, tzinfo=datetime.UTC),
            data_version=1234,
            blinded=True,
            site_codes=("CN01", "CN02"),
            protocol_version=2,
        ),
        datasets=[
            Dataset("subjects", "Subjects", SUBJECT_VARIABLES, iter(SUBJECT_ROWS), label_zh="受试者"),
            Dataset(
                "adverse_events",
                "Adverse events",
                AE_VARIABLES,
                (row for row in AE_ROWS),
                label_zh="不良事件",
                keys=("subject_key", "ae_number"),
            ),
            Dataset(
                LONG_DATASET,
                "Protocol deviations: visits out of window",
                DEVIATION_VARIABLES,
                iter(DEVIATION_ROWS),
                keys=("subject_key", "visit_code"),
            ),
        ],
        code_lists={"sex": SEX, "ctcae_grade": GRADE},
    )


DATASETS = [
    ("subjects", SUBJECT_VARIABLES, SUBJECT_ROWS),
    ("adverse_events", AE_VARIABLES, AE_ROWS),
    (LONG_DATASET, DEVIATION_VARIABLES, DEVIATION_ROWS),
]


def utc_second(moment: datetime.datetime) -> datetime.datetime:
    return moment.astimezone(datetime.UTC).replace(tzinfo=None, microsecond=0)


def missing(value) -> bool:
    return value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


# --- CSV -------------------------------------------------------------------------------------


def csv_expected(variable: Variable, value):
    """What pandas.read_csv (no options) gives for a value, in the column's type."""
    if value is None:
        return None
    match variable.type:
        case "text":
            return ("'" + value) if value[:1] in ("=", "+", "-", "@") else value
        case "date":
            return value.isoformat()
        case "datetime":
            return utc_second(value).strftime("%Y-%m-%dT%H:%M:%SZ")
        case "boolean":
            return 1 if value else 0
        case "decimal":
            return float(value)
        case _:
            return value


@pytest.fixture
def csv_zip(tmp_path):
    path = tmp_path / "analysis.zip"
    rows = writers.write_csv_zip(make_package(), path)
    assert rows == len(SUBJECT_ROWS) + len(AE_ROWS) + len(DEVIATION_ROWS)
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
        names = sorted(archive.namelist())
    return folder, names


def test_csv_zip_holds_one_csv_per_dataset_the_codebook_the_r_script_and_the_manifest(csv_zip):
    _folder, names = csv_zip
    assert names == sorted(
        [
            "subjects.csv",
            "adverse_events.csv",
            f"{LONG_DATASET}.csv",
            "codebook.csv",
            "read_NCT06442709.R",
            "manifest.json",
        ]
    )


def test_pandas_reads_every_csv_with_no_options_and_every_value_is_there(csv_zip):
    folder, _names = csv_zip
    for name, variables, rows in DATASETS:
        frame = pd.read_csv(folder / f"{name}.csv")
        assert list(frame.columns) == [variable.name for variable in variables]
        assert len(frame) == len(rows)
        for index, row in enumerate(rows):
            for variable, value in zip(variables, row, strict=True):
                actual = frame[variable.name].iloc[index]
                expected = csv_expected(variable, value)
                if expected is None:
                    assert missing(actual), (name, variable.name, index, actual)
                elif variable.type == "text" and not isinstance(actual, str):
                    # A code list of digits is read as numbers without options; the codebook says text.
                    assert str(actual) == expected
                else:
                    assert actual == expected, (name, variable.name, index, actual, expected)
    subjects = pd.read_csv(folder / "subjects.csv")
    assert subjects["date_of_birth"].tolist()[:2] == ["1961-03-09", "1999-12-31"]
    # 09:15:42.123456 in Shanghai is 01:15:42 UTC.
    assert subjects["randomized_at"].iloc[0] == "2026-02-03T01:15:42Z"
    assert pd.api.types.is_float_dtype(subjects["weight_at_screening_kg"])
    assert pd.api.types.is_integer_dtype(pd.read_csv(folder / "adverse_events.csv")["ae_number"])


def test_csv_bytes_header_first_bom_crlf_and_cells_exactly(csv_zip):
    folder, _names = csv_zip
    for name, variables, rows in DATASETS:
        raw = (folder / f"{name}.csv").read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf" + ",".join(v.name for v in variables).encode() + b"\r\n")
        assert b"#" not in raw.split(b"\r\n", 1)[0]
        read = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
        assert read[0] == [variable.name for variable in variables]
        assert read[1:] == [
            [writers.csv_cell(variable, value) for variable, value in zip(variables, row, strict=True)] for row in rows
        ]
        # Every record ends with CRLF; a line break inside a quoted cell is kept as it was typed.
        assert raw.endswith(b"\r\n")
    subjects = list(csv.reader(io.StringIO((folder / "subjects.csv").read_bytes().decode("utf-8-sig"), newline="")))
    assert subjects[1][8] == "1" and subjects[2][8] == "0" and subjects[3][8] == ""
    assert subjects[2][11] == '\'=HYPERLINK("http://x")'
    assert subjects[4][11].startswith('line one\r\nline "two", with a comma\n肝功能异常伴黄疸')


def test_codebook_lists_every_variable_its_names_labels_type_and_codes(csv_zip):
    folder, _names = csv_zip
    raw = (folder / "codebook.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfdataset,variable,sas_name")
    codebook = pd.read_csv(folder / "codebook.csv", dtype=str, keep_default_na=False)
    assert list(codebook.columns) == writers.CODEBOOK_COLUMNS
    variables = codebook.drop_duplicates(["dataset", "variable"])
    assert [(row.dataset, row.variable) for row in variables.itertuples()] == [
        (name, variable.name) for name, variables_, _rows in DATASETS for variable in variables_
    ]
    subjects = variables[variables.dataset == "subjects"].set_index("variable")
    assert subjects.loc["sex", "label_zh"] == "性别"
    assert subjects.loc["weight_at_screening_kg", "unit"] == "kg"
    assert subjects.loc["randomized_at", "type"] == "datetime"
    # Deterministic, unique 8-character SAS names; a given one is kept.
    assert subjects.loc["weight_at_screening_kg", "sas_name"] == "WEIGHT_A"
    assert subjects.loc["weight_at_baseline_kg", "sas_name"] == "WEIGHT_2"
    assert subjects.loc["consent_version", "sas_name"] == "CONSVER"
    assert subjects.loc["eligibility_signed_by_the_pi_at1", "sas_name"] == "ELIGIBIL"
    assert subjects["sas_name"].is_unique and subjects["sas_name"].str.len().max() <= 8
    sex = codebook[(codebook.dataset == "subjects") & (codebook.variable == "sex")]
    assert sex[["code_list", "code", "code_label", "code_label_zh"]].values.tolist() == [
        ["sex", "M", "Male", "男"],
        ["sex", "F", "Female", "女"],
    ]
    serious = codebook[(codebook.dataset == "adverse_events") & (codebook.variable == "serious")]
    assert serious[["code", "code_label", "code_label_zh"]].values.tolist() == [["1", "yes", "是"], ["0", "no", "否"]]


def test_manifest_names_who_when_what_and_the_hash_of_every_file(csv_zip):
    folder, names = csv_zip
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    assert manifest["trial"] == "NCT06442709"
    assert manifest["export_id"] == 42
    assert manifest["exported_by"] == "statistician"
    assert manifest["exported_at"] == "2026-04-01T08:00:00Z"
    assert manifest["data_version"] == 1234
    assert manifest["blinded"] is True
    assert manifest["site_codes"] == ["CN01", "CN02"]
    assert manifest["protocol_version"] == 2
    assert {entry["name"]: entry["rows"] for entry in manifest["datasets"]} == {
        name: len(rows) for name, _variables, rows in DATASETS
    }
    assert set(manifest["files"]) == set(names) - {"manifest.json"}
    for name, entry in manifest["files"].items():
        content = (folder / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}


def test_r_script_reads_every_csv_through_the_codebook(csv_zip):
    folder, _names = csv_zip
    script = (folder / "read_NCT06442709.R").read_text("utf-8")
    # R is not installed here; the script's contract with the codebook is what can be checked.
    assert "NCT06442709" in script and "{{" not in script
    for column in ("dataset", "variable", "type", "code_list", "code", "code_label", "code_label_zh", "label_zh"):
        assert f"${column}" in script
    for kind in ("text", "integer", "decimal", "date", "datetime", "boolean"):
        assert f"{kind} = " in script
    assert 'fileEncoding = "UTF-8-BOM"' in script
    assert "%Y-%m-%dT%H:%M:%SZ" in script
    assert "library(" not in script and "require(" not in script


R_PROGRAM = r"""
source("read_NCT06442709.R")
for (language in c("en", "zh")) {
  package <- read_package(language = language)
  for (name in names(package)) for (column in names(package[[name]])) {
    x <- package[[name]][[column]]
    shown <- if (inherits(x, "POSIXct")) format(x, "%Y-%m-%dT%H:%M:%SZ", tz = "UTC") else as.character(x)
    shown <- gsub("\n", "\\\\n", ifelse(is.na(shown), "<NA>", shown))
    cat(language, name, column, class(x)[1], attr(x, "label"), paste(levels(x), collapse = "|"),
        paste(shown, collapse = "|"), sep = "\t")
    cat("\n")
  }
}
"""


def r_expected(variable: Variable, value, language: str) -> str:
    if value is None:
        return "<NA>"
    match variable.type:
        case "text" if variable.code_list:
            code_list = {"sex": SEX, "ctcae_grade": GRADE}[variable.code_list]
            label, label_zh = next((en, zh) for code, en, zh in code_list.entries if code == value)
            return label_zh if language == "zh" else label
        case "text":
            # R reads a line break inside a quoted cell as LF.
            return csv_expected(variable, value).replace("\r\n", "\n").replace("\n", "\\n")
        case "decimal":
            return format(float(value), ".15g")
        case "boolean":
            return "TRUE" if value else "FALSE"
        case _:
            return str(csv_expected(variable, value))


def test_r_reads_every_csv_with_its_types_labels_and_code_lists(csv_zip):
    folder, _names = csv_zip
    output = subprocess.run(
        ["Rscript", "--vanilla", "-e", R_PROGRAM], cwd=folder, capture_output=True, text=True, check=True
    ).stdout
    read = {tuple(line.split("\t")[:3]): line.split("\t")[3:] for line in output.splitlines() if line}
    classes = {"integer": "integer", "decimal": "numeric", "date": "Date", "datetime": "POSIXct", "boolean": "logical"}
    for language in ("en", "zh"):
        for name, variables, rows in DATASETS:
            for index, variable in enumerate(variables):
                r_class, label, levels, values = read[language, name, variable.name]
                expected_class = classes.get(variable.type, "factor" if variable.code_list else "character")
                assert r_class == expected_class, (name, variable.name)
                expected_label = (variable.label_zh or variable.label) if language == "zh" else variable.label
                if variable.unit:
                    expected_label += f" [{variable.unit}]"
                assert label == expected_label
                if variable.code_list:
                    code_list = {"sex": SEX, "ctcae_grade": GRADE}[variable.code_list]
                    column = 2 if language == "zh" else 1
                    assert levels.split("|") == [entry[column] for entry in code_list.entries]
                assert values.split("|") == [r_expected(variable, row[index], language) for row in rows], (
                    language,
                    name,
                    variable.name,
                )


# --- XLSX ------------------------------------------------------------------------------------


def xlsx_expected(variable: Variable, value):
    if value is None:
        return None
    match variable.type:
        case "text":
            # XML reads every line end as LF (XML 1.0, 2.11).
            value = value.replace("\r\n", "\n")
            return ("'" + value) if value[:1] in ("=", "+", "-", "@") else value
        case "date":
            return pd.Timestamp(value)
        case "datetime":
            return pd.Timestamp(utc_second(value))
        case "boolean":
            return 1 if value else 0
        case "decimal":
            return float(value)
        case _:
            return value


def test_pandas_read_excel_gives_every_value_in_its_type(tmp_path):
    path = tmp_path / "analysis.xlsx"
    writers.write_xlsx(make_package(), path)
    sheets = pd.read_excel(path, sheet_name=None)
    assert list(sheets) == ["subjects", "adverse_events", LONG_DATASET[:31], "codebook", "manifest"]
    for name, variables, rows in DATASETS:
        frame = sheets[name[:31]]
        assert list(frame.columns) == [variable.name for variable in variables]
        assert len(frame) == len(rows)
        for index_, variable in enumerate(variables):
            column = frame[variable.name]
            if all(row[index_] is None for row in rows):
                # An empty cell has no type: a column without a value is read as missing numbers.
                assert column.isna().all()
            elif variable.type in ("date", "datetime"):
                assert pd.api.types.is_datetime64_any_dtype(column), variable.name
            elif variable.type in ("integer", "decimal", "boolean"):
                assert pd.api.types.is_numeric_dtype(column), variable.name
        for index, row in enumerate(rows):
            for variable, value in zip(variables, row, strict=True):
                actual = frame[variable.name].iloc[index]
                expected = xlsx_expected(variable, value)
                if expected is None:
                    assert missing(actual), (name, variable.name, index, actual)
                elif variable.type == "text" and not isinstance(actual, str):
                    assert str(actual) == expected
                else:
                    assert actual == expected, (name, variable.name, index, actual, expected)
    assert sheets["codebook"].columns.tolist() == writers.CODEBOOK_COLUMNS
    manifest = dict(zip(sheets["manifest"]["key"], sheets["manifest"]["value"], strict=True))
    assert manifest["trial"] == "NCT06442709"
    assert manifest["rows.subjects"] == len(SUBJECT_ROWS)


def test_xlsx_cells_are_typed_and_empty_cells_are_empty(tmp_path):
    path = tmp_path / "analysis.xlsx"
    writers.write_xlsx(make_package(), path)
    sheet = load_workbook(path)["subjects"]
    first, unknown = sheet[2], sheet[4]
    assert first[3].value == datetime.datetime(1961, 3, 9) and first[3].number_format == "yyyy-mm-dd"
    assert first[4].value == datetime.datetime(2026, 2, 3, 1, 15, 42)
    assert first[4].number_format == "yyyy-mm-dd hh:mm:ss"
    assert first[5].data_type == "n" and first[5].value == 61.5
    assert first[8].value == 1
    # Unknown is an empty cell, not an empty string.
    assert all(cell.value is None for cell in unknown[2:])
    assert sheet[3][11].data_type == "s" and sheet[3][11].value.startswith("'=")


# --- SAS transport, SPSS, Stata --------------------------------------------------------------


def stats_expected(variable: Variable, value):
    if variable.type == "text":
        return "" if value is None else value
    if value is None:
        return None
    match variable.type:
        case "date":
            return value
        case "datetime":
            return utc_second(value)
        case "boolean":
            return 1.0 if value else 0.0
        case _:
            return float(value)


def read_stats(folder, name, fmt):
    reader = {"xpt": pyreadstat.read_xport, "sav": pyreadstat.read_sav, "dta": pyreadstat.read_dta}[fmt]
    return reader(str(folder / f"{name}.{fmt}"))


@pytest.mark.parametrize("fmt", ["xpt", "sav", "dta"])
def test_pyreadstat_reads_back_every_value_and_label(tmp_path, fmt):
    path = tmp_path / f"analysis-{fmt}.zip"
    writers.write_stats_zip(make_package(), path, fmt)
    folder = tmp_path / fmt
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
        assert sorted(archive.namelist()) == sorted(
            [f"{name}.{fmt}" for name, _v, _r in DATASETS] + ["codebook.csv", "manifest.json"]
        )
    codebook = pd.read_csv(folder / "codebook.csv", dtype=str, keep_default_na=False)
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    assert manifest["format"] == fmt
    for name, variables, rows in DATASETS:
        frame, meta = read_stats(folder, name, fmt)
        entries = codebook[codebook.dataset == name].drop_duplicates("variable").set_index("variable")
        column = {
            variable.name: entries.loc[variable.name, "sas_name" if fmt == "xpt" else "sav_dta_name"]
            for variable in variables
        }
        assert list(frame.columns) == [column[variable.name] for variable in variables]
        assert len(frame) == len(rows)
        for variable in variables:
            label = meta.column_names_to_labels[column[variable.name]]
            expected_label = variable.label + (" (UTC)" if variable.type == "datetime" else "")
            limit = {"xpt": 40, "sav": None, "dta": 80}[fmt]
            assert label == (expected_label[:limit].rstrip() if limit else expected_label)
        for index, row in enumerate(rows):
            for variable, value in zip(variables, row, strict=True):
                actual = frame[column[variable.name]].iloc[index]
                expected = stats_expected(variable, value)
                if fmt == "xpt" and variable.type == "text":
                    expected = expected.encode("utf-8")[:200].decode("utf-8", errors="ignore")
                if expected is None:
                    assert missing(actual), (fmt, name, variable.name, index, actual)
                else:
                    assert actual == expected, (fmt, name, variable.name, index, actual, expected)
        if fmt == "xpt":
            assert meta.table_name == manifest["datasets"][[n for n, _v, _r in DATASETS].index(name)]["sas_name"]
            assert len(meta.table_name) <= 8
    _subjects, meta = read_stats(folder, "subjects", fmt)
    for column, kind in (("death_date", "DATE"), ("death_recorded_at", "DATETIME")):
        name = {"death_date": "DEATH_DA", "death_recorded_at": "DEATH_RE"}[column] if fmt == "xpt" else column
        stata = {"DATE": "%td", "DATETIME": "%tc"}[kind]
        assert (
            meta.original_variable_types[name] == stata
            if fmt == "dta"
            else meta.original_variable_types[name].startswith(kind)
        )
    if fmt == "sav":
        assert meta.variable_value_labels["sex"] == {"M": "Male", "F": "Female"}
        assert meta.variable_value_labels["eligible"] == {1.0: "yes", 0.0: "no"}
        assert meta.original_variable_types["date_of_birth"].startswith("DATE")
        assert meta.original_variable_types["randomized_at"].startswith("DATETIME")
    if fmt == "dta":
        assert meta.variable_value_labels["eligible"] == {1: "yes", 0: "no"}
        # pyreadstat's label set name (the variable's and a number) would pass Stata's 32 characters.
        assert "eligibility_signed_by_the_pi_at1" not in meta.variable_value_labels
        assert _labels_of(folder, "adverse_events", "dta")["serious"] == {1: "yes", 0: "no"}
        # Stata labels numbers only: coded text keeps its codes, the codebook its labels.
        assert "sex" not in meta.variable_value_labels
        assert meta.original_variable_types["date_of_birth"] == "%td"
        assert meta.original_variable_types["randomized_at"] == "%tc"
    if fmt == "xpt":
        assert meta.original_variable_types["DATE_OF_"] == "DATE"
        assert [note for note in manifest["notes"] if "cut" in note] == [
            "subjects.xpt: 1 text values longer than 200 bytes were cut (SAS transport v5); the CSV holds them whole"
        ]
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()


def _labels_of(folder, name, fmt):
    return read_stats(folder, name, fmt)[1].variable_value_labels


def test_a_name_spss_or_stata_reserves_gets_an_underscore():
    assert writers.sav_dta_name("in") == "in_"
    assert writers.sav_dta_name("to") == "to_"
    assert writers.sav_dta_name("str12") == "str12_"
    assert writers.sav_dta_name("weight_kg") == "weight_kg"


def test_a_given_sas_name_used_twice_is_refused():
    dataset = Dataset(
        "labs",
        "Labs",
        [
            Variable("subject_key", "Subject", "text", sas_name="SUBJ"),
            Variable("alt_value", "ALT", "decimal", sas_name="subj"),
        ],
        [],
    )
    with pytest.raises(ValueError, match="given twice"):
        writers.sas_names(dataset)


def test_a_naive_moment_is_refused_rather_than_guessed():
    variable = Variable("randomized_at", "Randomized at", "datetime")
    with pytest.raises(ValueError, match="aware"):
        writers.csv_cell(variable, datetime.datetime(2026, 1, 1, 8, 0))


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "xpt", "sav", "dta"])
def test_a_dataset_without_rows_is_written_with_its_columns(tmp_path, fmt):
    """No death yet: the deaths dataset is still there, with its variables and no rows."""
    variables = [Variable("subject_key", "Subject key", "text"), Variable("death_date", "Date of death", "date")]
    package = make_package()
    package.datasets = [Dataset("deaths", "Deaths", variables, iter([]))]
    path = tmp_path / ("deaths.xlsx" if fmt == "xlsx" else "deaths.zip")
    if fmt == "csv":
        assert writers.write_csv_zip(package, path) == 0
    elif fmt == "xlsx":
        assert writers.write_xlsx(package, path) == 0
    else:
        assert writers.write_stats_zip(package, path, fmt) == 0
    if fmt == "xlsx":
        frame = pd.read_excel(path, sheet_name="deaths")
        names = ["subject_key", "death_date"]
    else:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(tmp_path)
        name = tmp_path / f"deaths.{fmt}"
        if fmt == "csv":
            frame = pd.read_csv(name)
        else:
            frame, _meta = {"xpt": pyreadstat.read_xport, "sav": pyreadstat.read_sav, "dta": pyreadstat.read_dta}[fmt](
                str(name)
            )
        names = ["SUBJECT_", "DEATH_DA"] if fmt == "xpt" else ["subject_key", "death_date"]
        manifest = json.loads((tmp_path / "manifest.json").read_text("utf-8"))
        assert manifest["datasets"][0]["rows"] == 0
    assert list(frame.columns) == names and len(frame) == 0
