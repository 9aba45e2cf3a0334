"""The analysis package: what a statistician receives, independent of the file format.

A `Package` holds datasets (one per form or log), each a list of typed `Variable`s and rows of
Python values in that order, and the code lists their coded variables use. Writers
(`datasets/writers.py`) turn one package into CSV (zipped with a manifest and codebook), XLSX,
SAS transport, SPSS, Stata and an R script; `datasets/build.py` builds the package from the
database for a report scope (blinded or not).

Rules every dataset keeps:
- variable names are stable machine names: a letter, then letters, digits or underscore, at
  most 32 characters, lower case, the same in every language; the label is the words;
- every dataset starts with `subject_key` (the permanent key assigned at first screening);
  visit-level datasets follow it with `visit_code`;
- a value is None when empty (never ""), a `datetime.date` for a date, an aware
  `datetime.datetime` for a moment, `int`/`Decimal` for numbers, `bool` for yes/no, the code
  (not the label) for a coded variable;
- a blinded package carries no variable, dataset, row order or code whose values differ by arm.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

VariableType = Literal["text", "integer", "decimal", "date", "datetime", "boolean"]

Value = str | int | Decimal | bool | datetime.date | datetime.datetime | None


@dataclass(frozen=True)
class CodeList:
    name: str
    # (code, label in English, label in Chinese or None); codes are what the data holds.
    entries: tuple[tuple[str, str, str | None], ...]

    def __post_init__(self):
        if not NAME.match(self.name):
            raise ValueError(f"code list name {self.name!r} is not a machine name")


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    type: VariableType
    label_zh: str | None = None
    code_list: str | None = None
    unit: str | None = None
    # A SAS transport (v5) name: at most 8 characters, unique in its dataset; derived if None.
    sas_name: str | None = None

    def __post_init__(self):
        if not NAME.match(self.name):
            raise ValueError(f"variable name {self.name!r} is not a machine name")


@dataclass
class Dataset:
    name: str
    label: str
    variables: list[Variable]
    rows: Iterable[tuple[Value, ...]]
    label_zh: str | None = None
    # The variables that identify a row (at least subject_key).
    keys: tuple[str, ...] = ("subject_key",)

    def __post_init__(self):
        if not NAME.match(self.name):
            raise ValueError(f"dataset name {self.name!r} is not a machine name")
        names = [variable.name for variable in self.variables]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset {self.name} repeats a variable name")
        if names[:1] != ["subject_key"]:
            raise ValueError(f"dataset {self.name} must start with subject_key")


@dataclass(frozen=True)
class Manifest:
    """Who, when, from which data: written beside the data, never inside a data file."""

    trial: str
    export_id: int | None
    exported_by: str
    exported_at: datetime.datetime
    data_version: int
    blinded: bool
    site_codes: tuple[str, ...]
    # The protocol version in force, as the trial names it ("1.0"); an int is read alike.
    protocol_version: str | int | None


@dataclass
class Package:
    manifest: Manifest
    datasets: list[Dataset]
    code_lists: dict[str, CodeList] = field(default_factory=dict)

    def dataset(self, name: str) -> Dataset:
        return next(dataset for dataset in self.datasets if dataset.name == name)
