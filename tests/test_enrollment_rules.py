"""The protocol's eligibility rules at their edges, and the screening services' refusals:
leap-day birthdays, consent after screening, unanswered items, duplicates, re-screening,
sign-off and withdrawal. Nothing is ever saved half-way."""

import copy
import datetime

import pytest
import time_machine
from django.conf import settings
from django.utils import translation

from enrollment import services
from enrollment.eligibility import evaluate
from enrollment.models import Consent, EligibilityAnswer, Participant, ProtocolDeviation, Screening, Withdrawal
from tests import factories
from trialsite.exceptions import Conflict, PasswordIncorrect, ReasonRequired
from trialsite.models import AuditEvent, Signature
from trialsite.protocol import check_file

ALL_GOOD = {"IN1": "yes", "IN2": "yes", "EX1": "no", "EX2": "no", "EX3": "no"}
SCREENED = datetime.date(2026, 11, 20)
# The day after SCREENED, 10:00 in Nantong: the screening and consent dates are in the past.
NOW = datetime.datetime(2026, 11, 21, 2, 0, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def definition():
    return check_file(settings.PROTOCOL_FILE).eligibility


def outcome(definition, *, born, screened, consent=None, answers=None):
    return evaluate(
        eligibility=definition,
        date_of_birth=born,
        screening_date=screened,
        consent_date=consent or screened,
        answers=ALL_GOOD if answers is None else answers,
    )


@pytest.mark.parametrize(
    ("born", "screened", "expected"),
    [
        # Born 29 February 2004: 20 on 29 February 2024 (a leap year), not a day before.
        (datetime.date(2004, 2, 29), datetime.date(2024, 2, 28), "ineligible"),
        (datetime.date(2004, 2, 29), datetime.date(2024, 2, 29), "eligible"),
        # Born 29 February 1956: 2026 has no 29 February, so the 70th birthday is 1 March;
        # still 70 on that day, past 70 the day after.
        (datetime.date(1956, 2, 29), datetime.date(2026, 2, 28), "eligible"),
        (datetime.date(1956, 2, 29), datetime.date(2026, 3, 1), "eligible"),
        (datetime.date(1956, 2, 29), datetime.date(2026, 3, 2), "ineligible"),
    ],
)
def test_leap_day_births_reach_the_age_limits_on_the_right_day(definition, born, screened, expected):
    verdict = outcome(definition, born=born, screened=screened)
    assert verdict.outcome == expected
    assert [reason["code"] for reason in verdict.reasons] == ([] if expected == "eligible" else ["AGE"])


def test_consent_dated_after_screening_alone_makes_the_person_ineligible(definition):
    verdict = outcome(
        definition, born=datetime.date(1970, 1, 1), screened=SCREENED, consent=SCREENED + datetime.timedelta(days=1)
    )
    assert verdict.outcome == "ineligible"
    assert [reason["code"] for reason in verdict.reasons] == ["CONSENT"]


def test_every_unanswered_item_is_listed_and_failures_do_not_hide_them(definition):
    verdict = outcome(
        definition,
        born=datetime.date(2010, 1, 1),
        screened=SCREENED,
        answers={"IN1": "no", "EX1": None, "EX3": "maybe"},
    )
    assert verdict.outcome == "incomplete"
    # Unanswered items first (an answer other than yes/no counts as none), then the failures.
    assert [reason["code"] for reason in verdict.reasons] == ["IN2", "EX1", "EX2", "EX3", "AGE", "IN1"]


def test_an_empty_answer_sheet_is_incomplete_never_eligible(definition):
    verdict = outcome(definition, born=datetime.date(1970, 1, 1), screened=SCREENED, answers={})
    assert verdict.outcome == "incomplete"
    assert [reason["code"] for reason in verdict.reasons] == ["IN1", "IN2", "EX1", "EX2", "EX3"]


def test_reasons_are_given_in_chinese_to_a_chinese_reader(definition):
    with translation.override("zh-hans"):
        verdict = outcome(
            definition, born=datetime.date(1970, 1, 1), screened=SCREENED, answers={**ALL_GOOD, "EX3": "yes"}
        )
    criterion = next(c for c in definition.criteria if c.code == "EX3")
    assert criterion.text_zh in verdict.reasons[0]["text"]


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
    with time_machine.travel(NOW, tick=False):
        return services.screening_create(**fields)


def nothing_saved():
    return not (
        Screening.objects.exists()
        or Consent.objects.exists()
        or EligibilityAnswer.objects.exists()
        or Participant.objects.exists()
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"initials": "L"}, "initials"),
        ({"initials": "LWXYZ"}, "initials"),
        ({"screening_date": datetime.date(2026, 11, 22)}, "screening_date"),
        ({"hospital_record_number": "   "}, "hospital_record_number"),
        ({"stratification": {"SMOKER": "yes"}}, "stratification"),
    ],
)
def test_more_bad_input_is_refused_at_its_field_with_nothing_saved(cast, site, overrides, field):
    with pytest.raises(services.InvalidScreening) as refused:
        screen(site, cast.coordinator, **overrides)
    assert refused.value.field == field
    assert nothing_saved()


