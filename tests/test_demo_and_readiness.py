"""`make run`'s demo is ready for the coordinator's day, loads once, and --empty loads users
only; each role's home page says what its site still misses and who must do it."""

from __future__ import annotations

import datetime
import io
import re

import pytest
import time_machine
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from dosing.models import Kit, KitStatus, Shipment
from enrollment.models import Participant, ParticipantStatus, Screening
from randomization.models import RandomizationList, Slot
from tests import dosing_factories, factories
from trialsite.management.commands.load_demo import DEMO_PASSWORD, DEMO_USERS
from trialsite.models import StaffRole

NOW = datetime.datetime(2026, 11, 21, 2, 0, tzinfo=datetime.UTC)
ARM_WORDS = re.compile(r"\b(TOC|ASA|COMBO|PBO|tocilizumab|aspirin|placebo|active)\b", re.I)


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def debug(settings, trial):
    settings.DEBUG = True
    return trial


def load_demo(*arguments) -> str:
    out = io.StringIO()
    call_command("load_demo", *arguments, stdout=out)
    return out.getvalue()


def log_in(username: str) -> Client:
    client = Client()
    assert client.post("/accounts/login/", {"username": username, "password": DEMO_PASSWORD}).status_code == 302
    return client


def counts() -> dict:
    return {
        "staff roles": StaffRole.objects.count(),
        "lists": RandomizationList.objects.count(),
        "kits": Kit.objects.count(),
        "shipments": Shipment.objects.count(),
        "screenings": Screening.objects.count(),
        "participants": Participant.objects.count(),
    }


