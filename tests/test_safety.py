"""The adverse event log (issue 18): CTCAE terms and grades, grade changes as linked records,
special interest from the protocol, blinded words only, pages and API on the same services."""

from __future__ import annotations

import datetime

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from safety import services
from safety.ctcae import TERMS
from safety.models import AdverseEvent, SaeNotice, SaeReport
from tests import factories
from trialsite.exceptions import Conflict, PasswordIncorrect, TrialRuleError
from trialsite.protocol_schema import ProtocolError, parse_protocol

pytestmark = pytest.mark.django_db


@pytest.fixture
def participant(cast, site):
    return factories.make_participant(site, by=cast.coordinator)


def today(site):
    return timezone.localdate(timezone=site.zone)


def details(site, **fields):
    values = {"term": "epistaxis", "grade": 1, "onset_date": today(site)}
    values.update(fields)
    return services.AeDetails(**values)


def test_the_term_table_gives_meddra_codes_and_grades_for_the_trial_terms():
    assert TERMS["epistaxis"].meddra_code == 10015090
    assert TERMS["neutrophil_count_decreased"].grades[4] == "<500/mm³"
    assert sorted(TERMS["sepsis"].grades) == [4, 5]
    assert TERMS["other"].needs_text


def test_an_event_is_numbered_per_participant_and_flagged_of_special_interest(participant, cast, site):
    first = services.ae_record(participant=participant, recorded_by=cast.coordinator, details=details(site))
    second = services.ae_record(
        participant=participant, recorded_by=cast.investigator, details=details(site, term="fatigue")
    )
    assert (first.sequence, second.sequence) == (1, 2)
    assert first.special_interest and not second.special_interest
    assert first.protocol_version_id == site.trial.current_version_id


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"term": "nonsense"}, "term"),
        ({"term": "other"}, "term_text"),
        ({"term": "sepsis", "grade": 2}, "grade"),
        ({"grade": 5}, "outcome"),
        ({"serious": True}, "seriousness"),
        ({"serious": True, "seriousness": ("hospitalisation",)}, "awareness_at"),
        ({"seriousness": ("hospitalisation",)}, "serious"),
    ],
)
def test_what_ctcae_and_the_sae_rules_refuse_is_named_at_its_field(participant, cast, site, fields, field):
    with pytest.raises(TrialRuleError) as refused:
        services.ae_record(participant=participant, recorded_by=cast.coordinator, details=details(site, **fields))
    assert refused.value.field == field
    assert not AdverseEvent.objects.exists()


def test_a_grade_change_is_a_new_record_following_the_first_and_ends_the_current_one(participant, cast, site):
    first = services.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=details(site, onset_date=today(site) - datetime.timedelta(days=3)),
    )
    second = services.ae_grade_change(
        event=first, recorded_by=cast.coordinator, details=details(site, grade=3, term="")
    )
    assert second.follows == first and second.sequence == 1 and second.term == "epistaxis"
    first.refresh_from_db()
    assert first.resolution_date == today(site) and first.outcome == "not_recovered"
    services.ae_resolve(event=second, recorded_by=cast.coordinator, resolution_date=today(site), outcome="recovered")
    with pytest.raises(Conflict):
        services.ae_resolve(event=first, recorded_by=cast.coordinator, resolution_date=today(site), outcome="recovered")


def test_blinded_roles_read_events_and_other_sites_get_404(participant, cast, site, client_for, api_for):
    services.ae_record(participant=participant, recorded_by=cast.coordinator, details=details(site))
    page = client_for(cast.monitor).get(f"/participants/{participant.pk}/adverse-events/")
    assert page.status_code == 200 and "Epistaxis" in page.content.decode()
    assert client_for(cast.other_coordinator).get(f"/participants/{participant.pk}/adverse-events/").status_code == 404
    answer = api_for(cast.monitor).get(f"/api/v1/participants/{participant.pk}/adverse-events/")
    assert answer.status_code == 200 and answer.json()[0]["term"] == "epistaxis"
    refused = api_for(cast.monitor).post(
        f"/api/v1/participants/{participant.pk}/adverse-events/",
        {"term": "nausea", "grade": 1, "onset_date": str(today(site))},
        format="json",
    )
    # The project's refusal: a capability the user lacks is a 404, like a record they cannot see.
    assert refused.status_code == 404


def test_the_page_records_an_event_and_shows_errors_at_the_field(participant, cast, site, client_for):
    client = client_for(cast.coordinator)
    url = f"/participants/{participant.pk}/adverse-events/"
    bad = client.post(url, {"term": "sepsis", "grade": "1", "onset_date": str(today(site)), "outcome": "not_recovered"})
    assert bad.status_code == 200
    assert 'id="field-grade"' in bad.content.decode() and "CTCAE defines grades 4, 5" in bad.content.decode()
    good = client.post(
        url, {"term": "nausea", "grade": "2", "onset_date": str(today(site)), "outcome": "not_recovered"}
    )
    assert good.status_code == 302
    assert AdverseEvent.objects.get().term == "nausea"
    chinese = client.get(url, HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert "恶心" in chinese.content.decode()


def test_the_api_records_changes_grade_and_resolves(participant, cast, site, api_for):
    api = api_for(cast.coordinator)
    base = f"/api/v1/participants/{participant.pk}/adverse-events/"
    made = api.post(base, {"term": "alt_increased", "grade": 1, "onset_date": str(today(site))}, format="json")
    assert made.status_code == 201, made.json()
    assert made.json()["special_interest"] is True
    changed = api.post(base + "1/grade-change/", {"grade": 2, "onset_date": str(today(site))}, format="json")
    assert changed.status_code == 201 and changed.json()["follows"] == made.json()["id"]
    refused = api.post(base + "1/grade-change/", {"grade": 2, "onset_date": str(today(site))}, format="json")
    assert refused.status_code == 400
    resolved = api.post(
        base + "1/resolve/", {"resolution_date": str(today(site)), "outcome": "recovered"}, format="json"
    )
    assert resolved.status_code == 200


def test_special_interest_names_only_ctcae_terms_by_path(trial):
    import tomllib

    from django.conf import settings

    data = tomllib.loads(open(settings.PROTOCOL_FILE, encoding="utf-8").read())
    data["adverse_events"] = {"special_interest": ["epistaxis", "bleeding"]}
    with pytest.raises(ProtocolError) as refused:
        parse_protocol(data)
    assert "adverse_events.special_interest[1]" in str(refused.value)


# --- The SAE clock (services; the worker test drives it through Celery) --------------------------


def serious(participant, cast, site, aware):
    return services.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=details(
            site, grade=3, serious=True, seriousness=("hospitalisation",), awareness_at=aware, term="gi_haemorrhage"
        ),
    )