def test_a_configured_stratification_factor_needs_a_level_and_the_level_is_stored(cast, site):
    trial = site.trial
    definition = copy.deepcopy(trial.definition)
    definition["randomization"]["factors"] = [{"code": "SEVERE", "label": "Severe disease", "levels": ["yes", "no"]}]
    trial.definition = definition
    trial.save()
    site.refresh_from_db()
    with pytest.raises(services.InvalidScreening) as refused:
        screen(site, cast.coordinator)
    assert refused.value.field == "stratification_SEVERE"
    assert nothing_saved()
    screening = screen(site, cast.coordinator, stratification={"SEVERE": "no"})
    assert Screening.objects.get(pk=screening.pk).stratification == {"SEVERE": "no"}


def test_a_screen_failure_is_logged_with_its_consent_and_every_answer(cast, site):
    failure = screen(site, cast.coordinator, answers={**ALL_GOOD, "IN1": "no", "EX2": "yes"})
    assert failure.outcome == "ineligible"
    assert [reason["code"] for reason in Screening.objects.get(pk=failure.pk).reasons] == ["IN1", "EX2"]
    assert Consent.objects.get(screening=failure).version == "2.1"
    assert EligibilityAnswer.objects.filter(screening=failure).count() == 5
    assert not Participant.objects.exists()


def test_an_incomplete_screening_is_not_a_participant(cast, site):
    screening = screen(site, cast.coordinator, answers={**ALL_GOOD, "EX1": None})
    assert screening.outcome == "incomplete"
    assert not Participant.objects.exists()


def test_correcting_to_a_record_number_already_used_at_the_site_is_refused_at_the_field(cast, site):
    screen(site, cast.coordinator)
    second = screen(site, cast.coordinator, hospital_record_number="NT-1002")
    with pytest.raises(services.DuplicateRecordNumber) as refused, time_machine.travel(NOW, tick=False):
        services.screening_update(
            screening=second, changed_by=cast.coordinator, reason="typo", hospital_record_number="NT-1001"
        )
    assert refused.value.field == "hospital_record_number"
    assert Screening.objects.get(pk=second.pk).hospital_record_number == "NT-1002"


def test_a_re_screen_without_a_reason_saves_nothing(cast, site):
    screening = screen(site, cast.coordinator, answers={**ALL_GOOD, "EX3": "yes"})
    with pytest.raises(ReasonRequired) as refused, time_machine.travel(NOW, tick=False):
        services.screening_update(
            screening=screening,
            changed_by=cast.coordinator,
            reason="  ",
            answers={"EX3": "no"},
            date_of_birth=datetime.date(1971, 5, 5),
        )
    assert refused.value.field == "reason"
    screening.refresh_from_db()
    assert (screening.outcome, screening.date_of_birth) == ("ineligible", datetime.date(1970, 5, 5))
    assert EligibilityAnswer.objects.get(screening=screening, criterion_code="EX3").answer == "yes"
    assert not Participant.objects.exists()


def test_a_re_screen_is_audited_with_the_reason_and_can_make_a_screen_failure_a_participant(cast, site):
    screening = screen(site, cast.coordinator)
    failure = screen(site, cast.coordinator, hospital_record_number="NT-2", answers={**ALL_GOOD, "EX3": "yes"})
    with time_machine.travel(NOW, tick=False):
        services.screening_update(
            screening=failure,
            changed_by=cast.coordinator,
            reason="anticoagulant stopped in 2019, misread",
            answers={"EX3": "no"},
            sex="F",
        )
    failure.refresh_from_db()
    assert failure.outcome == "eligible"
    assert failure.participant.screening_number == "S-NT-0002"
    assert screening.participant.screening_number == "S-NT-0001"
    events = AuditEvent.objects.filter(reason="anticoagulant stopped in 2019, misread")
    tables = {event.table_name for event in events}
    assert {"enrollment_screening", "enrollment_eligibilityanswer", "enrollment_participant"} <= tables
    sex_change = events.get(table_name="enrollment_screening", action="UPDATE")
    assert (sex_change.old_values["sex"], sex_change.new_values["sex"]) == ("M", "F")
    assert all(event.actor_id == cast.coordinator.pk for event in events)


