"""The open and closed safety reports (issue 18): counts on a small data set, the closed report
for the DSMB only (unblinded, read-only), per-arm numbers adding up to the open totals, and PDFs
marked on every page."""

from __future__ import annotations

import datetime
import io
from decimal import Decimal

import pytest
from django.utils import timezone
from django.utils.translation import override
from pypdf import PdfReader

from dosing.models import DoseRecord
from safety import selectors, services
from safety.models import AdverseEvent
from tests import dosing_factories, factories
from trialsite.audit import audit_context

pytestmark = pytest.mark.django_db

CLOSED_MARK = "CONFIDENTIAL — closed DSMB report"


def today(participant):
    return timezone.localdate(timezone=participant.site.zone)


def record(participant, by, *, term, grade, serious=False, outcome="not_recovered", days_ago=0):
    onset = today(participant) - datetime.timedelta(days=days_ago)
    fields = {"term": term, "grade": grade, "onset_date": onset, "outcome": outcome}
    if serious:
        fields.update(serious=True, seriousness=("hospitalisation",), awareness_at=timezone.now())
    if grade == 5:
        fields.update(seriousness=("death",), died_on=onset, death_cause="Haemorrhagic shock")
    return services.ae_record(participant=participant, recorded_by=by, details=services.AeDetails(**fields))


def dose(participant, by, *, code, decision):
    """A dose record with the gate's decision (the gates themselves are tested in tests/test_dosing_*)."""
    with audit_context(actor=by, reason="test dose"):
        return DoseRecord.objects.create(
            visit=participant.visits.get(code=code),
            participant=participant,
            site=participant.site,
            first_dose=code == "C1",
            neutrophils=900 if decision == "hold" else 2500,
            platelets=180000,
            alt_uln=Decimal("6.0") if decision == "stop" else Decimal("0.8"),
            ast_uln=Decimal("0.9"),
            decision=decision,
            weight_kg=Decimal("70.0"),
            baseline_weight_kg=Decimal("70.0"),
            dose_mg=Decimal("560.0"),
            concentrate_ml=Decimal("28.0"),
            diluted_volume_ml=Decimal("100.0"),
            recorded_by=by,
        )


@pytest.fixture
def data(cast, site):
    """Three randomized participants in two arms and one not yet randomized."""
    by = cast.coordinator
    toc = dosing_factories.randomized_participant(site, arm_code="TOC", by=by)
    toc2 = dosing_factories.randomized_participant(site, arm_code="TOC", by=by)
    asa = dosing_factories.randomized_participant(site, arm_code="ASA", by=by)
    waiting = factories.make_participant(site, by=by)
    first = record(toc, by, term="epistaxis", grade=1, days_ago=2)
    services.ae_grade_change(
        event=first,
        recorded_by=by,
        details=services.AeDetails(grade=3, onset_date=today(toc)),
    )
    record(toc, by, term="epistaxis", grade=2)
    record(toc2, by, term="epistaxis", grade=1)
    record(asa, by, term="gi_haemorrhage", grade=5, serious=True, outcome="fatal")
    record(waiting, by, term="epistaxis", grade=2)
    dose(toc, by, code="C1", decision="hold")
    dose(toc, by, code="C2", decision="hold")
    dose(asa, by, code="C1", decision="stop")
    dose(toc2, by, code="C1", decision="give")
    return {"toc": toc, "toc2": toc2, "asa": asa, "waiting": waiting}


def test_the_open_report_counts_events_by_participant_and_by_term_and_worst_grade(data, cast):
    report = selectors.safety_report(selectors.open_scope(cast.monitor))
    assert report.arms == []
    total = report.total
    assert len(total.events) == 5
    numbers = [event.participant_number for event in total.events]
    assert numbers == sorted(numbers)
    terms = {row.term: row for row in total.terms}
    # toc: two epistaxis events, worst grade 3 (after the grade change); toc2 grade 1; waiting grade 2.
    assert terms["epistaxis"].participants == 3
    assert terms["epistaxis"].events == 4
    assert terms["epistaxis"].by_grade == {1: 1, 2: 1, 3: 1, 4: 0, 5: 0}
    assert terms["gi_haemorrhage"].by_grade[5] == 1
    summary = total.summary
    assert (summary.participants_with_events, summary.events) == (4, 5)
    assert (summary.sae_participants, summary.sae_events, summary.deaths) == (1, 1, 1)
    assert (summary.hold_participants, summary.holds, summary.stop_participants, summary.stops) == (1, 2, 1, 1)


