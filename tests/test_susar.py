"""The SUSAR path (issue 18): the sponsor safety officer assesses a serious event; related and
unexpected makes it a SUSAR with an expedited-report deadline (7 days from awareness when fatal
or life-threatening, 15 otherwise) tracked to done; the officer may break the blind of that one
participant through the emergency unblinding, and the site stays blinded."""

from __future__ import annotations

import datetime
import re

import pytest
import time_machine
from django.utils import timezone

from safety import services
from safety.models import SusarAssessment
from tests import dosing_factories, factories
from trialsite.exceptions import TrialRuleError
from trialsite.models import AuditEvent

pytestmark = pytest.mark.django_db

ARM_WORDS = re.compile(r"\b(Tocilizumab|Aspirin|Placebo)\b", re.IGNORECASE)
NOW = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC)


@pytest.fixture
def participant(cast, site):
    return dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)


def serious_event(participant, cast, site, *, seriousness=("hospitalisation",), outcome="not_recovered", grade=3):
    return services.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=services.AeDetails(
            term="fatigue" if grade < 4 else "sepsis",
            grade=grade,
            onset_date=timezone.localdate(timezone=site.zone),
            serious=True,
            seriousness=seriousness,
            awareness_at=timezone.now() - datetime.timedelta(hours=1),
            outcome=outcome,
            died_on=timezone.localdate(timezone=site.zone) if grade == 5 else None,
            death_cause="Septic shock" if grade == 5 else "",
        ),
    )


def assess(event, user, *, related=True, expectedness="unexpected"):
    return services.sae_assess(
        event=event, assessed_by=user, related=related, expectedness=expectedness, reference="IB v3.0 section 6"
    )


@pytest.mark.parametrize(
    ("seriousness", "outcome", "grade", "days"),
    [
        (("hospitalisation",), "not_recovered", 3, 15),
        (("life_threatening",), "not_recovered", 4, 7),
        (("death",), "fatal", 5, 7),
    ],
)
def test_a_susar_is_due_7_days_from_awareness_when_fatal_or_life_threatening_else_15(
    participant, cast, site, seriousness, outcome, grade, days
):
    with time_machine.travel(NOW, tick=False):
        event = serious_event(participant, cast, site, seriousness=seriousness, outcome=outcome, grade=grade)
        assessment = assess(event, cast.sponsor_safety)
    assert assessment.is_susar
    assert assessment.deadline == event.awareness_at + datetime.timedelta(days=days)


def test_related_but_expected_is_no_susar_and_has_no_deadline(participant, cast, site):
    event = serious_event(participant, cast, site)
    assessment = assess(event, cast.sponsor_safety, expectedness="expected")
    assert not assessment.is_susar and assessment.deadline is None
    assert services.susar_status(assessment) == services.SusarStatus.NOT_SUSAR
    with pytest.raises(TrialRuleError):
        services.susar_report_done(assessment=assessment, reported_by=cast.sponsor_safety, reference="X")


def test_a_susar_is_open_then_overdue_and_done_once_the_expedited_report_is_recorded(
    participant, cast, site, client_for
):
    with time_machine.travel(NOW, tick=False):
        event = serious_event(participant, cast, site)
        assessment = assess(event, cast.sponsor_safety)
        assert services.susar_status(assessment) == services.SusarStatus.OPEN
    with time_machine.travel(NOW + datetime.timedelta(days=16), tick=False):
        assert services.susar_status(assessment) == services.SusarStatus.OVERDUE
        page = client_for(cast.sponsor_safety).get("/safety/susars/")
        assert page.status_code == 200 and b"susar-overdue" in page.content
        with pytest.raises(TrialRuleError) as refused:
            services.susar_report_done(assessment=assessment, reported_by=cast.sponsor_safety, reference=" ")
        assert refused.value.field == "report_reference"
        done = services.susar_report_done(
            assessment=assessment, reported_by=cast.sponsor_safety, reference="CIOMS-2026-001"
        )
        assert services.susar_status(done) == services.SusarStatus.DONE
        assert b"susar-done" in client_for(cast.sponsor_safety).get("/safety/susars/").content
    assert AuditEvent.objects.filter(
        table_name="safety_susarassessment", actor=cast.sponsor_safety, reason="SUSAR expedited report sent"
    ).exists()


def test_an_unassessed_serious_event_is_listed_to_assess(participant, cast, site, client_for):
    serious_event(participant, cast, site)
    page = client_for(cast.sponsor_safety).get("/safety/susars/")
    assert b"susar-to_assess" in page.content


def test_the_assessment_errors_are_named_at_their_fields(participant, cast, site):
    event = serious_event(participant, cast, site)
    with pytest.raises(TrialRuleError) as refused:
        services.sae_assess(
            event=event, assessed_by=cast.sponsor_safety, related=True, expectedness="unexpected", reference=""
        )
    assert refused.value.field == "reference"
    with pytest.raises(TrialRuleError) as refused:
        services.sae_assess(
            event=event, assessed_by=cast.sponsor_safety, related=True, expectedness="maybe", reference="IB"
        )
    assert refused.value.field == "expectedness"
    assert not SusarAssessment.objects.exists()


def test_only_the_sponsor_safety_officer_assesses(participant, cast, site, client_for):
    from django.http import Http404

    event = serious_event(participant, cast, site)
    url = f"/participants/{participant.pk}/adverse-events/{event.sequence}/"
    form = {"action": "assess", "assess-related": "yes", "assess-expectedness": "unexpected", "assess-reference": "IB"}
    for name in ("coordinator", "investigator", "monitor", "statistician", "dsmb", "other_coordinator", "nobody"):
        assert client_for(cast[name]).get("/safety/susars/").status_code == 404, name
        assert client_for(cast[name]).post(url, form).status_code == 404, name
        with pytest.raises(Http404):
            assess(event, cast[name])
    assert not SusarAssessment.objects.exists()
    assert b"susar-assess-form" not in client_for(cast.investigator).get(url).content
    officer = client_for(cast.sponsor_safety)
    assert b"susar-assess-form" in officer.get(url).content
    answer = officer.post(url, form)
    assert answer.status_code == 302
    assessment = SusarAssessment.objects.get()
    assert assessment.is_susar and assessment.assessed_by == cast.sponsor_safety
    assert AuditEvent.objects.filter(
        table_name="safety_susarassessment", actor=cast.sponsor_safety, reason="SAE assessed by the sponsor"
    ).exists()


def test_unblinding_a_susar_shows_the_arm_to_the_sponsor_officer_only(participant, cast, site, client_for):
    event = serious_event(participant, cast, site)
    assess(event, cast.sponsor_safety)
    officer = client_for(cast.sponsor_safety)
    susars = officer.get("/safety/susars/").content.decode()
    assert f"/participants/{participant.pk}/unblind/" in susars
    detail = f"/participants/{participant.pk}/"
    assert not ARM_WORDS.search(officer.get(detail).content.decode())
    answer = officer.post(
        f"/participants/{participant.pk}/unblind/",
        {"password": factories.PASSWORD, "reason": "SUSAR: expedited report needs the treatment"},
    )
    assert answer.status_code == 200 and ARM_WORDS.search(answer.content.decode())
    assert ARM_WORDS.search(officer.get(detail).content.decode())
    for name in ("coordinator", "investigator"):
        assert not ARM_WORDS.search(client_for(cast[name]).get(detail).content.decode()), name
    assert AuditEvent.objects.filter(
        table_name="randomization_unblinding", actor=cast.sponsor_safety, reason__startswith="Emergency unblinding"
    ).exists()
