"""Issue 16, the coordinator's and PI's way through enrollment, through HTTP (web and API):
randomization is confirmed after seeing what it rests on and waits for the PI's signature when
the protocol says so; the PI has a waiting list; a randomized participant's screening is
corrected (a changed verdict is a protocol deviation, the PI is told); each page says what
comes next; unanswered eligibility rows stand out."""

import datetime
import re

import pytest
import time_machine
from django.conf import settings
from django.core import mail

from enrollment.models import Participant, ProtocolDeviation, Screening
from randomization import services as randomization
from tests import dosing_factories as df
from tests import factories
from trialsite.audit import audit_context
from trialsite.models import AuditEvent
from trialsite.protocol import read_definition
from trialsite.protocol_schema import ProtocolError, parse_protocol

NOW = datetime.datetime(2026, 11, 21, 2, 0, tzinfo=datetime.UTC)
ALL_GOOD = {"IN1": "yes", "IN2": "yes", "EX1": "no", "EX2": "no", "EX3": "no"}
FORM = {
    "initials": "ZQ",
    "date_of_birth": "1965-03-02",
    "sex": "F",
    "hospital_record_number": "NT-555123",
    "screening_date": "2026-11-20",
    "consent_version": "2.1",
    "consent_date": "2026-11-19",
    **{f"answer_{code}": answer for code, answer in ALL_GOOD.items()},
}
ARMS = re.compile(r"\b(TOC|ASA|COMBO|PBO|Tocilizumab|Aspirin|Placebo)\b", re.IGNORECASE)


@pytest.fixture(autouse=True)
def _the_day_after_screening():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def locked_list(trial, cast):
    made = randomization.list_generate(trial=trial, seed="friction", slots_per_stratum=8, created_by=cast.statistician)
    return randomization.list_lock(randomization_list=made, locked_by=cast.statistician, password=factories.PASSWORD)


def _main(response) -> str:
    return response.content.decode().split("<main", 1)[-1]


# --- 1. confirmation and the PI's signature first ---------------------------------------------


def test_randomize_shows_what_it_will_use_then_randomizes_only_on_confirm(cast, site, locked_list, client_for):
    participant = factories.make_participant(site, by=cast.coordinator)
    coordinator = client_for(cast.coordinator)
    page = coordinator.get(f"/participants/{participant.pk}/")
    assert f'href="/participants/{participant.pk}/randomize/"' in page.content.decode()

    confirm = coordinator.get(f"/participants/{participant.pk}/randomize/")
    assert confirm.status_code == 200
    basis = _main(confirm)
    assert "NT · Affiliated Hospital of Nantong University" in basis
    assert "Stratification factors" in basis and "None besides the site" in basis
    assert "Eligible" in basis and "Eligibility signed by the PI" in basis
    assert cast.investigator.get_username() in basis  # who signed
    assert "Confirm and randomize" in basis
    assert not ARMS.search(basis)
    # Looking is not randomizing.
    assert Participant.objects.get(pk=participant.pk).randomization_number is None

    done = coordinator.post(f"/participants/{participant.pk}/randomize/", follow=True)
    assert "Randomized: NT-0001" in done.content.decode()
    assert Participant.objects.get(pk=participant.pk).randomization_number == "NT-0001"


def test_without_the_pis_signature_web_and_api_refuse_at_the_field(cast, site, locked_list, client_for, api_for):
    participant = factories.make_participant(site, by=cast.coordinator, signed=False)
    coordinator = client_for(cast.coordinator)
    confirm = _main(coordinator.get(f"/participants/{participant.pk}/randomize/"))
    assert "Not signed yet: the protocol requires the signature before randomization." in confirm
    assert re.search(r"<button type=\"submit\" disabled>", confirm)

    refused = coordinator.post(f"/participants/{participant.pk}/randomize/")
    assert refused.status_code == 400
    assert re.search(r'<tr id="signature" class="unanswered">.*has not signed', _main(refused), re.DOTALL)
    api = api_for(cast.coordinator).post(f"/api/v1/participants/{participant.pk}/randomize/")
    assert api.status_code == 400
    assert list(api.json()) == ["eligibility_signature"]
    assert "has not signed" in api.json()["eligibility_signature"][0]
    assert Participant.objects.get(pk=participant.pk).randomization_number is None

    factories.sign_eligibility(participant)
    assert api_for(cast.coordinator).post(f"/api/v1/participants/{participant.pk}/randomize/").status_code == 200


def test_the_signature_rule_is_a_protocol_setting(cast, site, locked_list, api_for):
    definition, protocol = read_definition(settings.PROTOCOL_FILE)
    assert protocol.randomization.require_eligibility_signature is True
    with pytest.raises(ProtocolError, match=r"randomization.require_eligibility_signature: must be true or false"):
        parse_protocol(
            {**definition, "randomization": {**definition["randomization"], "require_eligibility_signature": "yes"}}
        )
    # Another protocol without it: randomized without a signature.
    trial = site.trial
    trial.definition = {**trial.definition, "randomization": dict(trial.definition["randomization"])}
    del trial.definition["randomization"]["require_eligibility_signature"]
    with audit_context(reason="test: another protocol"):
        trial.save(update_fields=["definition"])
    participant = factories.make_participant(site, by=cast.coordinator, signed=False)
    assert api_for(cast.coordinator).post(f"/api/v1/participants/{participant.pk}/randomize/").status_code == 200


