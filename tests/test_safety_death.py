"""A death closes the participant's treatment and follow-up (issue 18): recorded with the grade 5
episode of the fatal event, with the date and cause; visits still to come will not happen,
reminders stop, nothing more is dosed or randomized, and the participant's status is "died"."""

from __future__ import annotations

import datetime

import pytest
import time_machine
from django.utils import timezone

from dosing import services as dosing_services
from dosing.reminders.models import Reminder
from enrollment import services as enrollment_services
from enrollment.models import Participant, ParticipantStatus
from safety import services
from safety.models import AdverseEvent, Death, SaeNotice
from schedules.models import Visit, VisitStatus
from tests import dosing_factories, factories
from trialsite.exceptions import Conflict, TrialRuleError
from trialsite.models import AuditEvent

pytestmark = pytest.mark.django_db

DAY0 = datetime.date(2026, 11, 3)
DIED_ON = datetime.date(2026, 12, 10)
NOW = datetime.datetime(2026, 12, 12, 9, 0, tzinfo=datetime.UTC)


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def participant(cast, site):
    return dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)


def fatal(**fields):
    values = {
        "term": "sepsis",
        "grade": 5,
        "onset_date": datetime.date(2026, 12, 8),
        "outcome": "fatal",
        "serious": True,
        "seriousness": ("death",),
        "awareness_at": NOW - datetime.timedelta(hours=2),
        "died_on": DIED_ON,
        "death_cause": "Septic shock",
    }
    values.update(fields)
    return services.AeDetails(**values)


def test_a_grade_5_event_records_the_death_and_closes_treatment_and_follow_up(participant, cast):
    open_before = Visit.objects.filter(participant=participant, status=VisitStatus.SCHEDULED).count()
    assert open_before > 1
    event = services.ae_record(participant=participant, recorded_by=cast.coordinator, details=fatal())

    death = Death.objects.get(participant=participant)
    assert (death.died_on, death.cause, death.adverse_event) == (DIED_ON, "Septic shock", event)
    assert death.protocol_version_id == participant.site.trial.current_version_id
    assert Participant.objects.get(pk=participant.pk).status == ParticipantStatus.DIED
    # The fatal episode ends on the day of death.
    assert event.resolution_date == DIED_ON
    visits = Visit.objects.filter(participant=participant)
    assert not visits.filter(status=VisitStatus.SCHEDULED).exists()
    # A window that closed before the death was missed; the rest will not happen.
    assert all(v.window_end < DIED_ON for v in visits.filter(status=VisitStatus.MISSED))
    after = visits.filter(window_end__gte=DIED_ON)
    assert after.exists() and set(after.values_list("status", flat=True)) == {VisitStatus.NOT_DONE_DIED}
    reminders = Reminder.objects.filter(participant=participant)
    assert not reminders.filter(status=Reminder.Status.SCHEDULED).exists()
    assert reminders.filter(status=Reminder.Status.CANCELLED, status_reason="participant died").exists()
    # A death is serious: the SAE clock runs.
    assert SaeNotice.objects.filter(adverse_event=event, kind=SaeNotice.Kind.INITIAL).exists()
    audited = AuditEvent.objects.filter(table_name="safety_death", record_pk=str(death.pk))
    assert audited.get().actor_id == cast.coordinator.pk


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"seriousness": ("hospitalisation",)}, "seriousness"),
        ({"died_on": None}, "died_on"),
        ({"died_on": datetime.date(2026, 12, 7)}, "died_on"),
        ({"died_on": datetime.date(2026, 12, 13)}, "died_on"),
        ({"death_cause": "  "}, "death_cause"),
        ({"grade": 4}, "grade"),
    ],
)
def test_a_death_without_its_date_cause_or_criterion_is_refused_at_the_field(participant, cast, fields, field):
    with pytest.raises(TrialRuleError) as refused:
        services.ae_record(participant=participant, recorded_by=cast.coordinator, details=fatal(**fields))
    assert refused.value.field == field
    assert not AdverseEvent.objects.exists() and not Death.objects.exists()
    assert Participant.objects.get(pk=participant.pk).status == ParticipantStatus.RANDOMIZED


def test_the_enrollment_report_counts_the_death_and_not_as_on_treatment(participant, cast):
    from reports import selectors as report_selectors

    def counts():
        return report_selectors.enrollment_report(report_selectors.report_scope(cast.monitor)).total

    before = counts()
    services.ae_record(participant=participant, recorded_by=cast.coordinator, details=fatal())
    after = counts()
    assert (before["died"], after["died"]) == (0, 1)
    assert after["on_treatment"] == before["on_treatment"] - 1
    assert after["randomized"] == before["randomized"]
    # CONSORT: discontinued, with the death as its reason; the four outcomes still add up.
    group = report_selectors.consort_flow(report_selectors.report_scope(cast.monitor)).groups[0]
    assert dict((code, count) for code, _label, count in group.discontinued_reasons)["died"] == 1
    assert group.on_treatment + group.completed + group.discontinued + group.lost_to_follow_up == group.allocated


