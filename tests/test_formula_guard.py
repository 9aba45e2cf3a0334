"""One spreadsheet-formula guard (trialsite/text.py) for every import and export: imports check
the value as it will be stored, exports quote it, and the SQL used for COPY exports is made from
the same characters as the Python."""

from __future__ import annotations

import datetime
import pathlib
import re

import pytest
import time_machine
from django.db import connection

from dosing import services as dosing_services
from dosing.exceptions import KitListInvalid
from dosing.models import Kit
from randomization import services as randomization_services
from trialsite.text import FORMULA_TRIGGERS, defuse_formula, defuse_formula_sql, looks_like_formula

ROOT = pathlib.Path(__file__).resolve().parent.parent
KIT_HEADER = "kit_number,kit_type,content,lot,expiry\n"


@pytest.fixture(autouse=True)
def _today():
    with time_machine.travel(datetime.datetime(2026, 11, 3, 2, tzinfo=datetime.UTC), tick=False):
        yield


@pytest.mark.parametrize("lot", [" =1+2", "\t=1+2", "\u200b@SUM(A1)", "\u3000+1", "\uff1d1+2"])
def test_a_kit_list_cell_that_is_a_formula_once_trimmed_is_refused(trial, cast, lot):
    with pytest.raises(KitListInvalid) as refused:
        dosing_services.kits_import(
            csv_text=KIT_HEADER + f'K7Q2-1001,INF,active,"{lot}",2028-01-31\n',
            imported_by=cast.supply_manager,
            trial=trial,
        )
    assert refused.value.errors[0].startswith("Line 2: ") and "formula" in refused.value.errors[0]
    assert not Kit.objects.exists()


def test_a_randomization_list_cell_that_is_a_formula_once_trimmed_is_refused(trial, cast):
    with pytest.raises(randomization_services.InvalidList) as refused:
        randomization_services.list_import(
            trial=trial,
            csv_text="stratum,sequence,block,block_size,arm\n =NT,1,1,4,TOC\n",
            created_by=cast.statistician,
        )
    assert str(refused.value.message) == "Line 2: a cell starts with a formula character."


VALUES = ["", "=1+2", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "a=b", " =1", "'quoted", "O'Brien", "中文", "\u200b=1"]


def test_the_sql_guard_quotes_exactly_what_the_python_guard_quotes(db):
    with connection.cursor() as cursor:
        for value in VALUES:
            cursor.execute(f"SELECT {defuse_formula_sql('v')} FROM (SELECT %s::text AS v) AS cell", [value])
            assert cursor.fetchone()[0] == defuse_formula(value), repr(value)


def test_exports_quote_every_trigger_and_leave_numbers_and_other_text_alone():
    assert [defuse_formula(trigger + "x") for trigger in FORMULA_TRIGGERS] == ["'" + t + "x" for t in FORMULA_TRIGGERS]
    assert defuse_formula(-1) == -1 and defuse_formula(None) is None
    assert not looks_like_formula("K7Q2-1001")


def test_no_module_keeps_its_own_copy_of_the_trigger_characters():
    copies = []
    for package in ("trialsite", "enrollment", "randomization", "schedules", "dosing", "reports"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "trialsite" / "text.py":
                continue
            if re.search(r"""["']=["'],\s*["']\+["'],\s*["']-["'],\s*["']@["']""", path.read_text()):
                copies.append(str(path.relative_to(ROOT)))
    assert copies == []
