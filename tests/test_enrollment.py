"""Screening, eligibility, consent, sign-off and withdrawal, through the services, the web forms
and the API."""

import datetime
import threading

import pytest
import time_machine
from django.db import connection

from enrollment import services
from enrollment.eligibility import age_on, evaluate
from enrollment.models import Participant, Screening
from tests import factories
from trialsite.exceptions import PasswordIncorrect, ReasonRequired
from trialsite.models import AuditEvent
from trialsite.protocol import check_file

SCREENED = datetime.date(2026, 11, 20)
ALL_GOOD = {"IN1": "yes", "IN2": "yes", "EX1": "no", "EX2": "no", "EX3": "no"}


@pytest.fixture(scope="module")
def definition():
    from django.conf import settings

    return check_file(settings.PROTOCOL_FILE).eligibility


def verdict(definition, *, born=datetime.date(1970, 1, 1), consent=SCREENED, answers=None):
    return evaluate(
        eligibility=definition,
        date_of_birth=born,
        screening_date=SCREENED,
        consent_date=consent,
        answers=answers if answers is not None else ALL_GOOD,
    )


def test_a_person_meeting_every_criterion_is_eligible(definition):
    assert verdict(definition).outcome == "eligible"


@pytest.mark.parametrize(
    ("code", "bad"), [("IN1", "no"), ("IN2", "no"), ("EX1", "yes"), ("EX2", "yes"), ("EX3", "yes")]
)
def test_each_criterion_alone_makes_the_person_ineligible_with_its_reason(definition, code, bad):
    result = verdict(definition, answers={**ALL_GOOD, code: bad})
    assert result.outcome == "ineligible"
    assert [reason["code"] for reason in result.reasons] == [code]


@pytest.mark.parametrize(
    ("born", "eligible"),
    [
        (datetime.date(2006, 11, 21), False),  # 19 years and 364 days
        (datetime.date(2006, 11, 20), True),  # exactly 20
        (datetime.date(1956, 11, 20), True),  # exactly 70
        (datetime.date(1956, 11, 19), False),  # 70 years and 1 day
    ],
)
def test_age_boundaries_on_the_screening_date(definition, born, eligible):
    assert (verdict(definition, born=born).outcome == "eligible") is eligible


def test_a_leap_day_birth_turns_a_year_older_on_the_first_of_march():
    assert age_on(datetime.date(2004, 2, 29), datetime.date(2024, 2, 28)) == 19
    assert age_on(datetime.date(2004, 2, 29), datetime.date(2024, 2, 29)) == 20
    assert age_on(datetime.date(2004, 2, 29), datetime.date(2025, 2, 28)) == 20
    assert age_on(datetime.date(2004, 2, 29), datetime.date(2025, 3, 1)) == 21


def test_unanswered_items_make_the_screening_incomplete_never_eligible(definition):
    result = verdict(definition, answers={**ALL_GOOD, "EX2": None})
    assert result.outcome == "incomplete"
    assert result.reasons[0]["code"] == "EX2"


def test_a_screen_failure_keeps_every_reason(definition):
    result = verdict(
        definition,
        born=datetime.date(2010, 1, 1),
        consent=SCREENED + datetime.timedelta(days=1),
        answers={**ALL_GOOD, "IN2": "no", "EX3": "yes"},
    )
    assert [reason["code"] for reason in result.reasons] == ["AGE", "CONSENT", "IN2", "EX3"]


def screen(site, by, **overrides):
    fields = dict(
        site=site,
        screened_by=by,
        initials="LW",
        date_of_birth=datetime.date(1970, 5, 5),
        sex="M",
        hospital_record_number="NT-1001",
        screening_date=SCREENED,
        consent_version="2.1",
        consent_date=SCREENED,
        answers=ALL_GOOD,
    )
    fields.update(overrides)
    with time_machine.travel(datetime.datetime(2026, 11, 21, 2, 0, tzinfo=datetime.UTC), tick=False):
        return services.screening_create(**fields)


def test_an_eligible_person_becomes_a_participant_with_a_per_site_screening_number(cast, site, other_site):
    first = screen(site, cast.coordinator)
    second = screen(site, cast.coordinator, hospital_record_number="NT-1002")
    elsewhere = screen(other_site, cast.other_coordinator)
    assert first.participant.screening_number == "S-NT-0001"
    assert second.participant.screening_number == "S-NT-0002"
    assert elsewhere.participant.screening_number == "S-SH-0001"


