"""A write hidden from blinded readers must change nothing they read, not even a number.

The audit trail's event ids come from one sequence. The sponsor records the expedited report of
a SUSAR only for a participant on active product; its columns are hidden from blinded readers,
so the update is left out of their trail. While they were shown the trail's ids (audit API, the
AuditRecord IDs of the blinded ODM) the gap the left-out event made after that participant's
events named the arm, and so did the export "data version" (the newest event id), which moved
with the hidden write.

The test builds the same trial twice, in one database: up to a savepoint the site and the
sponsor do the same; then the sponsor records the expedited report (the hidden write) and the
site goes on with a visible write; everything the blinded readers read is kept. Then back to the
savepoint, every sequence back where it was, the site's same visible write, and the same reads.
Byte for byte the same, apart from the trail's own clock (`clock_timestamp()` in PostgreSQL,
which no test can freeze) and each page's CSRF token and nonce."""

from __future__ import annotations

import datetime
import difflib
import io
import json
import re
import zipfile

import pypdf
import pytest
import time_machine
from django.db import transaction
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from randomization import services as randomization
from reports import services as report_services
from reports.models import Export
from safety import services as safety
from safety.models import SusarAssessment
from tests import factories
from tests.test_safety_blind import body_of, site_does_the_same, sponsor_handles_the_susar
from trialsite.audit import audit_context
from trialsite.models import Role, StaffRole

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 12, 15, 1, 0, tzinfo=datetime.UTC)
# What a blinded reader downloads: the ODM with its audit trail, a stamped table, the stamped PDF
# report and the analysis package with its manifest.
EXPORTS = [("dataset", "odm"), ("enrollment", "csv"), ("report", "pdf"), ("analysis", "csv")]
# The audit trail's times come from the database's clock, not the frozen one.
MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}| [A-Z]{2,5}\b)?")
PAGE_LINK = re.compile(r'href="\?([^"#]*page=\d+[^"#]*)"')


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def assessed_susar(trial, site, other_site, cast, django_capture_on_commit_callbacks):
    """Participants at both sites with a serious event, a signed SAE report; at Nantong the
    sponsor has assessed one of them a SUSAR and broken its blind, and not yet reported it."""
    with time_machine.travel(NOW, tick=False):
        sh_investigator = factories.make_user(Role.INVESTIGATOR, other_site, username="sh_investigator")
        with audit_context(reason="test cast: the statistician reads the trail too"):
            StaffRole.objects.create(user=cast.statistician, site=site, role=Role.MONITOR)
        randomization_list = randomization.list_generate(
            trial=trial, seed="audit-gaps", slots_per_stratum=8, created_by=cast.statistician
        )
        randomization.list_lock(
            randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD
        )
        people = []
        for where, coordinator, investigator in (
            (site, cast.coordinator, cast.investigator),
            (site, cast.coordinator, cast.investigator),
            (other_site, cast.other_coordinator, sh_investigator),
        ):
            participant = randomization.participant_randomize(
                participant=factories.make_participant(
                    where, by=coordinator, screening_date=datetime.date(2026, 12, 1)
                ),
                randomized_by=coordinator,
            )
            people.append((participant, site_does_the_same(participant, coordinator, investigator)))
        participant, event = people[0]
        assessment = sponsor_handles_the_susar(
            event, cast.sponsor_safety, report=False, capture=django_capture_on_commit_callbacks
        )
    return participant, assessment


def sequence_positions(superuser_sql) -> list[tuple[str, int | None]]:
    return superuser_sql("SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences")


def put_back(superuser_sql, positions) -> None:
    """Every sequence where it was: ids handed out since (and rolled back) are handed out again."""
    for name, last_value in positions:
        if last_value is None:
            superuser_sql(
                "SELECT setval(%s, (SELECT seqstart FROM pg_sequence WHERE seqrelid = %s::regclass), false)",
                [name, name],
            )
        else:
            superuser_sql("SELECT setval(%s, %s, true)", [name, last_value])


def site_goes_on(participant, coordinator) -> None:
    """A visible write after the hidden one: its event takes the next id."""
    today = timezone.localdate(timezone=participant.site.zone)
    event = safety.ae_record(
        participant=participant,
        recorded_by=coordinator,
        details=safety.AeDetails(term="fatigue", grade=1, onset_date=today),
    )
    safety.ae_resolve(event=event, recorded_by=coordinator, resolution_date=today, outcome="recovered")


def masked(text: str) -> str:
    text = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", text)
    text = re.sub(r'nonce="[^"]*"', "", text)
    return MOMENT.sub("<time>", text)


