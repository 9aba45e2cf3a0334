"""SAE reports, the PI's signature and the sponsor's SUSAR assessment over the API (issue 18):
the page's services and permissions (site scoping, the investigator alone signs, read-only and
blind-breaking roles cannot write), and the operations documented in the OpenAPI schema."""

from __future__ import annotations

import datetime

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from safety import services
from safety.models import SaeNotice, SaeReport, SusarAssessment
from tests import factories
from trialsite.models import AuditEvent

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC)


@pytest.fixture
def participant(cast, site):
    return factories.make_participant(site, by=cast.coordinator)


def serious_event(participant, cast, site, *, serious=True):
    return services.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=services.AeDetails(
            term="gi_haemorrhage",
            grade=3,
            onset_date=timezone.localdate(timezone=site.zone),
            serious=serious,
            seriousness=("hospitalisation",) if serious else (),
            awareness_at=timezone.now() - datetime.timedelta(hours=1) if serious else None,
        ),
    )


def reports_url(participant, event):
    return f"/api/v1/participants/{participant.pk}/adverse-events/{event.sequence}/sae-reports/"


def test_the_site_writes_versions_and_the_pi_signs_one_with_the_password(participant, cast, site, api_for):
    event = serious_event(participant, cast, site)
    url = reports_url(participant, event)
    coordinator = api_for(cast.coordinator)
    first = coordinator.post(url, {"narrative": "Melaena, transfused.", "complete": True}, format="json")
    assert first.status_code == 201, first.json()
    assert first.json()["version"] == 1 and first.json()["signed"] is False
    draft = coordinator.post(url, {"narrative": "Follow-up pending.", "complete": False}, format="json")
    assert draft.status_code == 201 and draft.json()["version"] == 2

    listed = api_for(cast.monitor).get(url)
    assert listed.status_code == 200
    assert [row["version"] for row in listed.json()] == [1, 2]

    sign = url + "1/sign/"
    # The coordinator has no signing capability at the site: 404 as on the page.
    assert coordinator.post(sign, {"password": factories.PASSWORD}, format="json").status_code == 404
    investigator = api_for(cast.investigator)
    wrong = investigator.post(sign, {"password": "wrong"}, format="json")
    assert wrong.status_code == 403 and "password" in wrong.json()
    assert SaeReport.objects.get(version=1).signature is None
    unfinished = investigator.post(url + "2/sign/", {"password": factories.PASSWORD}, format="json")
    assert unfinished.status_code == 400
    signed = investigator.post(sign, {"password": factories.PASSWORD}, format="json")
    assert signed.status_code == 200, signed.json()
    assert signed.json()["signed"] is True and signed.json()["signed_by"] == cast.investigator.username
    assert SaeReport.objects.get(version=1).signature.signer == cast.investigator
    assert not SaeNotice.objects.filter(adverse_event=event, kind__in=["12h", "20h"], status="scheduled").exists()
    again = investigator.post(sign, {"password": factories.PASSWORD}, format="json")
    assert again.status_code == 409
    assert investigator.post(url + "9/sign/", {"password": factories.PASSWORD}, format="json").status_code == 404
    assert AuditEvent.objects.filter(
        table_name="safety_saereport", actor=cast.investigator, reason="SAE report signed"
    ).exists()


def test_the_service_refusals_are_named_at_their_fields(participant, cast, site, api_for):
    coordinator = api_for(cast.coordinator)
    event = serious_event(participant, cast, site)
    empty = coordinator.post(reports_url(participant, event), {"narrative": " ", "complete": True}, format="json")
    assert empty.status_code == 400 and "narrative" in empty.json()
    mild = serious_event(participant, cast, site, serious=False)
    refused = coordinator.post(reports_url(participant, mild), {"narrative": "x"}, format="json")
    assert refused.status_code == 409
    assert not SaeReport.objects.exists()