def test_a_screen_failure_stays_in_the_log_and_is_not_a_participant(cast, site):
    failure = screen(site, cast.coordinator, answers={**ALL_GOOD, "EX1": "yes"})
    assert failure.outcome == "ineligible"
    assert not Participant.objects.filter(pk=failure.pk).exists()
    assert Screening.objects.filter(pk=failure.pk).exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"date_of_birth": datetime.date(2030, 1, 1)}, "date_of_birth"),
        ({"consent_date": SCREENED + datetime.timedelta(days=1)}, "consent_date"),
        ({"initials": "L1"}, "initials"),
    ],
)
def test_bad_input_is_refused_at_its_field_and_nothing_is_saved(cast, site, overrides, field):
    with pytest.raises(services.InvalidScreening) as refused:
        screen(site, cast.coordinator, **overrides)
    assert refused.value.field == field
    assert not Screening.objects.exists()


def test_a_duplicate_hospital_record_number_at_the_same_site_is_refused(cast, site, other_site):
    screen(site, cast.coordinator)
    with pytest.raises(services.DuplicateRecordNumber) as refused:
        screen(site, cast.coordinator)
    assert refused.value.field == "hospital_record_number"
    assert screen(other_site, cast.other_coordinator).pk  # another site may have the same number
    assert Screening.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_screenings_never_share_a_screening_number(trial, cast, site):
    results, barrier = [], threading.Barrier(2)

    def run(number):
        try:
            barrier.wait()
            results.append(
                screen(site, cast.coordinator, hospital_record_number=f"NT-20{number}").participant.screening_number
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    assert sorted(results) == ["S-NT-0001", "S-NT-0002"]


def test_re_screening_needs_a_reason_and_is_audited_with_old_and_new_values(cast, site):
    screening = screen(site, cast.coordinator, answers={**ALL_GOOD, "IN2": None})
    assert screening.outcome == "incomplete"
    with pytest.raises(ReasonRequired):
        services.screening_update(screening=screening, changed_by=cast.coordinator, reason="", answers={"IN2": "yes"})
    assert Screening.objects.get(pk=screening.pk).outcome == "incomplete"
    services.screening_update(
        screening=screening, changed_by=cast.coordinator, reason="answer found in notes", answers={"IN2": "yes"}
    )
    screening.refresh_from_db()
    assert screening.outcome == "eligible" and screening.participant.screening_number == "S-NT-0001"
    change = AuditEvent.objects.get(table_name="enrollment_eligibilityanswer", action="UPDATE")
    assert (change.old_values["answer"], change.new_values["answer"], change.reason) == (
        None,
        "yes",
        "answer found in notes",
    )


def test_the_pi_signs_eligibility_with_the_password_and_the_meaning_is_stored(cast, site):
    participant = screen(site, cast.coordinator).participant
    with pytest.raises(PasswordIncorrect):
        services.eligibility_sign(participant=participant, signer=cast.investigator, password="wrong")
    signature = services.eligibility_sign(
        participant=participant, signer=cast.investigator, password=factories.PASSWORD
    )
    assert "meet all criteria of protocol NCT06442709" in signature.meaning
    assert "S-NT-0001" in signature.meaning
    with pytest.raises(services.AlreadySigned):
        services.eligibility_sign(participant=participant, signer=cast.investigator, password=factories.PASSWORD)


def test_a_participant_is_withdrawn_with_date_and_reason_never_deleted(cast, site):
    participant = screen(site, cast.coordinator).participant
    with time_machine.travel(datetime.datetime(2026, 11, 25, 2, 0, tzinfo=datetime.UTC), tick=False):
        with pytest.raises(services.InvalidScreening) as refused:
            services.participant_withdraw(
                participant=participant,
                withdrawn_by=cast.coordinator,
                withdrawn_on=datetime.date(2026, 11, 1),
                reason="moved",
            )
        assert refused.value.field == "withdrawn_on"
        services.participant_withdraw(
            participant=participant,
            withdrawn_by=cast.coordinator,
            withdrawn_on=datetime.date(2026, 11, 24),
            reason="moved to another city",
        )
    participant.refresh_from_db()
    assert participant.status == "withdrawn"
    assert participant.withdrawal.reason == "moved to another city"
    from django.db import DatabaseError, transaction

    with pytest.raises(DatabaseError), transaction.atomic():
        Participant.objects.filter(pk=participant.pk).delete()


def test_the_screening_form_shows_the_verdict_in_words(cast, site, client_for):
    coordinator = client_for(cast.coordinator)
    form = {
        "initials": "ZQ",
        "date_of_birth": "1965-03-02",
        "sex": "F",
        "hospital_record_number": "NT-555",
        "screening_date": "2026-11-20",
        "consent_version": "2.1",
        "consent_date": "2026-11-19",
        **{f"answer_{code}": answer for code, answer in ALL_GOOD.items()},
    }
    answer = coordinator.post("/screening/new/", {**form, "answer_EX3": "yes"}, follow=True)
    assert b"Not eligible" in answer.content
    assert b"Exclusion applies: Long-term use of anticoagulants" in answer.content
    again = coordinator.post("/screening/new/", {**form, "hospital_record_number": "NT-555"})
    assert b"already been screened at this site" in again.content
    future = coordinator.post(
        "/screening/new/", {**form, "hospital_record_number": "NT-556", "date_of_birth": "2099-01-01"}
    )
    assert b"cannot be in the future" in future.content
    assert Screening.objects.count() == 1


def test_a_coordinator_at_another_site_cannot_see_or_change_the_participant(cast, site, client_for, api_for):
    participant = screen(site, cast.coordinator).participant
    for path in (f"/participants/{participant.pk}/", f"/screening/{participant.pk}/"):
        assert client_for(cast.coordinator).get(path).status_code == 200
        assert client_for(cast.other_coordinator).get(path).status_code == 404
    assert api_for(cast.other_coordinator).get(f"/api/v1/participants/{participant.pk}/").status_code == 404
    assert (
        api_for(cast.other_coordinator)
        .post(f"/api/v1/participants/{participant.pk}/withdraw/", {"withdrawn_on": "2026-11-21", "reason": "x"})
        .status_code
        == 404
    )
    assert (
        api_for(cast.other_coordinator)
        .patch(f"/api/v1/screenings/{participant.pk}/", {"reason": "x", "initials": "AB"}, format="json")
        .status_code
        == 404
    )
    assert api_for(cast.other_coordinator).get("/api/v1/participants/").json()["count"] == 0
    participant.refresh_from_db()
    assert participant.status == "enrolled"


def test_the_api_screens_and_refuses_a_change_without_a_reason_at_the_field(cast, site, api_for):
    api = api_for(cast.coordinator)
    with time_machine.travel(datetime.datetime(2026, 11, 21, 2, 0, tzinfo=datetime.UTC), tick=False):
        created = api.post(
            "/api/v1/screenings/",
            {
                "initials": "HM",
                "date_of_birth": "1980-01-01",
                "sex": "M",
                "hospital_record_number": "NT-9",
                "screening_date": "2026-11-20",
                "consent_version": "2.1",
                "consent_date": "2026-11-20",
                "answers": ALL_GOOD,
            },
            format="json",
        )
        assert created.status_code == 201, created.content
        assert created.json()["outcome"] == "eligible" and created.json()["participant"] == "S-NT-0001"
        assert created.json()["hospital_record_number"] == "•T-9"  # masked but for the last three characters
        refused = api.patch(f"/api/v1/screenings/{created.json()['id']}/", {"initials": "HX"}, format="json")
    assert refused.status_code == 400, refused.content
    assert "reason" in refused.json()
    assert Screening.objects.get().initials == "HM"


def test_the_participant_list_takes_the_same_queries_for_5_or_25_participants(
    cast, site, client_for, django_assert_max_num_queries
):
    coordinator = client_for(cast.coordinator)
    for _ in range(5):
        factories.make_participant(site, by=cast.coordinator)
    with django_assert_max_num_queries(12) as few:
        coordinator.get("/participants/")
    for _ in range(20):
        factories.make_participant(site, by=cast.coordinator)
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = coordinator.get("/participants/?status=enrolled")
    assert page.content.count(b"S-NT-") == 25
