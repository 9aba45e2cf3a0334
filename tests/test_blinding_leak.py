"""The blinding guarantee, tested on every surface a blinded role can reach: after participants
are randomized to all four arms (with kits of both contents assigned), each blinded role crawls
every page it can reach by following links, and GETs every API path of the OpenAPI schema with
the ids of existing records; no arm code, arm name or kit content may appear in any body or
header."""

import datetime
import re
from decimal import Decimal
from urllib.parse import urljoin, urlparse

import pytest
from django.utils import timezone

from dosing import services as dosing_services
from randomization import services
from randomization.models import Slot
from tests import dosing_factories, factories

LEAK = re.compile(
    r"\b(TOC|ASA|COMBO|PBO|Tocilizumab alone|Aspirin alone|Tocilizumab \+ aspirin|Placebo|active|placebo)\b"
)
BLINDED = [
    "coordinator",
    "pharmacist",
    "investigator",
    "monitor",
    "other_coordinator",
    "other_monitor",
    # Blinded until it breaks the blind of a SUSAR's participant (none here).
    "sponsor_safety",
]
HREF = re.compile(r'href="([^"#]+)"')
SKIP = ("/accounts/logout/", "/static/", "/i18n/", "/admin/")


@pytest.fixture
def all_arms_randomized(trial, cast, site):
    randomization_list = services.list_generate(
        trial=trial, seed="leak-test", slots_per_stratum=40, created_by=cast.statistician
    )
    services.list_lock(randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD)
    participants = []
    while Slot.objects.filter(participant__isnull=False).values("arm").distinct().count() < 4:
        participant = factories.make_participant(site, by=cast.coordinator)
        participants.append(services.participant_randomize(participant=participant, randomized_by=cast.coordinator))
    today = timezone.localdate(timezone=site.zone)
    for kit_type in ("INF", "TAB"):
        for content in ("active", "placebo"):
            for _ in range(len(participants)):
                dosing_factories.make_kit(
                    kit_type=kit_type, content=content, site=site, expiry=today + datetime.timedelta(days=400)
                )
    for participant in participants[:4]:
        dosing_services.visit_record(
            visit=participant.visits.get(code="C1"),
            actual_date=today,
            recorded_by=cast.coordinator,
            weight_kg=Decimal("64.0"),
            neutrophils=3000,
            platelets=200000,
            alt_uln=Decimal("1.0"),
            ast_uln=Decimal("1.0"),
        )
    adverse_events(participants, cast)
    return participants


def adverse_events(participants, cast):
    """Issue 18's pages have something to show: an event with a grade change in every arm, and a
    serious one with a signed SAE report and the sponsor's assessment (related but expected: no
    SUSAR, so nobody may break the blind)."""
    from safety import services as safety

    for index, participant in enumerate(participants):
        today = timezone.localdate(timezone=participant.site.zone)
        event = safety.ae_record(
            participant=participant,
            recorded_by=cast.coordinator,
            details=safety.AeDetails(
                term="fatigue", grade=1, onset_date=today, relation_infusion="possible", action_infusion="none"
            ),
        )
        safety.ae_grade_change(
            event=event, recorded_by=cast.coordinator, details=safety.AeDetails(grade=2, onset_date=today)
        )
        if index % 2 == 0:
            serious = safety.ae_record(
                participant=participant,
                recorded_by=cast.coordinator,
                details=safety.AeDetails(
                    term="sepsis",
                    grade=4,
                    onset_date=today,
                    serious=True,
                    seriousness=("hospitalisation",),
                    awareness_at=timezone.now(),
                    action_infusion="withdrawn",
                    action_tablets="held",
                ),
            )
            report = safety.sae_report_write(event=serious, written_by=cast.coordinator, narrative="n", complete=True)
            safety.sae_report_sign(report=report, signer=cast.investigator, password=factories.PASSWORD)
            safety.sae_assess(
                event=serious, assessed_by=cast.sponsor_safety, related=True, expectedness="expected", reference="IB"
            )


def leaks(response) -> list[str]:
    found = []
    for name, value in response.headers.items():
        if name.lower() in ("content-security-policy",):
            continue
        found += [f"header {name}: {match}" for match in LEAK.findall(f"{value}")]
    body = b"".join(response.streaming_content) if response.streaming else response.content
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return found
    return found + LEAK.findall(text)


def unlinked_roots() -> list[str]:
    """Every route of the URL conf that takes no id: a page no menu links to yet is read too."""
    from tests.sweep import web_routes

    return ["/" + route for route in web_routes() if "<" not in route]


def crawl(client, start="/", limit=300):
    seen, queue, visited = set(), [start, *unlinked_roots()], []
    while queue and len(visited) < limit:
        url = queue.pop(0)
        if url in seen or url.startswith(SKIP):
            continue
        seen.add(url)
        response = client.get(url)
        visited.append((url, response))
        if response.status_code == 200 and "text/html" in response.get("Content-Type", ""):
            for href in HREF.findall(response.content.decode()):
                target = urlparse(urljoin(url, href.replace("&amp;", "&")))
                if target.netloc in ("", "testserver") and target.path.startswith("/"):
                    queue.append(target.path + (f"?{target.query}" if target.query else ""))
    return visited


def api_paths(client, ids):
    schema = client.get("/api/v1/schema/?format=json").json()
    for path, operations in schema["paths"].items():
        if "get" not in operations or path.endswith("/schema/"):
            continue
        names = re.findall(r"{(\w+)}", path)
        for record_id in ids if names else [None]:
            filled = re.sub(r"{(sequence|version)}", "1", path)
            yield re.sub(r"{\w+}", str(record_id), filled) if names else path


@pytest.mark.parametrize("role", BLINDED)
def test_no_blinded_role_sees_an_arm_or_a_kit_content_anywhere(all_arms_randomized, cast, client_for, role):
    client = client_for(cast[role])
    ids = [participant.pk for participant in all_arms_randomized]
    ids += list(all_arms_randomized[0].visits.values_list("pk", flat=True)[:2])
    pages = crawl(client)
    assert len(pages) > 3, "the crawl reached too little to mean anything"
    problems = [(url, found) for url, response in pages for found in [leaks(response)] if found]
    for path in api_paths(client, ids):
        response = client.get(path)
        assert response.status_code < 500, path
        if found := leaks(response):
            problems.append((path, found))
    assert problems == []


def test_the_statistician_does_see_arms_so_the_crawl_would_notice_a_leak(all_arms_randomized, cast, client_for):
    randomization_list = Slot.objects.filter(participant__isnull=False).first().randomization_list
    page = client_for(cast.statistician).get(f"/randomization/lists/{randomization_list.pk}/")
    assert LEAK.search(page.content.decode())


def test_the_next_slot_cannot_be_read_by_a_blinded_user_from_any_endpoint(all_arms_randomized, cast, client_for):
    next_slot = Slot.objects.filter(participant__isnull=True).order_by("sequence").first()
    client = client_for(cast.coordinator)
    for path in api_paths(client, [next_slot.pk, next_slot.randomization_list_id]):
        response = client.get(path)
        assert not leaks(response), path