def test_the_pi_has_a_waiting_for_my_signature_list(cast, site, other_site, client_for):
    waiting = factories.make_participant(site, by=cast.coordinator, signed=False)
    signed = factories.make_participant(site, by=cast.coordinator)
    not_eligible = factories.make_participant(site, by=cast.coordinator, signed=False, eligible=False)
    elsewhere = factories.make_participant(other_site, by=cast.other_coordinator, signed=False)
    pi = client_for(cast.investigator)
    home = pi.get("/").content.decode()
    assert 'href="/participants/awaiting-signature/"' in home and "Waiting for my signature" in home
    listed = _main(pi.get("/participants/awaiting-signature/"))
    assert waiting.screening_number in listed
    for absent in (signed, not_eligible, elsewhere):
        assert f'href="/participants/{absent.pk}/"' not in listed
    pi.post(f"/participants/{waiting.pk}/", {"action": "sign", "password": factories.PASSWORD})
    assert "Nothing is waiting for your signature." in _main(pi.get("/participants/awaiting-signature/"))
    assert client_for(cast.coordinator).get("/participants/awaiting-signature/").status_code == 404


# --- 2. corrections after randomization --------------------------------------------------------


def test_a_randomized_participants_date_of_birth_is_corrected_on_the_page(cast, site, client_for):
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    coordinator = client_for(cast.coordinator)
    form = _main(coordinator.get(f"/screening/{participant.pk}/"))
    # Said before anything is filled in.
    assert 'id="randomized-notice"' in form and "the participant stays randomized" in form
    data = {**FORM, "hospital_record_number": participant.screening.hospital_record_number}
    data.update(initials="TS", sex="F", screening_date="2026-11-02", consent_version="1.0", consent_date="2026-11-02")
    data.update(date_of_birth="1970-06-01")
    no_reason = coordinator.post(f"/screening/{participant.pk}/", {**data, "date_of_birth": "1971-06-01"})
    assert "reason" in no_reason.context["form"].errors
    fixed = coordinator.post(
        f"/screening/{participant.pk}/",
        {**data, "date_of_birth": "1971-06-01", "reason": "typo: 1971 on the ID card"},
        follow=True,
    )
    assert "Screening updated." in fixed.content.decode()
    assert Screening.objects.get(pk=participant.pk).date_of_birth == datetime.date(1971, 6, 1)
    assert Participant.objects.get(pk=participant.pk).status == "randomized"
    assert not ProtocolDeviation.objects.exists()
    assert AuditEvent.objects.filter(table_name="enrollment_screening", reason="typo: 1971 on the ID card").exists()


def test_a_correction_that_changes_the_verdict_is_a_deviation_and_the_pi_is_told(
    cast, site, api_for, client_for, django_capture_on_commit_callbacks
):
    cast.investigator.email = "pi@nantong.example"
    cast.investigator.save(update_fields=["email"])
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    mail.outbox.clear()
    path = f"/api/v1/screenings/{participant.pk}/"
    no_reason = api_for(cast.coordinator).patch(path, {"answers": {"EX1": "yes"}}, format="json")
    assert no_reason.status_code == 400 and list(no_reason.json()) == ["reason"]
    with django_capture_on_commit_callbacks(execute=True):
        corrected = api_for(cast.coordinator).patch(
            path, {"answers": {"EX1": "yes"}, "reason": "liver disease found in the old notes"}, format="json"
        )
    assert corrected.status_code == 200 and corrected.json()["outcome"] == "ineligible"
    assert Participant.objects.get(pk=participant.pk).status == "randomized"
    deviation = ProtocolDeviation.objects.get()
    assert deviation.kind == "eligibility_changed" and deviation.participant_id == participant.pk
    assert "from Eligible to Not eligible" in deviation.description and "liver disease found" in deviation.description
    assert AuditEvent.objects.filter(table_name="enrollment_protocoldeviation").exists()
    [message] = mail.outbox
    assert message.to == ["pi@nantong.example"] and participant.randomization_number in message.subject
    assert not ARMS.search(message.subject + message.body)
    page = _main(client_for(cast.monitor).get(f"/participants/{participant.pk}/"))
    assert 'id="deviations"' in page and "Eligibility verdict changed after randomization" in page


def test_a_verdict_changed_before_randomization_needs_the_pis_signature_again(cast, site, api_for, client_for):
    participant = factories.make_participant(site, by=cast.coordinator)
    path = f"/api/v1/screenings/{participant.pk}/"
    api = api_for(cast.coordinator)
    assert api.patch(path, {"answers": {"EX1": "yes"}, "reason": "liver disease"}, format="json").status_code == 200
    assert Participant.objects.get(pk=participant.pk).eligibility_signature is None
    assert api.patch(path, {"answers": {"EX1": "no"}, "reason": "wrong chart"}, format="json").status_code == 200
    listed = _main(client_for(cast.investigator).get("/participants/awaiting-signature/"))
    assert participant.screening_number in listed
    assert not ProtocolDeviation.objects.exists()