def audit_pages(client, url: str) -> str:
    pages, seen, queue = [], {url}, [url]
    while queue:
        page = client.get(queue.pop(0))
        assert page.status_code == 200, page.status_code
        pages.append(page.content.decode())
        for query in PAGE_LINK.findall(pages[-1]):
            following = url.split("?")[0] + "?" + query.replace("&amp;", "&")
            if following not in seen:
                seen.add(following)
                queue.append(following)
    return "\n".join(pages)


def api_pages(api, url: str) -> str:
    results = []
    while url:
        answer = api.get(url)
        assert answer.status_code == 200, answer.content
        results += answer.json()["results"] if "results" in answer.json() else [answer.json()]
        url = answer.json().get("next")
    return json.dumps(results, sort_keys=True, ensure_ascii=False, indent=1)


def file_text(format: str, body: bytes) -> str:
    if format == "pdf":
        document = pypdf.PdfReader(io.BytesIO(body))
        metadata = "\n".join(f"{key}: {value}" for key, value in (document.metadata or {}).items())
        return metadata + "\n" + "\n".join(page.extract_text() for page in document.pages)
    if zipfile.is_zipfile(io.BytesIO(body)):
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            return "\n".join(f"== {name}\n{archive.read(name).decode('utf-8')}" for name in sorted(archive.namelist()))
    return body.decode("utf-8-sig")


def what_they_read(user, participant) -> dict[str, str]:
    """The trail (page and API, whole and the participant's), each export with its download
    headers, the enrollment report's and the exports list's data versions."""
    client, api = Client(), APIClient()
    client.force_login(user)
    api.force_login(user)
    reads = {
        "audit page": audit_pages(client, "/audit/"),
        "audit page of the participant": audit_pages(client, f"/audit/?subject={participant.pk}"),
        "audit API": api_pages(api, "/api/v1/audit-events/"),
        "audit API of the participant": api_pages(api, f"/api/v1/audit-events/?subject={participant.pk}"),
    }
    if client.get("/reports/").status_code != 200:
        return reads
    reads["enrollment report API"] = api_pages(api, "/api/v1/reports/enrollment/")
    for kind, format in EXPORTS:
        answer = client.post("/reports/exports/", {"kind": kind, "format": format})
        assert answer.status_code in (200, 302), (kind, format, answer.status_code)
        export = Export.objects.filter(requested_by=user, kind=kind, format=format).latest("id")
        report_services.export_run(export_id=export.pk)
        download = client.get(f"/reports/exports/{export.pk}/download/")
        assert download.status_code == 200, (kind, format, download.status_code)
        headers = f"X-Data-Version: {download['X-Data-Version']}\n{download['Content-Disposition']}\n"
        reads[f"export {kind}.{format}"] = headers + file_text(format, body_of(download))
    reads["exports API"] = api_pages(api, "/api/v1/exports/")
    reads["reports page"] = client.get("/reports/").content.decode()
    return {source: masked(text) for source, text in reads.items()}


def test_the_expedited_report_of_a_susar_changes_nothing_a_blinded_reader_reads(assessed_susar, cast, superuser_sql):
    participant, assessment = assessed_susar
    blinded = {"monitor": cast.monitor, "investigator": cast.investigator, "monitor elsewhere": cast.other_monitor}
    readers = {**blinded, "unblinded statistician": cast.statistician}
    positions = sequence_positions(superuser_sql)
    with time_machine.travel(NOW + datetime.timedelta(hours=2), tick=False):
        before_the_report = transaction.savepoint()
        safety.susar_report_done(assessment=assessment, reported_by=cast.sponsor_safety, reference="CIOMS-2026-0042")
        site_goes_on(participant, cast.coordinator)
        reported = {name: what_they_read(user, participant) for name, user in readers.items()}

        transaction.savepoint_rollback(before_the_report)
        put_back(superuser_sql, positions)
        assert SusarAssessment.objects.get(pk=assessment.pk).reported_at is None
        site_goes_on(participant, cast.coordinator)
        not_reported = {name: what_they_read(user, participant) for name, user in readers.items()}

    # The comparison sees a difference where there is one: the unblinded reader's trail holds the report.
    unblinded = reported["unblinded statistician"]["audit API"]
    assert "CIOMS-2026-0042" in unblinded and unblinded != not_reported["unblinded statistician"]["audit API"]
    problems = []
    for name in blinded:
        assert set(reported[name]) == set(not_reported[name])
        assert any(source.startswith("export") for source in reported[name]), name
        for source, text in reported[name].items():
            if text != not_reported[name][source]:
                diff = difflib.unified_diff(
                    not_reported[name][source].splitlines(),
                    text.splitlines(),
                    "not reported",
                    "reported",
                    n=0,
                    lineterm="",
                )
                problems.append(f"{name}, {source}:\n" + "\n".join(line[:300] for line in list(diff)[:12]))
    assert problems == [], "\n\n".join(problems)