def test_a_serious_event_plans_its_notices_at_0_12_and_20_hours(participant, cast, site):
    aware = timezone.now() - datetime.timedelta(minutes=5)
    event = serious(participant, cast, site, aware)
    due = {notice.kind: notice.due_at for notice in SaeNotice.objects.filter(adverse_event=event)}
    assert due == {
        "initial": aware,
        "12h": aware + datetime.timedelta(hours=12),
        "20h": aware + datetime.timedelta(hours=20),
    }


def test_the_notice_goes_to_the_pi_and_the_sponsor_once_and_names_no_arm(participant, cast, site, trial):
    cast.investigator.email = "pi@hospital.example"
    cast.investigator.save()
    event = serious(participant, cast, site, timezone.now())
    notice = SaeNotice.objects.get(adverse_event=event, kind="initial")
    assert services.sae_notice_send(notice_id=notice.pk) == "sent"
    assert services.sae_notice_send(notice_id=notice.pk) == "already handled"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert sorted(message.to) == sorted(["pi@hospital.example", trial.sponsor_contact_email])
    text = message.subject + message.body
    assert participant.label in text or participant.screening_number in text
    assert "hospitalisation" in text.lower()
    for arm in trial.protocol.arms:
        assert arm.name not in text and f" {arm.code} " not in text


def test_signing_the_complete_report_stops_the_escalations_and_clears_overdue(participant, cast, site):
    event = serious(participant, cast, site, timezone.now() - datetime.timedelta(hours=25))
    assert list(services.sae_overdue(cast.coordinator)) == [event]
    report = services.sae_report_write(event=event, written_by=cast.coordinator, narrative="Melaena.", complete=True)
    with pytest.raises(TrialRuleError):
        services.sae_report_sign(report=report, signer=cast.coordinator, password="x")
    with pytest.raises(PasswordIncorrect):
        services.sae_report_sign(report=report, signer=cast.investigator, password="wrong")
    services.sae_report_sign(report=report, signer=cast.investigator, password=factories.PASSWORD)
    assert not SaeNotice.objects.filter(adverse_event=event, kind__in=["12h", "20h"], status="scheduled").exists()
    assert list(services.sae_overdue(cast.coordinator)) == []
    follow_up = services.sae_report_write(event=event, written_by=cast.coordinator, narrative="Better.", complete=False)
    assert follow_up.version == 2 and SaeReport.objects.count() == 2


def test_the_home_page_shows_the_overdue_sae_report_to_the_site_only(participant, cast, site, client_for):
    with time_machine.travel(timezone.now() - datetime.timedelta(hours=25), tick=False):
        aware = timezone.now()
    serious(participant, cast, site, aware)
    page = client_for(cast.monitor).get("/").content.decode()
    assert 'id="sae-overdue"' in page and f"/participants/{participant.pk}/adverse-events/1/" in page
    assert 'id="sae-overdue"' not in client_for(cast.other_coordinator).get("/").content.decode()
    chinese = client_for(cast.monitor).get("/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "严重不良事件报告逾期" in chinese


def test_the_pi_signs_on_the_page_with_the_password_and_a_wrong_one_is_shown_at_the_field(
    participant, cast, site, client_for
):
    event = serious(participant, cast, site, timezone.now())
    services.sae_report_write(event=event, written_by=cast.coordinator, narrative="Melaena.", complete=True)
    client = client_for(cast.investigator)
    url = f"/participants/{participant.pk}/adverse-events/1/"
    wrong = client.post(url, {"action": "sign", "sign-password": "wrong"})
    assert wrong.status_code == 200 and 'id="field-sign-password"' in wrong.content.decode()
    assert SaeReport.objects.get().signature is None
    right = client.post(url, {"action": "sign", "sign-password": factories.PASSWORD})
    assert right.status_code == 302
    assert SaeReport.objects.get().signature.signer == cast.investigator


def test_a_grade_change_of_a_serious_event_keeps_its_clock(participant, cast, site):
    aware = timezone.now() - datetime.timedelta(hours=1)
    event = serious(participant, cast, site, aware)
    worse = services.ae_grade_change(
        event=event,
        recorded_by=cast.coordinator,
        details=details(site, grade=4, term="", serious=True, seriousness=("life_threatening",)),
    )
    assert worse.awareness_at == aware
    assert SaeNotice.objects.filter(adverse_event=event).count() == 3
    with pytest.raises(TrialRuleError) as refused:
        services.ae_grade_change(event=event, recorded_by=cast.coordinator, details=details(site, grade=2, term=""))
    assert refused.value.field == "serious"
