"""The codebook as a page (issue 19): the analysis package's datasets, variables, labels and
codes, the same as the package's codebook.csv, blinded for blinded readers."""

from __future__ import annotations

import csv
import datetime
import io
import zipfile

import pytest
import time_machine

from datasets import build, writers
from reports import selectors
from tests import reports_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def data(trial, site, other_site, cast):
    with time_machine.travel(datetime.datetime(2026, 12, 15, 4, tzinfo=datetime.UTC), tick=False):
        yield reports_data.build(trial, site, other_site, cast)


def codebook_csv(user) -> list[dict]:
    buffer = io.BytesIO()
    writers.write_csv_zip(build.build_package(selectors.report_scope(user)), buffer)
    with zipfile.ZipFile(buffer) as archive:
        text = archive.read("codebook.csv").decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def test_the_page_lists_every_variable_and_code_of_the_packages_codebook(data, cast, client_for, trial):
    page = client_for(cast.statistician).get("/reports/codebook/")
    assert page.status_code == 200
    html = page.content.decode()
    rows = codebook_csv(cast.statistician)
    for row in rows:
        assert f'id="{row["dataset"]}-{row["variable"]}"' in html
        if row["code"]:
            label = "" if row["code_label"] == row["code"] else f" {row['code_label']}"
            assert f"<code>{row['code']}</code>{label}</li>" in html
    # The unblinded reader sees the allocation's dataset and the arms' codes.
    assert 'id="dataset-randomization"' in html
    assert all(f"<code>{arm.code}</code>" in html for arm in trial.arms.all())


def test_a_blinded_reader_gets_the_blinded_codebook_without_any_arm(data, cast, client_for, trial):
    html = client_for(cast.investigator).get("/reports/codebook/").content.decode()
    assert 'id="dataset-subjects"' in html
    assert 'id="dataset-randomization"' not in html and 'id="dataset-unblinding"' not in html
    for arm in trial.arms.all():
        assert f"<code>{arm.code}</code>" not in html and arm.name not in html
    # The page is the blinded package's codebook, variable for variable.
    rows = codebook_csv(cast.investigator)
    assert "randomization" not in {row["dataset"] for row in rows}
    assert all(f'id="{row["dataset"]}-{row["variable"]}"' in html for row in rows)


def test_labels_follow_the_language_and_names_do_not(data, cast, client_for):
    client = client_for(cast.statistician)
    english = client.get("/reports/codebook/").content.decode()
    chinese = client.get("/reports/codebook/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    rows = codebook_csv(cast.statistician)
    labelled = next(row for row in rows if row["label_zh"] and row["label_zh"] != row["label"])
    assert f'id="{labelled["dataset"]}-{labelled["variable"]}"' in chinese
    assert labelled["label_zh"] in chinese and labelled["label"] in english


def test_who_may_not_export_may_not_read_it(data, cast, client_for):
    assert client_for(cast.coordinator).get("/reports/codebook/").status_code == 404
    reports_page = client_for(cast.investigator).get("/reports/").content.decode()
    assert 'id="codebook-link"' in reports_page
