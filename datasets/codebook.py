"""The codebook as a page: the same variables, labels and codes as `codebook.csv` in every
analysis package (datasets/writers.py), for a statistician to read before asking for data."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.translation import get_language

from datasets.build import build_package
from datasets.spec import Dataset, Package, Variable
from datasets.writers import codes_of, sas_names, sav_dta_name


@dataclass(frozen=True)
class CodebookVariable:
    name: str
    sas_name: str
    sav_dta_name: str
    label: str
    type: str
    unit: str
    code_list: str
    codes: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CodebookDataset:
    name: str
    label: str
    keys: tuple[str, ...]
    variables: tuple[CodebookVariable, ...]


def _words(english: str, chinese: str | None) -> str:
    return chinese if chinese and (get_language() or "").startswith("zh") else english


def _variable(package: Package, variable: Variable, short: dict[str, str]) -> CodebookVariable:
    return CodebookVariable(
        name=variable.name,
        sas_name=short[variable.name],
        sav_dta_name=sav_dta_name(variable.name),
        label=_words(variable.label, variable.label_zh),
        type=variable.type,
        unit=variable.unit or "",
        code_list=variable.code_list or "",
        codes=tuple((code, _words(label, label_zh)) for code, label, label_zh in codes_of(package, variable)),
    )


def _dataset(package: Package, dataset: Dataset) -> CodebookDataset:
    short = sas_names(dataset)
    return CodebookDataset(
        name=dataset.name,
        label=_words(dataset.label, dataset.label_zh),
        keys=dataset.keys,
        variables=tuple(_variable(package, variable, short) for variable in dataset.variables),
    )


def codebook(scope) -> tuple[Package, list[CodebookDataset]]:
    """The codebook of the package this scope would export (blinded scopes: the blinded one).
    No dataset's rows are read."""
    package = build_package(scope)
    return package, [_dataset(package, dataset) for dataset in package.datasets]
