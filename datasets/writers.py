"""Writers of the analysis package (datasets/spec.py): one `Package` in, the files a
statistician opens out. Every writer reads each dataset's rows once, in order, so a package
built from a database cursor is never held twice.

What every format shares, and why:
- the variable names are the machine names (header row, column names); labels and code lists
  are in `codebook.csv` (in every zip and as the workbook's "codebook" sheet), and in the files
  that can hold them;
- yes/no is 1/0 everywhere (the codebook lists the two codes), so a model or a cross tab reads
  it the same in R, SAS, SPSS, Stata and a spreadsheet;
- a moment is UTC, to the second (the CSV writes it ISO 8601 with `Z`; the other formats have
  no time zone, so their labels say UTC);
- who exported what, when and from which data is in `manifest.json` beside the data, never in
  a data file, so the header is the first line a reader sees.

Format limits, handled the same way each time:
- SAS transport v5: names of at most 8 characters (`Variable.sas_name` or a derived unique
  name, listed in the codebook), labels of at most 40, text values of at most 200 bytes (a
  longer value is cut and counted in the manifest's notes; the CSV holds it whole); no value
  labels, so code lists are in the codebook only.
- Stata: value labels only on numbers, so coded text keeps its codes (labels in the codebook);
  yes/no variables carry a yes/no value label. Labels at most 80 characters.
- SPSS: value labels on coded text and on yes/no variables.
- SPSS, Stata and SAS have no missing text, so an empty text value reads back as "".
- a name that is a reserved word of SPSS or Stata gets a trailing underscore in those two
  formats (codebook column `sav_dta_name`).
- CSV and XLSX cells whose text a spreadsheet would run as a formula get a leading quote, as
  every other export of this system does; the statistical formats keep the text as it is.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import math
import re
import tempfile
import zipfile
from array import array
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

from datasets.spec import Dataset, Package, Value, Variable
from trialsite.text import defuse_formula

CODEBOOK_COLUMNS = [
    "dataset",
    "variable",
    "sas_name",
    "sav_dta_name",
    "label",
    "label_zh",
    "type",
    "unit",
    "code_list",
    "code",
    "code_label",
    "code_label_zh",
]
# The two codes of every yes/no variable, in every format.
BOOLEAN_CODES = (("1", "yes", "是"), ("0", "no", "否"))
STATS_FORMATS = ("xpt", "sav", "dta")
XPT_TEXT_BYTES = 200
XPT_LABEL_CHARACTERS = 40
DTA_LABEL_CHARACTERS = 80
# Names these packages refuse as variable names.
SPSS_RESERVED = {"all", "and", "by", "eq", "ge", "gt", "le", "lt", "ne", "not", "or", "to", "with"}
STATA_RESERVED = {
    "byte",
    "double",
    "float",
    "if",
    "in",
    "int",
    "long",
    "using",
    "with",
    "str",
    "strl",
    "_all",
    "_b",
    "_coef",
    "_cons",
    "_n",
    "_pi",
    "_pred",
    "_rc",
    "_skip",
}
_STATA_STR = re.compile(r"^str[0-9]+$")
_SAS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,7}$")
R_SCRIPT = Path(__file__).with_name("read_package.R")

Progress = Callable[[int, int], None]


# --- Names -------------------------------------------------------------------------------------


def _unique_short(names: list[tuple[str, str | None]], limit: int = 8) -> list[str]:
    """Short upper-case names, unique case-insensitively: the given ones are kept (and must be
    valid and unique), the others are the long name cut to `limit`, numbered from 2 on a clash.
    Deterministic: the same names in the same order give the same short names."""
    taken: set[str] = set()
    for _name, given in names:
        if given is None:
            continue
        if not _SAS_NAME.match(given):
            raise ValueError(f"SAS name {given!r} is not a name of at most 8 characters")
        if given.upper() in taken:
            raise ValueError(f"SAS name {given!r} is given twice")
        taken.add(given.upper())
    result = []
    for name, given in names:
        if given is not None:
            result.append(given.upper())
            continue
        candidate = name[:limit].upper()
        number = 2
        while candidate in taken:
            suffix = str(number)
            candidate = name[: limit - len(suffix)].upper() + suffix
            number += 1
        taken.add(candidate)
        result.append(candidate)
    return result


def sas_names(dataset: Dataset) -> dict[str, str]:
    """Variable name -> SAS transport v5 name (at most 8 characters, unique in the dataset)."""
    names = _unique_short([(variable.name, variable.sas_name) for variable in dataset.variables])
    return {variable.name: short for variable, short in zip(dataset.variables, names, strict=True)}


def sas_dataset_names(package: Package) -> dict[str, str]:
    """Dataset name -> SAS member name (at most 8 characters, unique in the package)."""
    names = _unique_short([(dataset.name, None) for dataset in package.datasets])
    return {dataset.name: short for dataset, short in zip(package.datasets, names, strict=True)}


def sav_dta_name(name: str) -> str:
    """The name in SPSS and Stata files: the machine name, unless either package reserves it."""
    if name in SPSS_RESERVED or name in STATA_RESERVED or _STATA_STR.match(name):
        return name + "_"
    return name


# --- Values ------------------------------------------------------------------------------------


def _moment(value: datetime.datetime) -> datetime.datetime:
    """The moment in UTC, to the second, without a zone (for the formats that have none)."""
    if value.tzinfo is None:
        raise ValueError("a datetime value must be aware (spec: an aware datetime for a moment)")
    return value.astimezone(datetime.UTC).replace(tzinfo=None, microsecond=0)


def _day(value) -> datetime.date:
    return value.date() if isinstance(value, datetime.datetime) else value


def _decimal_text(value) -> str:
    if isinstance(value, Decimal):
        text = format(value, "f")
        return "0" if text in ("-0", "") else text
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_cell(variable: Variable, value: Value) -> str:
    """One CSV cell: empty for None, ISO 8601 dates and UTC moments with `Z`, 1/0 for yes/no,
    numbers without exponent, text defused against spreadsheet formulas."""
    if value is None:
        return ""
    kind = variable.type
    if kind == "boolean":
        return "1" if value else "0"
    if kind == "date":
        return _day(value).isoformat()
    if kind == "datetime":
        return _moment(value).strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "integer":
        return str(int(value))
    if kind == "decimal":
        return _decimal_text(value)
    return defuse_formula(str(value))


def xlsx_cell(variable: Variable, value: Value):
    """One workbook cell: None stays None (an empty cell), numbers and dates stay typed."""
    if value is None:
        return None
    kind = variable.type
    if kind == "boolean":
        return 1 if value else 0
    if kind == "date":
        return _day(value)
    if kind == "datetime":
        return _moment(value)
    if kind == "integer":
        return int(value)
    if kind == "decimal":
        return value if isinstance(value, Decimal | int | float) else Decimal(str(value))
    return defuse_formula(str(value))


# --- Codebook and manifest ---------------------------------------------------------------------


def codebook_rows(package: Package) -> Iterator[list[str]]:
    """One row per variable; a coded or yes/no variable has one row per code instead, with the
    variable's columns repeated (one row per variable: drop duplicates on dataset, variable)."""
    for dataset in package.datasets:
        short = sas_names(dataset)
        for variable in dataset.variables:
            base = [
                dataset.name,
                variable.name,
                short[variable.name],
                sav_dta_name(variable.name),
                variable.label,
                variable.label_zh or "",
                variable.type,
                variable.unit or "",
                variable.code_list or "",
            ]
            codes = codes_of(package, variable)
            if not codes:
                yield [*base, "", "", ""]
            for code, label, label_zh in codes:
                yield [*base, code, label, label_zh or ""]