def test_the_demo_is_ready_for_the_coordinators_day_and_loads_once(debug, site, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        output = load_demo()
    assert "DEMO seed" in output or "DEMO-ONLY-" in output
    assert "never use it" in output
    active = RandomizationList.objects.get(is_active=True)
    assert active.locked_at and active.seed.startswith("DEMO-ONLY-") and active.seed in output
    # Kits received at the site, every content alike; one assigned to the randomized participant per type.
    at_site = Kit.objects.filter(site=site).exclude(status=KitStatus.SHIPPED)
    assert at_site.count() == 2 * 2 * 8
    assert not Shipment.objects.filter(received_at__isnull=True).exists()
    assert Kit.objects.filter(status=KitStatus.ASSIGNED).count() == 2
    # Participants at every stage.
    screenings = Screening.objects.filter(hospital_record_number__startswith="DEMO")
    assert screenings.count() == 4
    participants = Participant.objects.filter(site=site)
    assert participants.count() == 3  # the screen failure is not a participant
    assert participants.filter(eligibility_signature__isnull=True, status=ParticipantStatus.ENROLLED).count() == 1
    assert participants.filter(eligibility_signature__isnull=False, status=ParticipantStatus.ENROLLED).count() == 1
    randomized = participants.get(status=ParticipantStatus.RANDOMIZED)
    c1 = randomized.visits.order_by("sequence").first()
    assert c1.status == "completed" and c1.kits.count() == 2
    assert randomized.randomization_number in output

    before = counts()
    again = load_demo()
    assert "already loaded" in again
    assert counts() == before

    # The coordinator randomizes the signed participant right away.
    signed = participants.get(eligibility_signature__isnull=False, status=ParticipantStatus.ENROLLED)
    coordinator = log_in("coordinator")
    ready = checklist(coordinator)
    for step in ("list", "kits", "signature"):
        assert f'<li class="done" data-step="{step}">' in ready
    # What is left is the PI's: one participant waits for the signature.
    assert '<li class="missing" data-step="waiting">' in ready and "Principal investigator" in ready
    coordinator.post(reverse("participant-randomize", args=[signed.pk]))
    signed.refresh_from_db()
    assert signed.status == ParticipantStatus.RANDOMIZED and signed.randomization_number
    assert Slot.objects.filter(participant=signed, randomization_list=active).exists()
    # Every demo login works.
    for username, _role, _name in DEMO_USERS:
        log_in(username)


def test_load_demo_empty_loads_the_users_only(debug, site):
    output = load_demo("--empty")
    assert "coordinator" in output and DEMO_PASSWORD in output
    # The safety roles too: the DSMB member and the sponsor's safety officer.
    assert "dsmb" in output and "DSMB member" in output
    assert "safetyofficer" in output and "Sponsor safety officer" in output
    assert counts() == {
        "staff roles": 8,
        "lists": 0,
        "kits": 0,
        "shipments": 0,
        "screenings": 0,
        "participants": 0,
    }
    assert load_demo("--empty") and StaffRole.objects.count() == 8


def test_load_demo_refuses_without_debug(settings, trial):
    from django.core.management.base import CommandError

    settings.DEBUG = False
    with pytest.raises(CommandError):
        load_demo()


def checklist(client: Client) -> str:
    page = client.get("/").content.decode()
    found = re.search(r'<div class="card readiness".*?</div>', page, re.S)
    assert found, "no readiness checklist"
    return found.group(0)


def test_a_new_site_tells_each_role_what_is_missing_and_who_does_it(cast, site, client_for):
    cast.statistician.email = "chen.jing@hospital.example"
    cast.statistician.save(update_fields=["email"])
    coordinator = checklist(client_for(cast.coordinator))
    assert 'data-step="list"' in coordinator and 'data-step="kits"' in coordinator
    assert coordinator.count('class="missing"') >= 2
    assert "Generate or import a randomization list and lock it" in coordinator
    assert "Unblinded statistician" in coordinator and "Ship kits to the site" in coordinator
    assert "Unblinded supply manager" in coordinator
    # The coordinator cannot do these: the steps are addressed to who can, by e-mail.
    assert 'href="/randomization/lists/"' not in coordinator
    assert 'href="mailto:chen.jing@hospital.example?subject=NCT06442709%20NT%3A%20Generate' in coordinator
    assert "Ready: nothing is missing." not in coordinator
    # The statistician and the supply manager get the link to their own step.
    assert 'href="/randomization/lists/"' in checklist(client_for(cast.statistician))
    assert 'href="/supply/"' in checklist(client_for(cast.supply_manager))


def test_kits_shipped_but_not_received_point_at_the_pharmacist(cast, site, client_for):
    from trialsite.audit import audit_context

    with audit_context(reason="test shipment"):
        Shipment.objects.create(site=site, shipped_by=cast.supply_manager)
    coordinator = checklist(client_for(cast.coordinator))
    assert "Receive the shipment on its way to the site" in coordinator and "Pharmacist" in coordinator
    assert 'href="/pharmacy/"' in checklist(client_for(cast.pharmacist))


def test_a_ready_site_says_ready_and_the_blinded_checklist_names_no_content(cast, site, client_for):
    dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    for kit_type in ("INF", "TAB"):
        for content in ("active", "placebo"):
            dosing_factories.make_kit(site=site, kit_type=kit_type, content=content)
    coordinator = checklist(client_for(cast.coordinator))
    assert 'class="missing"' not in coordinator
    assert "Ready: nothing is missing." in coordinator
    assert "Kits at the site: yes" in coordinator
    assert not ARM_WORDS.search(re.sub(r"<[^>]+>", " ", coordinator))


def test_one_content_short_reads_as_no_kits_without_naming_it(cast, site, client_for):
    for kit_type in ("INF", "TAB"):
        dosing_factories.make_kit(site=site, kit_type=kit_type, content="active")
    coordinator = checklist(client_for(cast.coordinator))
    assert "Kits at the site: no" in coordinator
    assert not ARM_WORDS.search(re.sub(r"<[^>]+>", " ", coordinator))


def test_participants_waiting_for_a_signature_are_the_pis_step(cast, site, client_for, trial):
    assert trial.protocol.randomization.require_eligibility_signature
    participant = factories.make_participant(site, by=cast.coordinator)
    if participant.eligibility_signature_id:
        from trialsite.audit import audit_context

        with audit_context(reason="test: not signed yet"):
            Participant.objects.filter(pk=participant.pk).update(eligibility_signature=None)
    pi = checklist(client_for(cast.investigator))
    assert "Sign the eligibility of 1 participant" in pi
    coordinator = checklist(client_for(cast.coordinator))
    assert "Principal investigator" in coordinator
