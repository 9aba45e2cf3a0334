"""Sealed code-break sheets: printed by the unblinded statistician only (one page per randomized
participant), their printing recorded; an opened sheet recorded afterwards by the PI counts as
an emergency unblinding, and the sponsor is told without the arm."""

from __future__ import annotations

import datetime
import io
import re

import pypdf
import pytest
import time_machine
from django.conf import settings
from django.core import mail

from enrollment.models import Participant
from randomization.models import CodeBreakSheetSet, Unblinding
from tests import dosing_factories, factories
from trialsite.models import AuditEvent

NOW = datetime.datetime(2026, 11, 21, 2, 0, tzinfo=datetime.UTC)
ARM_WORDS = re.compile(r"\b(TOC|ASA|COMBO|PBO|tocilizumab|aspirin|placebo|combination)\b", re.I)


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def randomized(site, cast):
    return [
        dosing_factories.randomized_participant(site, arm_code=arm, by=cast.coordinator)
        for arm in ("TOC", "PBO", "ASA")
    ]


def pages_of(content: bytes) -> list[str]:
    return [page.extract_text() for page in pypdf.PdfReader(io.BytesIO(content)).pages]


def test_the_statistician_prints_one_sheet_per_randomized_participant(randomized, site, cast, client_for):
    client = client_for(cast.statistician)
    assert client.get("/randomization/code-break-sheets/").status_code == 200
    answer = client.post("/randomization/code-break-sheets/", {"site": site.pk, "password": factories.PASSWORD})
    assert answer.status_code == 200 and answer["Content-Type"] == "application/pdf"
    assert answer["Cache-Control"] == "no-store"
    pages = pages_of(answer.content)
    assert len(pages) == len(randomized) == 3
    for page, participant in zip(pages, sorted(randomized, key=lambda p: p.randomization_number), strict=True):
        number = int(participant.randomization_number.rsplit("-", 1)[1])
        assert participant.randomization_number in page
        assert f"Sheet {number}" in page and site.trial.nct_id in page and "Tear here" in page
        assert participant.slot.arm.code in page
    printing = CodeBreakSheetSet.objects.get()
    assert (printing.site, printing.generated_by, printing.sheet_count) == (site, cast.statistician, 3)
    assert AuditEvent.objects.filter(
        table_name="randomization_codebreaksheetset", actor=cast.statistician, reason__contains="code-break"
    ).exists()


def test_the_sheets_print_in_chinese(randomized, site, cast, client_for):
    client = client_for(cast.statistician)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    pages = pages_of(
        client.post("/randomization/code-break-sheets/", {"site": site.pk, "password": factories.PASSWORD}).content
    )
    assert len(pages) == 3 and randomized[0].randomization_number in pages[0]


@pytest.mark.parametrize("role", ["coordinator", "investigator", "monitor", "pharmacist", "supply_manager"])
def test_no_one_else_finds_the_sheets(randomized, site, cast, client_for, role):
    client = client_for(cast[role])
    assert client.get("/randomization/code-break-sheets/").status_code == 404
    assert (
        client.post("/randomization/code-break-sheets/", {"site": site.pk, "password": factories.PASSWORD}).status_code
        == 404
    )
    assert not CodeBreakSheetSet.objects.exists()


def test_another_sites_sheets_are_not_found(randomized, other_site, cast, client_for):
    answer = client_for(cast.statistician).post(
        "/randomization/code-break-sheets/", {"site": other_site.pk, "password": factories.PASSWORD}
    )
    assert answer.status_code == 404


def test_a_site_with_no_randomized_participant_is_told_so(site, cast, client_for):
    answer = client_for(cast.statistician).post(
        "/randomization/code-break-sheets/", {"site": site.pk, "password": factories.PASSWORD}
    )
    assert answer.status_code == 400 and "no code-break sheet to print" in answer.content.decode()