def test_a_date_of_death_before_a_recorded_visit_is_refused(participant, cast, site):
    first_visit = Visit.objects.filter(participant=participant).order_by("sequence").first()
    dosing_services.visit_record(
        visit=first_visit, actual_date=DAY0, recorded_by=cast.coordinator, weight_kg=60,
        neutrophils=3000, platelets=200000, alt_uln=1, ast_uln=1,
    )  # fmt: skip
    with pytest.raises(TrialRuleError) as refused:
        services.ae_record(
            participant=participant,
            recorded_by=cast.coordinator,
            details=fatal(onset_date=DAY0 - datetime.timedelta(days=2), died_on=DAY0 - datetime.timedelta(days=1)),
        )
    assert refused.value.field == "died_on"
    assert not Death.objects.exists()


def test_a_grade_change_to_grade_5_records_the_death_once(participant, cast):
    first = services.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=services.AeDetails(term="sepsis", grade=4, onset_date=datetime.date(2026, 12, 5)),
    )
    fifth = services.ae_grade_change(event=first, recorded_by=cast.investigator, details=fatal(term=""))
    assert fifth.follows == first and fifth.grade == 5
    assert Death.objects.get(participant=participant).adverse_event == first
    other = services.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=services.AeDetails(term="sepsis", grade=4, onset_date=datetime.date(2026, 12, 1)),
    )
    with pytest.raises(Conflict):
        services.ae_grade_change(event=other, recorded_by=cast.coordinator, details=fatal(term=""))
    assert Death.objects.count() == 1
    assert AdverseEvent.objects.filter(grade=5).count() == 1


def test_after_a_death_nothing_continues_the_participation(participant, cast, site):
    services.ae_record(participant=participant, recorded_by=cast.coordinator, details=fatal())
    with pytest.raises(Conflict):
        enrollment_services.participant_withdraw(
            participant=participant, withdrawn_by=cast.coordinator, withdrawn_on=DIED_ON, reason="family asked"
        )
    with pytest.raises(TrialRuleError) as late:
        services.ae_record(
            participant=participant,
            recorded_by=cast.coordinator,
            details=services.AeDetails(term="nausea", grade=1, onset_date=DIED_ON + datetime.timedelta(days=1)),
        )
    assert late.value.field == "onset_date"
    closed = Visit.objects.filter(participant=participant, status=VisitStatus.NOT_DONE_DIED).order_by("sequence")[0]
    with pytest.raises(TrialRuleError):
        dosing_services.visit_record(
            visit=closed, actual_date=timezone.localdate(), recorded_by=cast.coordinator, weight_kg=60,
            neutrophils=3000, platelets=200000, alt_uln=1, ast_uln=1,
        )  # fmt: skip
    assert not Visit.objects.filter(participant=participant, actual_date__isnull=False).exists()


def test_a_fatal_outcome_is_not_a_resolution(participant, cast):
    event = services.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=services.AeDetails(term="sepsis", grade=4, onset_date=datetime.date(2026, 12, 5)),
    )
    with pytest.raises(TrialRuleError) as refused:
        services.ae_resolve(event=event, recorded_by=cast.coordinator, resolution_date=DIED_ON, outcome="fatal")
    assert refused.value.field == "outcome"
    assert not Death.objects.exists()


def test_an_unrandomized_participant_who_dies_cannot_be_randomized(cast, site):
    from randomization import services as randomization_services

    enrolled = factories.make_participant(site, by=cast.coordinator)
    services.ae_record(
        participant=enrolled,
        recorded_by=cast.coordinator,
        details=fatal(onset_date=datetime.date(2026, 12, 9), died_on=datetime.date(2026, 12, 11)),
    )
    with pytest.raises(randomization_services.ParticipantDied):
        randomization_services.participant_randomize(
            participant=Participant.objects.get(pk=enrolled.pk), randomized_by=cast.coordinator
        )


def test_the_pages_ask_for_the_date_and_cause_and_show_the_death(participant, cast, client_for):
    client = client_for(cast.coordinator)
    url = f"/participants/{participant.pk}/adverse-events/"
    form = {
        "term": "sepsis",
        "grade": "5",
        "onset_date": "2026-12-08",
        "outcome": "fatal",
        "serious": "on",
        "seriousness": ["death"],
        "awareness_at": "2026-12-12T15:00",
        "died_on": "2026-12-10",
    }
    missing = client.post(url, form)
    assert missing.status_code == 200
    page = missing.content.decode()
    assert 'id="field-death_cause"' in page and "Enter the cause of death." in page
    # What was typed is kept.
    assert 'value="2026-12-10"' in page
    assert client.post(url, {**form, "death_cause": "Septic shock"}).status_code == 302
    detail = client_for(cast.monitor).get(f"/participants/{participant.pk}/").content.decode()
    assert 'id="death"' in detail and "Septic shock" in detail
    assert 'id="withdraw"' not in client.get(f"/participants/{participant.pk}/").content.decode()
    chinese = client.get(f"/participants/{participant.pk}/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert 'id="death"' in chinese


def test_the_api_records_a_death_with_the_same_rules(participant, cast, api_for):
    api = api_for(cast.coordinator)
    url = f"/api/v1/participants/{participant.pk}/adverse-events/"
    payload = {
        "term": "sepsis",
        "grade": 5,
        "onset_date": "2026-12-08",
        "outcome": "fatal",
        "serious": True,
        "seriousness": ["death"],
        "awareness_at": "2026-12-12T07:00:00Z",
    }
    refused = api.post(url, payload, format="json")
    assert refused.status_code == 400 and "died_on" in refused.json()
    done = api.post(url, {**payload, "died_on": "2026-12-10", "death_cause": "Septic shock"}, format="json")
    assert done.status_code == 201, done.content
    assert Death.objects.get().cause == "Septic shock"