@pytest.mark.parametrize("name", ["other_coordinator", "dsmb", "statistician", "nobody"])
def test_no_report_is_read_or_written_without_the_participant_in_view(participant, cast, site, api_for, name):
    event = serious_event(participant, cast, site)
    services.sae_report_write(event=event, written_by=cast.coordinator, narrative="Melaena.", complete=True)
    client = api_for(cast[name])
    url = reports_url(participant, event)
    assert client.get(url).status_code == 404
    assert client.post(url, {"narrative": "x", "complete": True}, format="json").status_code == 404
    assert client.post(url + "1/sign/", {"password": factories.PASSWORD}, format="json").status_code == 404
    assert SaeReport.objects.count() == 1 and SaeReport.objects.get().signature is None


@pytest.mark.parametrize("name", ["monitor", "sponsor_safety", "pharmacist"])
def test_roles_that_read_the_event_cannot_write_or_sign_its_report(participant, cast, site, api_for, name):
    event = serious_event(participant, cast, site)
    services.sae_report_write(event=event, written_by=cast.coordinator, narrative="Melaena.", complete=True)
    client = api_for(cast[name])
    url = reports_url(participant, event)
    assert client.get(url).status_code == 200
    assert client.post(url, {"narrative": "x", "complete": True}, format="json").status_code == 404
    assert client.post(url + "1/sign/", {"password": factories.PASSWORD}, format="json").status_code == 404
    assert SaeReport.objects.count() == 1 and SaeReport.objects.get().signature is None


def test_the_sponsor_safety_officer_assesses_and_records_the_expedited_report(participant, cast, site, api_for):
    with time_machine.travel(NOW, tick=False):
        event = serious_event(participant, cast, site)
        url = f"/api/v1/participants/{participant.pk}/adverse-events/{event.sequence}/susar-assessment/"
        form = {"related": True, "expectedness": "unexpected", "reference": "IB v3.0 section 6"}
        for name in ("coordinator", "investigator", "monitor", "dsmb", "statistician", "other_coordinator"):
            client = api_for(cast[name])
            assert client.put(url, form, format="json").status_code == 404, name
            assert client.get(url).status_code == 404, name
        assert not SusarAssessment.objects.exists()
        officer = api_for(cast.sponsor_safety)
        assert officer.get(url).status_code == 404
        no_reference = officer.put(url, {**form, "reference": ""}, format="json")
        assert no_reference.status_code == 400 and "reference" in no_reference.json()
        assessed = officer.put(url, form, format="json")
        assert assessed.status_code == 200, assessed.json()
        body = assessed.json()
        assert body["is_susar"] is True and body["status"] == "open"
        deadline = datetime.datetime.fromisoformat(body["deadline"])
        assert deadline == event.awareness_at + datetime.timedelta(days=15)
        assert officer.get(url).json()["assessed_by"] == cast.sponsor_safety.username
        done = officer.post(url + "expedited-report/", {"report_reference": "CIOMS-2026-001"}, format="json")
        assert done.status_code == 200 and done.json()["status"] == "done"
        assert officer.post(url + "expedited-report/", {"report_reference": "again"}, format="json").status_code == 409
    assert AuditEvent.objects.filter(
        table_name="safety_susarassessment", actor=cast.sponsor_safety, reason="SUSAR expedited report sent"
    ).exists()


def test_an_expected_event_needs_no_expedited_report(participant, cast, site, api_for):
    event = serious_event(participant, cast, site)
    url = f"/api/v1/participants/{participant.pk}/adverse-events/{event.sequence}/susar-assessment/"
    officer = api_for(cast.sponsor_safety)
    assessed = officer.put(url, {"related": True, "expectedness": "expected", "reference": "IB"}, format="json")
    assert assessed.json()["is_susar"] is False and assessed.json()["deadline"] is None
    assert officer.post(url + "expedited-report/", {"report_reference": "X"}, format="json").status_code == 409


def test_the_operations_are_in_the_schema_without_warnings(tmp_path):
    # --fail-on-warn: an undocumented field or response makes the command exit with an error.
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    schema = target.read_text()
    for path in (
        "/adverse-events/{sequence}/sae-reports/:",
        "/adverse-events/{sequence}/sae-reports/{version}/sign/:",
        "/adverse-events/{sequence}/susar-assessment/:",
        "/adverse-events/{sequence}/susar-assessment/expedited-report/:",
    ):
        assert path in schema, path