def test_the_pi_records_an_opened_sheet_and_the_sponsor_hears_without_the_arm(
    randomized, site, cast, client_for, django_capture_on_commit_callbacks
):
    participant = randomized[1]
    number = int(participant.randomization_number.rsplit("-", 1)[1])
    pi = client_for(cast.investigator)
    path = f"/participants/{participant.pk}/sealed-sheet/"
    form = pi.get(path)
    # The number is read off the opened sheet: the page does not give it.
    assert form.status_code == 200 and f'value="{number}"' not in form.content.decode()
    password = factories.PASSWORD
    # The wrong sheet is refused at its field without naming the right one; so is a time still to come.
    wrong = pi.post(
        path, {"sheet_number": number + 1, "opened_at": "2026-11-21T09:30", "reason": "seizure", "password": password}
    )
    assert "sheet_number" in wrong.context["form"].errors
    assert f"{number}," not in str(wrong.context["form"].errors) and f" {number} " not in str(
        wrong.context["form"].errors
    )
    future = pi.post(
        path, {"sheet_number": number, "opened_at": "2026-11-21T11:00", "reason": "seizure", "password": password}
    )
    assert "opened_at" in future.context["form"].errors
    with django_capture_on_commit_callbacks(execute=True):
        answer = pi.post(
            path,
            {
                "sheet_number": number,
                "opened_at": "2026-11-21T09:30",
                "reason": "seizure at night, system down",
                "password": password,
            },
        )
    assert answer.status_code == 302
    unblinding = Unblinding.objects.get()
    assert unblinding.method == Unblinding.Method.SEALED_SHEET and unblinding.sheet_number == number
    # 09:30 in Nantong is 01:30 UTC.
    assert unblinding.opened_at == datetime.datetime(2026, 11, 21, 1, 30, tzinfo=datetime.UTC)
    assert Participant.objects.get(pk=participant.pk).unblinded_at == unblinding.opened_at
    assert unblinding.sponsor_notified_at is not None
    [notice] = mail.outbox
    assert notice.to == [site.trial.sponsor_contact_email]
    assert participant.randomization_number in notice.subject and f"sheet {number}" in notice.body
    assert not ARM_WORDS.search(notice.subject + notice.body)
    assert AuditEvent.objects.filter(
        table_name="randomization_unblinding", actor=cast.investigator, reason__startswith="Emergency unblinding"
    ).exists()


def test_only_who_may_unblind_records_an_opened_sheet(randomized, cast, client_for):
    path = f"/participants/{randomized[0].pk}/sealed-sheet/"
    form = {"sheet_number": 1, "opened_at": "2026-11-21T09:30", "reason": "x", "password": factories.PASSWORD}
    for user in (cast.coordinator, cast.monitor, cast.other_coordinator):
        assert client_for(user).post(path, form).status_code == 404
    assert not Unblinding.objects.exists()


def test_recording_an_opened_sheet_needs_the_password_as_an_emergency_unblinding_does(randomized, cast, client_for):
    # The attack: the page offered the right sheet number and asked nothing else, so any PI's
    # session could reveal every participant's arm.
    participant = randomized[0]
    number = int(participant.randomization_number.rsplit("-", 1)[1])
    path = f"/participants/{participant.pk}/sealed-sheet/"
    form = {"sheet_number": number, "opened_at": "2026-11-21T09:30", "reason": "seizure"}
    pi = client_for(cast.investigator)
    refused = pi.post(path, {**form, "password": "not-the-password"})
    assert refused.status_code == 200 and "password" in refused.context["form"].errors
    assert pi.post(path, form).status_code == 200  # no password at all
    assert not Unblinding.objects.exists()
    detail = pi.get(f"/participants/{participant.pk}/").content.decode()
    assert participant.slot.arm.name not in detail


def test_printing_the_sheets_needs_the_password(randomized, site, cast, client_for):
    client = client_for(cast.statistician)
    refused = client.post("/randomization/code-break-sheets/", {"site": site.pk, "password": "wrong"})
    assert refused.status_code == 400 and refused["Content-Type"].startswith("text/html")
    assert not CodeBreakSheetSet.objects.exists()