def test_an_unchanged_re_screen_needs_no_reason_and_writes_nothing(cast, site):
    screening = screen(site, cast.coordinator)
    before = AuditEvent.objects.count()
    services.screening_update(screening=screening, changed_by=cast.coordinator, reason="", answers=ALL_GOOD)
    assert AuditEvent.objects.count() == before


def test_a_randomized_participants_screening_is_corrected_with_a_reason_and_stays_randomized(cast, site):
    participant = screen(site, cast.coordinator).participant
    Participant.objects.filter(pk=participant.pk).update(
        randomization_number="R-0001", randomized_at=NOW, status="randomized"
    )
    with pytest.raises(ReasonRequired), time_machine.travel(NOW, tick=False):
        services.screening_update(
            screening=participant.screening, changed_by=cast.coordinator, reason="", initials="AB"
        )
    with time_machine.travel(NOW, tick=False):
        services.screening_update(
            screening=participant.screening, changed_by=cast.coordinator, reason="typo in initials", initials="AB"
        )
    assert Screening.objects.get(pk=participant.pk).initials == "AB"
    # The verdict did not change: a correction, not a deviation.
    assert not ProtocolDeviation.objects.exists()
    assert Participant.objects.get(pk=participant.pk).status == "randomized"


def test_only_an_eligible_participant_is_signed_off_once_with_the_right_password(cast, site):
    participant = screen(site, cast.coordinator).participant
    with pytest.raises(PasswordIncorrect):
        services.eligibility_sign(participant=participant, signer=cast.investigator, password="nope")
    assert not Signature.objects.exists()
    signature = services.eligibility_sign(
        participant=participant, signer=cast.investigator, password=factories.PASSWORD
    )
    participant.refresh_from_db()
    assert participant.eligibility_signature == signature
    assert signature.meaning == services.signature_meaning(participant)
    assert signature.signer == cast.investigator
    # Re-screened to ineligible after a correction: no longer signable (a second participant here).
    other = screen(site, cast.coordinator, hospital_record_number="NT-3").participant
    with time_machine.travel(NOW, tick=False):
        services.screening_update(
            screening=other.screening, changed_by=cast.coordinator, reason="EX1 found", answers={"EX1": "yes"}
        )
    with pytest.raises(services.InvalidScreening):
        services.eligibility_sign(participant=other, signer=cast.investigator, password=factories.PASSWORD)
    assert Signature.objects.count() == 1


def test_withdrawal_needs_a_reason_a_date_not_in_the_future_and_happens_once(cast, site):
    participant = screen(site, cast.coordinator).participant
    with time_machine.travel(NOW, tick=False):
        with pytest.raises(services.InvalidScreening) as no_reason:
            services.participant_withdraw(
                participant=participant, withdrawn_by=cast.coordinator, withdrawn_on=SCREENED, reason=" "
            )
        assert no_reason.value.field == "reason"
        with pytest.raises(services.InvalidScreening) as future:
            services.participant_withdraw(
                participant=participant,
                withdrawn_by=cast.coordinator,
                withdrawn_on=datetime.date(2026, 11, 22),
                reason="moved",
            )
        assert future.value.field == "withdrawn_on"
        assert not Withdrawal.objects.exists()
        services.participant_withdraw(
            participant=participant, withdrawn_by=cast.coordinator, withdrawn_on=SCREENED, reason="moved"
        )
        with pytest.raises(Conflict):
            services.participant_withdraw(
                participant=participant, withdrawn_by=cast.coordinator, withdrawn_on=SCREENED, reason="again"
            )
    assert Participant.objects.get(pk=participant.pk).status == "withdrawn"
    assert Withdrawal.objects.get().reason == "moved"
    assert AuditEvent.objects.filter(table_name="enrollment_withdrawal", reason="Withdrawal: moved").exists()
