"""SAE notices in English and Chinese (issue 18): one message the sponsor's safety contact and
the Chinese site's investigator both read, English first, the subject in both; whatever language
is active when it is sent; and never an arm, in either language."""

from __future__ import annotations

import datetime
import re

import pytest
from django.core import mail
from django.utils import timezone, translation

from safety import services
from safety.models import SaeNotice
from tests import dosing_factories

pytestmark = pytest.mark.django_db

CJK = re.compile(r"[\u4e00-\u9fff]")
SEPARATOR = "\n\n----------\n\n"


@pytest.fixture
def participant(cast, site):
    cast.investigator.email = "pi@hospital.example"
    cast.investigator.save()
    return dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)


def serious(participant, cast, site):
    return services.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=services.AeDetails(
            term="gi_haemorrhage",
            grade=3,
            onset_date=timezone.localdate(timezone=site.zone),
            serious=True,
            seriousness=("hospitalisation", "life_threatening"),
            awareness_at=timezone.now() - datetime.timedelta(minutes=5),
        ),
    )


def no_arm(text: str, trial) -> None:
    for arm in trial.protocol.arms:
        assert arm.name not in text
        assert not arm.name_zh or arm.name_zh not in text
        assert not re.search(rf"\b{re.escape(arm.code)}\b", text)


@pytest.mark.parametrize("active", ["en", "zh-hans"])
def test_the_initial_notice_reads_in_english_then_chinese(participant, cast, site, trial, active):
    event = serious(participant, cast, site)
    notice = SaeNotice.objects.get(adverse_event=event, kind="initial")
    # The worker or a Chinese page's request may have any language active: the message is the same.
    with translation.override(active):
        assert services.sae_notice_send(notice_id=notice.pk) == "sent"
    [message] = mail.outbox
    english_subject, chinese_subject = message.subject.split(" / ")
    assert (
        english_subject
        == f"SAE: participant {participant.randomization_number}, Gastrointestinal haemorrhage (upper or lower)"
    )
    assert chinese_subject == f"严重不良事件:受试者 {participant.randomization_number},消化道出血"
    english, chinese = message.body.split(SEPARATOR)
    assert english.startswith(f"A serious adverse event was recorded at site {site.code}.")
    assert "Seriousness: Required or prolonged hospitalisation; Life-threatening" in english
    assert not CJK.search(english)
    assert chinese.startswith(f"中心 {site.code} 记录了一例严重不良事件。")
    assert "严重性:需要住院或延长住院时间; 危及生命" in chinese
    assert "CTCAE 分级 3" in chinese
    assert event.awareness_at.strftime("%Y-%m-%d %H:%M UTC") in english and chinese.count("UTC") == 1
    no_arm(message.subject + message.body, trial)


def test_the_escalation_reads_in_both_languages_too(participant, cast, site, trial):
    event = serious(participant, cast, site)
    notice = SaeNotice.objects.get(adverse_event=event, kind="12h")
    message = services.compose(notice)
    assert message.subject.startswith("SAE report not signed (12 h)")
    assert "严重不良事件报告未签署(12 小时)" in message.subject
    english, chinese = message.body.split(SEPARATOR)
    assert "It is due 24 hours after awareness." in english
    assert "报告须在获知后 24 小时内完成" in chinese
    no_arm(message.subject + message.body, trial)
