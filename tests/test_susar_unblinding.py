"""The sponsor's safety officer breaks the blind of one participant only when the sponsor judged
one of that participant's serious events related and unexpected (a SUSAR), through the existing
emergency unblinding (audited, the arm shown to that officer only, the site staying blinded).
Before, the role could unblind any participant of its sites: the arms of the whole trial, one
participant at a time."""

from __future__ import annotations

import datetime
import re

import pytest
import time_machine
from django.utils import timezone

from randomization import services as randomization
from randomization.models import Unblinding
from safety import services
from tests import dosing_factories, factories
from trialsite.models import AuditEvent

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC)
ARM_WORDS = re.compile(r"\b(TOC|ASA|COMBO|PBO|tocilizumab|aspirin|placebo|combination)\b", re.I)
REASON = "SUSAR: the expedited report needs the treatment"


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def participant(cast, site):
    return dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)


def serious_event(participant, cast, site):
    return services.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=services.AeDetails(
            term="gi_haemorrhage",
            grade=3,
            onset_date=timezone.localdate(timezone=site.zone),
            serious=True,
            seriousness=("hospitalisation",),
            awareness_at=timezone.now() - datetime.timedelta(hours=1),
        ),
    )


def assess(event, cast, *, related=True, expectedness="unexpected"):
    return services.sae_assess(
        event=event, assessed_by=cast.sponsor_safety, related=related, expectedness=expectedness, reference="IB v3"
    )


def unblind_page(client, participant):
    return client.post(f"/participants/{participant.pk}/unblind/", {"password": factories.PASSWORD, "reason": REASON})


@pytest.mark.parametrize(
    "judgement",
    [None, {"related": False, "expectedness": "unexpected"}, {"related": True, "expectedness": "expected"}],
    ids=["not_assessed", "not_related", "expected"],
)
def test_the_sponsor_officer_cannot_unblind_a_participant_without_a_susar(
    participant, cast, site, client_for, api_for, judgement
):
    event = serious_event(participant, cast, site)
    if judgement is not None:
        assess(event, cast, **judgement)
    with pytest.raises(randomization.NotASusar):
        randomization.participant_unblind(
            participant=participant, unblinded_by=cast.sponsor_safety, password=factories.PASSWORD, reason=REASON
        )
    page = unblind_page(client_for(cast.sponsor_safety), participant)
    assert page.status_code == 200
    text = page.content.decode()
    assert "related and unexpected" in text and not ARM_WORDS.search(text)
    answer = api_for(cast.sponsor_safety).post(
        f"/api/v1/participants/{participant.pk}/unblind/",
        {"password": factories.PASSWORD, "reason": REASON},
        format="json",
    )
    assert answer.status_code == 403 and "arm_code" not in answer.json()
    assert not ARM_WORDS.search(answer.content.decode())
    assert not Unblinding.objects.exists()
    participant.refresh_from_db()
    assert participant.unblinded_at is None


def test_the_refusal_reads_in_chinese(participant, cast, site, client_for):
    serious_event(participant, cast, site)
    client = client_for(cast.sponsor_safety)
    page = client.post(
        f"/participants/{participant.pk}/unblind/",
        {"password": factories.PASSWORD, "reason": REASON},
        HTTP_ACCEPT_LANGUAGE="zh-hans",
    )
    assert "相关且非预期" in page.content.decode()


def test_a_susar_on_another_participant_opens_only_that_one(participant, cast, site, api_for):
    other = dosing_factories.randomized_participant(site, arm_code="PBO", by=cast.coordinator)
    assess(serious_event(other, cast, site), cast)
    serious_event(participant, cast, site)
    api = api_for(cast.sponsor_safety)
    refused = api.post(
        f"/api/v1/participants/{participant.pk}/unblind/",
        {"password": factories.PASSWORD, "reason": REASON},
        format="json",
    )
    assert refused.status_code == 403
    opened = api.post(
        f"/api/v1/participants/{other.pk}/unblind/", {"password": factories.PASSWORD, "reason": REASON}, format="json"
    )
    assert opened.status_code == 200 and opened.json()["arm_code"] == "PBO"
    assert list(Unblinding.objects.values_list("participant_id", flat=True)) == [other.pk]