# --- 3. next steps -------------------------------------------------------------------------------


def test_after_an_eligible_screening_the_next_step_is_one_primary_button(cast, site, locked_list, client_for):
    coordinator = client_for(cast.coordinator)
    screening_page = coordinator.post("/screening/new/", FORM, follow=True)
    participant = Participant.objects.get()
    page = _main(screening_page)
    assert re.search(
        r'id="next-step">\s*<p><a class="button" href="/participants/\d+/">Next: eligibility sign-off', page
    )
    pi_view = _main(client_for(cast.investigator).get(f"/screening/{participant.pk}/"))
    assert f'href="/participants/{participant.pk}/#sign">Next: sign off eligibility' in pi_view
    factories.sign_eligibility(participant)
    page = _main(coordinator.get(f"/screening/{participant.pk}/"))
    assert f'<a class="button" href="/participants/{participant.pk}/randomize/">Next: randomize S-NT-0001' in page
    # The correction form no longer stands in the way: folded away.
    assert '<details class="card" id="correction">' in page


def test_the_next_visit_stands_out_pages_lead_back_and_withdrawal_is_folded(cast, site, client_for):
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    page = _main(client_for(cast.coordinator).get(f"/participants/{participant.pk}/"))
    c1, c2 = participant.visits.get(code="C1"), participant.visits.get(code="C2")
    assert f'<a class="button" href="/visits/{c1.pk}/record/" id="record-next">' in page
    assert f'<a class="button secondary" href="/visits/{c2.pk}/record/"' in page
    assert page.count('id="record-next"') == 1
    assert '<details class="card" id="withdraw">' in page
    back = f'href="/participants/{participant.pk}/"'
    assert back in _main(client_for(cast.coordinator).get(f"/visits/{c1.pk}/"))
    assert back in _main(client_for(cast.investigator).get(f"/participants/{participant.pk}/unblind/"))


# --- errors where the eye is ----------------------------------------------------------------------


def test_unanswered_eligibility_rows_are_highlighted(cast, site, client_for):
    coordinator = client_for(cast.coordinator)
    fresh = _main(coordinator.get("/screening/new/"))
    assert 'class="unanswered"' not in fresh  # nothing is flagged before anything was asked
    saved = coordinator.post("/screening/new/", {**FORM, "answer_IN2": "", "answer_EX3": ""}, follow=True)
    page = _main(saved)
    assert '<tr class="unanswered" id="row_answer_IN2">' in page
    assert '<tr class="unanswered" id="row_answer_EX3">' in page
    assert '<tr id="row_answer_IN1">' in page
    refused = _main(coordinator.post("/screening/new/", {**FORM, "initials": "", "answer_EX1": ""}))
    assert '<tr class="unanswered" id="row_answer_EX1">' in refused


def test_the_new_pages_speak_chinese(cast, site, locked_list, client_for):
    waiting = factories.make_participant(site, by=cast.coordinator, signed=False)
    zh = {"headers": {"accept-language": "zh-hans"}}
    pages = [
        _main(client_for(cast.coordinator).get(f"/participants/{waiting.pk}/randomize/", **zh)),
        _main(client_for(cast.investigator).get("/participants/awaiting-signature/", **zh)),
        _main(client_for(cast.coordinator).get(f"/screening/{waiting.pk}/", **zh)),
    ]
    assert "确认并随机化" in pages[0] and "尚未签字" in pages[0]
    assert "审核并签字" in pages[1]
    assert "由主要研究者签署入选资格确认" in pages[2]
    for page in pages:
        text = re.sub(r"<[^>]+>", " ", page.split("</nav>")[-1])
        words = set(re.findall(r"\b[A-Za-z]{4,}\b", text)) - {"Affiliated", "Hospital", "Nantong", "University"}
        assert not words, words


def test_a_stratum_corrected_after_randomization_is_a_deviation_too(cast, site):
    from enrollment import services

    trial = site.trial
    factor = {"code": "liver", "label": "Liver metastasis", "levels": ["yes", "no"]}
    trial.definition = {**trial.definition, "randomization": {**trial.definition["randomization"], "factors": [factor]}}
    with audit_context(reason="test: a protocol with a stratification factor"):
        trial.save(update_fields=["definition"])
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    Screening.objects.filter(pk=participant.pk).update(stratification={"liver": "no"})
    services.screening_update(
        screening=Screening(pk=participant.pk),
        changed_by=cast.coordinator,
        reason="CT report read again",
        stratification={"liver": "yes"},
    )
    deviation = ProtocolDeviation.objects.get()
    assert deviation.kind == "stratification_changed" and "keeps the stratum" in deviation.description
    assert Participant.objects.get(pk=participant.pk).status == "randomized"