def test_the_closed_report_by_arm_adds_up_to_the_open_totals(data, cast):
    open_report = selectors.safety_report(selectors.open_scope(cast.monitor))
    closed = selectors.safety_report(selectors.closed_scope(cast.dsmb))
    by_arm = {group.code: group for group in closed.arms}
    assert by_arm["TOC"].summary.holds == 2
    assert by_arm["ASA"].summary.deaths == 1
    assert by_arm["ASA"].summary.stops == 1
    assert by_arm[""].summary.events == 1  # the participant not randomized
    for key in vars(open_report.total.summary):
        assert sum(getattr(group.summary, key) for group in closed.arms) == getattr(open_report.total.summary, key)
    for row in open_report.total.terms:
        arm_rows = [r for group in closed.arms for r in group.terms if r.term == row.term]
        assert sum(r.events for r in arm_rows) == row.events
        assert sum(r.participants for r in arm_rows) == row.participants
    assert sum(len(group.events) for group in closed.arms) == len(open_report.total.events)


@pytest.mark.parametrize("name", ["coordinator", "monitor"])
def test_blinded_roles_get_the_open_report_without_arms_and_404_on_the_closed_one(data, cast, client_for, name, trial):
    client = client_for(cast[name])
    page = client.get("/safety/report/")
    assert page.status_code == 200
    pdf = client.get("/safety/report/pdf/")
    assert pdf.status_code == 200
    text = page.content.decode() + "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    for arm in trial.arms.all():
        with override("zh-hans"):
            name_zh = arm.local_name
        assert arm.code not in text and arm.name not in text and name_zh not in text
    assert client.get("/safety/closed-report/").status_code == 404
    assert client.get("/safety/closed-report/pdf/").status_code == 404


def test_the_supply_manager_unblinded_but_not_a_safety_reader_gets_404(data, cast, client_for):
    assert client_for(cast.supply_manager).get("/safety/closed-report/").status_code == 404


def test_the_dsmb_member_reads_the_closed_report_and_its_pdf_is_marked_on_every_page(data, cast, client_for, trial):
    client = client_for(cast.dsmb)
    page = client.get("/safety/closed-report/")
    assert page.status_code == 200
    assert CLOSED_MARK in page.content.decode()
    assert trial.arms.get(code="TOC").name in page.content.decode()
    answer = client.get("/safety/closed-report/pdf/")
    assert answer.status_code == 200 and answer["Content-Type"] == "application/pdf"
    pages = PdfReader(io.BytesIO(answer.content)).pages
    for number, pdf_page in enumerate(pages, start=1):
        text = pdf_page.extract_text()
        assert text.count(CLOSED_MARK) == 2  # header and footer
        assert f"Page {number} of {len(pages)}" in text


def test_the_closed_pdf_in_chinese_is_marked_too(data, cast, client_for):
    client = client_for(cast.dsmb)
    with override("zh-hans"):
        answer = client.get("/safety/closed-report/pdf/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert answer.status_code == 200
    for pdf_page in PdfReader(io.BytesIO(answer.content)).pages:
        assert "机密" in pdf_page.extract_text()


def test_the_dsmb_member_can_enter_no_data(data, cast, client_for, api_for, site):
    client, api = client_for(cast.dsmb), api_for(cast.dsmb)
    participant, visit = data["toc"], data["toc"].visits.get(code="C3")
    before = AdverseEvent.objects.count()
    answers = [
        client.post("/screening/new/", {}).status_code,
        client.post(f"/participants/{participant.pk}/randomize/", {}).status_code,
        client.post(f"/participants/{participant.pk}/adverse-events/", {"term": "epistaxis", "grade": 1}).status_code,
        client.post(f"/visits/{visit.pk}/", {"actual_date": "2026-12-01"}).status_code,
        api.post(f"/api/v1/visits/{visit.pk}/record/", {"actual_date": "2026-12-01"}, format="json").status_code,
    ]
    assert all(answer in (403, 404, 405) for answer in answers), answers
    assert AdverseEvent.objects.count() == before
    visit.refresh_from_db()
    assert visit.actual_date is None