def test_after_the_susar_the_officer_sees_the_arm_and_the_site_stays_blinded(participant, cast, site, api_for):
    assess(serious_event(participant, cast, site), cast)
    opened = api_for(cast.sponsor_safety).post(
        f"/api/v1/participants/{participant.pk}/unblind/",
        {"password": factories.PASSWORD, "reason": REASON},
        format="json",
    )
    assert opened.status_code == 200 and opened.json()["arm_code"] == "TOC"
    assert AuditEvent.objects.filter(
        table_name="randomization_unblinding", actor=cast.sponsor_safety, reason__startswith="Emergency unblinding"
    ).exists()
    for name in ("coordinator", "investigator", "monitor", "pharmacist"):
        answer = api_for(cast[name]).get(f"/api/v1/participants/{participant.pk}/")
        assert answer.status_code == 200, name
        assert not ARM_WORDS.search(answer.content.decode()), name


def test_the_investigator_still_unblinds_in_an_emergency_without_any_susar(participant, cast, client_for):
    page = unblind_page(client_for(cast.investigator), participant)
    assert page.status_code == 200 and ARM_WORDS.search(page.content.decode())
    assert Unblinding.objects.get().unblinded_by == cast.investigator


def test_nor_does_the_officer_record_an_opened_sealed_sheet_without_a_susar(participant, cast, site, client_for):
    serious_event(participant, cast, site)
    number = int(participant.randomization_number.rsplit("-", 1)[1])
    answer = client_for(cast.sponsor_safety).post(
        f"/participants/{participant.pk}/sealed-sheet/",
        {"sheet_number": number, "opened_at": "2026-12-01T16:30", "reason": REASON, "password": factories.PASSWORD},
    )
    assert answer.status_code == 200 and "related and unexpected" in answer.content.decode()
    assert not Unblinding.objects.exists()


def test_once_the_sponsor_broke_the_blind_its_assessment_can_no_longer_change(
    participant, cast, site, client_for, api_for
):
    """A re-assessment after the sponsor saw the arm would be made knowing it, and blinded staff
    read assessments and their audit trail: its change or its timing would show them the arm."""
    event = serious_event(participant, cast, site)
    assess(event, cast)
    randomization.participant_unblind(
        participant=participant, unblinded_by=cast.sponsor_safety, password=factories.PASSWORD, reason=REASON
    )
    before = AuditEvent.objects.filter(table_name="safety_susarassessment").count()
    with pytest.raises(services.Conflict) as refused:
        assess(event, cast, related=False)
    assert refused.value.field == "expectedness"
    answer = api_for(cast.sponsor_safety).put(
        f"/api/v1/participants/{participant.pk}/adverse-events/{event.sequence}/susar-assessment/",
        {"related": False, "expectedness": "expected", "reference": "IB v4"},
        format="json",
    )
    assert answer.status_code == 409 and "expectedness" in answer.json()
    page = client_for(cast.sponsor_safety).post(
        f"/participants/{participant.pk}/adverse-events/{event.sequence}/",
        {"action": "assess", "assess-related": "no", "assess-expectedness": "expected", "assess-reference": "IB v4"},
    )
    assert page.status_code == 200 and "can no longer be changed" in page.content.decode()
    assert AuditEvent.objects.filter(table_name="safety_susarassessment").count() == before
    assessment = event.susar_assessment
    assessment.refresh_from_db()
    assert assessment.related is True and assessment.expectedness == "unexpected"


def test_an_investigators_emergency_unblinding_does_not_freeze_the_sponsors_assessment(
    participant, cast, site, client_for
):
    """The investigator's unblinding shows the arm to the investigator alone; the sponsor still
    judges blind, and may still revise its judgement."""
    event = serious_event(participant, cast, site)
    assess(event, cast, related=False)
    assert unblind_page(client_for(cast.investigator), participant).status_code == 200
    assert Unblinding.objects.get().unblinded_by == cast.investigator
    assert assess(event, cast, related=True).related is True