def codes_of(package: Package, variable: Variable) -> tuple[tuple[str, str, str | None], ...]:
    if variable.type == "boolean":
        return BOOLEAN_CODES
    if variable.code_list:
        return package.code_lists[variable.code_list].entries
    return ()


def _codebook_csv(package: Package) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CODEBOOK_COLUMNS)
    for row in codebook_rows(package):
        writer.writerow([defuse_formula(cell) for cell in row])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def _utc_text(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest_dict(
    package: Package, *, format: str, datasets: list[dict], files: dict[str, dict], notes: list[str]
) -> dict:
    manifest = package.manifest
    return {
        "trial": manifest.trial,
        "export_id": manifest.export_id,
        "exported_by": manifest.exported_by,
        "exported_at": _utc_text(manifest.exported_at),
        "data_version": manifest.data_version,
        "blinded": manifest.blinded,
        "site_codes": list(manifest.site_codes),
        "protocol_version": manifest.protocol_version,
        "format": format,
        "conventions": {
            "names": "variable names are the codebook's `variable` (SAS transport: `sas_name`; SPSS and Stata: `sav_dta_name`)",
            "boolean": "1 = yes, 0 = no",
            "date": "ISO 8601 (YYYY-MM-DD) in CSV; a date value elsewhere",
            "datetime": "UTC, to the second; ISO 8601 with Z in CSV",
            "empty": "an empty cell (CSV, XLSX); a missing number or date, or empty text, in SAS, SPSS and Stata",
            "formulas": "in CSV and XLSX a text starting with = + - @ or a tab gets a leading quote",
        },
        "datasets": datasets,
        # SHA-256 of every other file in the archive (the manifest cannot hold its own).
        "files": files,
        "notes": notes,
    }


def _manifest_rows(manifest: dict) -> list[list]:
    rows = [[key, manifest[key]] for key in ("trial", "export_id", "exported_by", "exported_at", "data_version")]
    rows += [
        ["blinded", 1 if manifest["blinded"] else 0],
        ["site_codes", ", ".join(manifest["site_codes"])],
        ["protocol_version", manifest["protocol_version"]],
    ]
    rows += [[f"rows.{entry['name']}", entry["rows"]] for entry in manifest["datasets"]]
    rows += [[f"conventions.{key}", text] for key, text in manifest["conventions"].items()]
    rows += [["note", note] for note in manifest["notes"]]
    return [[key, defuse_formula(value) if isinstance(value, str) else value] for key, value in rows]


def _dataset_entry(dataset: Dataset, *, file: str | None, rows: int, sas_name: str, sheet: str | None = None) -> dict:
    entry = {
        "name": dataset.name,
        "label": dataset.label,
        "label_zh": dataset.label_zh,
        "keys": list(dataset.keys),
        "rows": rows,
        "sas_name": sas_name,
    }
    if file is not None:
        entry["file"] = file
    if sheet is not None:
        entry["sheet"] = sheet
    return entry


class _HashingZip:
    """Adds files to a zip, keeping each one's SHA-256 and size for the manifest."""

    def __init__(self, archive: zipfile.ZipFile):
        self.archive = archive
        self.files: dict[str, dict] = {}

    def write_bytes(self, name: str, content: bytes) -> None:
        self.archive.writestr(name, content)
        self.files[name] = {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}

    def write_file(self, name: str, path: Path) -> None:
        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as source, self.archive.open(name, "w", force_zip64=True) as target:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                target.write(chunk)
        self.files[name] = {"sha256": digest.hexdigest(), "bytes": size}

    def open_text(self, name: str) -> _HashingText:
        return _HashingText(self, name)


class _HashingText(io.TextIOBase):
    """A text stream into one zip member: UTF-8, hashed as it is written."""

    def __init__(self, owner: _HashingZip, name: str):
        self.owner = owner
        self.name = name
        self.target = owner.archive.open(name, "w", force_zip64=True)
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self.digest.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(text)

    def close(self) -> None:
        if not self.closed:
            self.target.close()
            self.owner.files[self.name] = {"sha256": self.digest.hexdigest(), "bytes": self.size}
        super().close()


def _write_manifest(zipped: _HashingZip, package: Package, *, format: str, datasets: list[dict], notes: list[str]):
    manifest = manifest_dict(package, format=format, datasets=datasets, files=dict(zipped.files), notes=notes)
    zipped.archive.writestr("manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    return manifest


def r_script_name(package: Package) -> str:
    return f"read_{re.sub(r'[^A-Za-z0-9_]', '_', package.manifest.trial)}.R"


def r_script(package: Package) -> str:
    return R_SCRIPT.read_text(encoding="utf-8").replace("{{TRIAL}}", package.manifest.trial)


# --- CSV zip -----------------------------------------------------------------------------------


def write_csv_zip(package: Package, stream_or_path, progress: Progress | None = None) -> int:
    """A zip of `<dataset>.csv` per dataset (header first, UTF-8 with BOM, CRLF), `codebook.csv`,
    the R script that reads them with types and labels, and `manifest.json`. Returns the rows."""
    entries, total = [], 0
    with zipfile.ZipFile(stream_or_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        zipped = _HashingZip(archive)
        short = sas_dataset_names(package)
        for index, dataset in enumerate(package.datasets):
            name = f"{dataset.name}.csv"
            stream = zipped.open_text(name)
            stream.write("\ufeff")
            writer = csv.writer(stream, lineterminator="\r\n")
            writer.writerow([variable.name for variable in dataset.variables])
            rows = 0
            for row in dataset.rows:
                writer.writerow(
                    [csv_cell(variable, value) for variable, value in zip(dataset.variables, row, strict=True)]
                )
                rows += 1
            stream.close()
            total += rows
            entries.append(_dataset_entry(dataset, file=name, rows=rows, sas_name=short[dataset.name]))
            if progress:
                progress(index + 1, len(package.datasets))
        zipped.write_bytes("codebook.csv", _codebook_csv(package))
        zipped.write_bytes(r_script_name(package), r_script(package).encode("utf-8"))
        _write_manifest(zipped, package, format="csv", datasets=entries, notes=[])
    return total


# --- XLSX --------------------------------------------------------------------------------------

DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"


def _sheet_names(package: Package) -> dict[str, str]:
    """Dataset name -> sheet name (Excel allows 31 characters; names may have 32)."""
    taken = {"codebook", "manifest"}
    result = {}
    for dataset in package.datasets:
        candidate, number = dataset.name[:31], 2
        while candidate in taken:
            suffix = f"_{number}"
            candidate = dataset.name[: 31 - len(suffix)] + suffix
            number += 1
        taken.add(candidate)
        result[dataset.name] = candidate
    return result


def write_xlsx(package: Package, path, progress: Progress | None = None) -> int:
    """One sheet per dataset (header row = variable names; typed cells, dates and moments with
    number formats, None as an empty cell), then "codebook" and "manifest" sheets."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    workbook = Workbook(write_only=True)
    manifest = package.manifest
    workbook.properties.creator = manifest.exported_by
    workbook.properties.title = f"{manifest.trial} analysis package {manifest.export_id or ''}".strip()
    sheets = _sheet_names(package)
    short = sas_dataset_names(package)
    entries, total = [], 0
    for index, dataset in enumerate(package.datasets):
        sheet = workbook.create_sheet(sheets[dataset.name])
        sheet.append([variable.name for variable in dataset.variables])
        formats = [
            DATE_FORMAT if variable.type == "date" else DATETIME_FORMAT if variable.type == "datetime" else None
            for variable in dataset.variables
        ]
        rows = 0
        for row in dataset.rows:
            cells = []
            for variable, number_format, value in zip(dataset.variables, formats, row, strict=True):
                value = xlsx_cell(variable, value)
                if number_format and value is not None:
                    cell = WriteOnlyCell(sheet, value=value)
                    cell.number_format = number_format
                    value = cell
                cells.append(value)
            sheet.append(cells)
            rows += 1
        total += rows
        entries.append(
            _dataset_entry(dataset, file=None, rows=rows, sas_name=short[dataset.name], sheet=sheets[dataset.name])
        )
        if progress:
            progress(index + 1, len(package.datasets))
    codebook = workbook.create_sheet("codebook")
    codebook.append(CODEBOOK_COLUMNS)
    for row in codebook_rows(package):
        codebook.append([defuse_formula(cell) if cell else None for cell in row])
    about = workbook.create_sheet("manifest")
    about.append(["key", "value"])
    for row in _manifest_rows(manifest_dict(package, format="xlsx", datasets=entries, files={}, notes=[])):
        about.append(row)
    workbook.save(path)
    return total


# --- SAS transport, SPSS, Stata ------------------------------------------------------------------


def _truncate_bytes(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


class _Column:
    """One column gathered for pyreadstat, kept small: numbers in a typed array (8 bytes a
    value, not a Python float each), and a repeated text or date stored once (visit codes,
    statuses, subject keys of a visit dataset) while few distinct values have been seen."""

    SHARED_LIMIT = 50_000

    def __init__(self, variable: Variable, fmt: str):
        self.variable = variable
        self.numeric = variable.type in ("integer", "decimal", "boolean")
        self.values = array("d") if self.numeric else []
        self.shared: dict | None = {}
        self.any_value = False
        self.cut = 0
        self.xpt = fmt == "xpt" and variable.type == "text"

    def append(self, value: Value) -> None:
        value = _stats_value(self.variable, value)
        if self.numeric:
            self.values.append(math.nan if value is None else value)
            return
        if value is not None:
            self.any_value = True
            if self.xpt and len(value.encode("utf-8")) > XPT_TEXT_BYTES:
                self.cut += 1
                value = _truncate_bytes(value, XPT_TEXT_BYTES)
            if self.shared is not None:
                value = self.shared.setdefault(value, value)
                if len(self.shared) > self.SHARED_LIMIT:
                    self.shared = None
        self.values.append(value)

    def series(self):
        import numpy as np
        import pandas as pd

        if self.numeric:
            return pd.Series(np.frombuffer(self.values, dtype="float64"), dtype="float64", copy=False)
        if self.variable.type in ("date", "datetime") and not self.any_value:
            # pyreadstat types an object column by its values: with none it would write text.
            # A numeric column of missing values with the date format is a date column.
            return pd.Series(np.full(len(self.values), np.nan), dtype="float64")
        return pd.Series(self.values, dtype=object)


def _frame(dataset: Dataset, fmt: str):
    """The dataset as a DataFrame pyreadstat can write, and how many text values were cut."""
    import pandas as pd

    columns = [_Column(variable, fmt) for variable in dataset.variables]
    for row in dataset.rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    data = {}
    for column in columns:
        data[column.variable.name] = column.series()
        column.values = None
    cut = sum(column.cut for column in columns)
    return pd.DataFrame(data, columns=[variable.name for variable in dataset.variables], copy=False), cut


def _stats_value(variable: Variable, value: Value):
    kind = variable.type
    if kind == "text":
        # These formats have no missing text.
        return "" if value is None else str(value)
    if value is None:
        return None
    if kind == "boolean":
        return 1.0 if value else 0.0
    if kind in ("integer", "decimal"):
        return float(value)
    if kind == "date":
        return _day(value)
    if kind == "datetime":
        return _moment(value)
    return value


def _label(variable: Variable, limit: int | None) -> str:
    label = variable.label
    if variable.type == "datetime":
        label = f"{label} (UTC)"
    return label[:limit].rstrip() if limit else label


# The display format of a date and a moment in each package (days or seconds since its epoch).
DATE_FORMATS = {
    "xpt": {"date": "DATE9", "datetime": "DATETIME20"},
    "sav": {"date": "DATE11", "datetime": "DATETIME20"},
    "dta": {"date": "%td", "datetime": "%tc"},
}


def _empty_date_formats(frame, dataset: Dataset, fmt: str, names: dict[str, str]) -> dict[str, str]:
    """Formats for the date and moment columns with no value at all (written as numbers)."""
    return {
        names[variable.name]: DATE_FORMATS[fmt][variable.type]
        for variable in dataset.variables
        if variable.type in ("date", "datetime") and frame[variable.name].dtype == "float64"
    }


def _write_stats_file(dataset: Dataset, fmt: str, path: Path, sas_member: str, package: Package) -> tuple[int, int]:
    import pyreadstat

    frame, cut = _frame(dataset, fmt)
    if fmt == "xpt":
        short = sas_names(dataset)
        formats = _empty_date_formats(frame, dataset, fmt, short)
        frame = frame.rename(columns=short)
        pyreadstat.write_xport(
            frame,
            path,
            file_label=dataset.label[:XPT_LABEL_CHARACTERS],
            column_labels={short[v.name]: _label(v, XPT_LABEL_CHARACTERS) for v in dataset.variables},
            table_name=sas_member,
            file_format_version=5,
            variable_format=formats,
        )
        return len(frame), cut
    names = {variable.name: sav_dta_name(variable.name) for variable in dataset.variables}
    formats = _empty_date_formats(frame, dataset, fmt, names)
    frame = frame.rename(columns=names)
    value_labels: dict[str, dict] = {}
    for variable in dataset.variables:
        if variable.type == "boolean":
            value_labels[names[variable.name]] = {1: "yes", 0: "no"}
        elif variable.code_list and variable.type == "text" and fmt == "sav":
            value_labels[names[variable.name]] = {
                code: label for code, label, _zh in package.code_lists[variable.code_list].entries
            }
        elif variable.code_list and variable.type == "integer":
            value_labels[names[variable.name]] = {
                int(code): label for code, label, _zh in package.code_lists[variable.code_list].entries
            }
    if fmt == "dta":
        value_labels = _dta_value_labels(frame.columns, value_labels)
    if fmt == "sav":
        pyreadstat.write_sav(
            frame,
            path,
            file_label=dataset.label,
            column_labels={names[v.name]: _label(v, None) for v in dataset.variables},
            variable_value_labels=value_labels,
            variable_format=formats,
        )
    else:
        pyreadstat.write_dta(
            frame,
            path,
            file_label=dataset.label[:DTA_LABEL_CHARACTERS],
            column_labels={names[v.name]: _label(v, DTA_LABEL_CHARACTERS) for v in dataset.variables},
            variable_value_labels=value_labels,
            version=15,
            variable_format=formats,
        )
    return len(frame), cut


def _dta_value_labels(columns, value_labels: dict[str, dict]) -> dict[str, dict]:
    """pyreadstat names a Stata label set after its variable and a running number, and Stata
    allows 32 characters: a variable whose label set name would be longer keeps no value labels
    (its codes are in the codebook)."""
    kept, number = {}, 0
    for column in columns:
        if column not in value_labels:
            continue
        if len(f"{column}{number}") > 32:
            continue
        kept[column] = value_labels[column]
        number += 1
    return kept


def write_stats_zip(package: Package, path, fmt: str, progress: Progress | None = None) -> int:
    """A zip of `<dataset>.<fmt>` per dataset (SAS transport v5, SPSS or Stata, with variable
    labels and the value labels the format can hold), `codebook.csv` and `manifest.json`."""
    if fmt not in STATS_FORMATS:
        raise ValueError(f"unknown statistical format {fmt!r}")
    entries, notes, total = [], [], 0
    short = sas_dataset_names(package)
    with (
        tempfile.TemporaryDirectory(prefix="analysis-") as scratch,
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        zipped = _HashingZip(archive)
        for index, dataset in enumerate(package.datasets):
            name = f"{dataset.name}.{fmt}"
            file = Path(scratch) / name
            rows, cut = _write_stats_file(dataset, fmt, file, short[dataset.name], package)
            zipped.write_file(name, file)
            file.unlink()
            if cut:
                notes.append(
                    f"{name}: {cut} text values longer than {XPT_TEXT_BYTES} bytes were cut (SAS transport v5); the CSV holds them whole"
                )
            total += rows
            entries.append(_dataset_entry(dataset, file=name, rows=rows, sas_name=short[dataset.name]))
            if progress:
                progress(index + 1, len(package.datasets))
        zipped.write_bytes("codebook.csv", _codebook_csv(package))
        _write_manifest(zipped, package, format=fmt, datasets=entries, notes=notes)
    return total
