"""Issue 13's insider: a blinded coordinator, pharmacist, PI or monitor who reads everything the
system lets them read, and tries to sort participants by arm with it.

One realistic trial is played forward day by day (four arms at two sites, a generated kit list in
two packaging lots, mixed shipments received one at a time, visits with kits dispensed and
returned, one emergency unblinding by the PI, a stock-out of one content at one site). Then, for
every blinded role, everything it can read is collected (the pages reachable from home, every GET
of the OpenAPI schema with real ids, the audit trail, the exports it may download, the e-mails it
received) and turned into per-participant features. Every feature and every pair of features of
the four roles of a site groups that site's participants; each grouping is tested against the
arm, the infusion content and the tablet content with a permutation test. The participant whose
blind the PI broke is left out (the PI rightly knows that arm). And at every kit given, the
packaging lots the kit could come from must be the same whichever its content.

The attacks the issue reproduced on the landed code are named regression tests further down,
each on its own small trial."""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime
import io
import itertools
import json
import math
import random
import re
import time
import types
from decimal import Decimal
from html.parser import HTMLParser
from urllib.parse import urljoin, urlparse
from xml.etree import ElementTree

import numpy
import openpyxl
import pypdf
import pytest
import time_machine
from django.core import mail
from django.test import Client
from rest_framework.test import APIClient

from crf.models import FormRecord
from dosing import services as dosing
from dosing.exceptions import KitListInvalid, NoKitAvailable
from dosing.models import Kit, KitStatus, Shipment
from dosing.reminders import services as reminders
from enrollment.models import Participant
from randomization import services as randomization
from randomization.models import Slot
from reports import services as report_services
from reports.models import Export
from schedules.models import Visit, VisitStatus
from tests import factories
from trialsite import selectors
from trialsite.models import Role

# 09:00 in Shanghai, where both sites are.
START = datetime.datetime(2026, 12, 1, 1, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
# A shipment reaches the site two days after it leaves the depot.
TRANSIT = 2 * DAY
ARMS = ("TOC", "ASA", "COMBO", "PBO")
# What appears on nothing a blinded role reads (the same words tests/test_blinding_leak.py looks for).
LEAK = re.compile(
    r"\b(TOC|ASA|COMBO|PBO|Tocilizumab alone|Aspirin alone|Tocilizumab \+ aspirin|Placebo|active|placebo)\b"
)
NORMAL_LABS = {"neutrophils": 3200, "platelets": 210000, "alt_uln": Decimal("0.8"), "ast_uln": Decimal("0.9")}


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def logged_in(user, api: bool = False):
    client = APIClient() if api else Client()
    client.force_login(user)
    return client


def api_pages(client, url: str) -> list:
    """Every object of a paginated API list (or the one answer of an unpaginated path)."""
    found = []
    while url:
        answer = client.get(url)
        assert answer.status_code == 200, (url, answer.status_code, answer.content[:300])
        body = answer.json()
        if not (isinstance(body, dict) and "results" in body and "next" in body):
            return [body]
        found += body["results"]
        url = body["next"]
    return found


# --- The trial, played forward ------------------------------------------------------------------


@dataclasses.dataclass
class World:
    """What the scenario built, and the truth the insider must not recover."""

    trial: object
    sites: dict  # code -> Site
    staff: dict  # name -> User
    participants: list
    arm: dict  # participant pk -> arm code
    unblinded: Participant | None = None
    unblinded_by: object = None
    # The pharmacist's own notes, made while receiving one shipment at a time: for each site,
    # kit number -> which receipt (1, 2, ...) turned it from "shipped" into "at site".
    receipts: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(dict))
    # What the coordinator read when recording each dosing visit: (participant pk, visit code) -> no kit?
    no_kit_seen: dict = dataclasses.field(default_factory=dict)
    # Kits given while the packaging lots one content could get differed from the other's.
    told_by_label: list = dataclasses.field(default_factory=list)

    def contents(self, pk) -> dict:
        return self.trial.arms.get(code=self.arm[pk]).kit_contents


def kit_lists(trial, supply_manager):
    """Two packaging lots; the first one's label expiry (the earliest true expiry among its
    contents) comes soon, so its kits are given out first and do not last past cycle 2."""
    dosing.kit_list_generate(
        trial=trial,
        packaging_lot="PL-2611",
        kits_per_type=40,
        lots={
            ("INF", "active"): ("TCZ-2611", datetime.date(2027, 1, 31)),
            ("INF", "placebo"): ("PBI-2611", datetime.date(2027, 1, 25)),
            ("TAB", "active"): ("ASA-2611", datetime.date(2027, 3, 31)),
            ("TAB", "placebo"): ("PBT-2611", datetime.date(2027, 2, 28)),
        },
        created_by=supply_manager,
        seed="insider-test-PL-2611",
    )
    dosing.kit_list_generate(
        trial=trial,
        packaging_lot="PL-2612",
        kits_per_type=80,
        lots={
            ("INF", "active"): ("TCZ-2612", datetime.date(2027, 11, 30)),
            ("INF", "placebo"): ("PBI-2612", datetime.date(2027, 10, 31)),
            ("TAB", "active"): ("ASA-2612", datetime.date(2028, 2, 29)),
            ("TAB", "placebo"): ("PBT-2612", datetime.date(2027, 12, 31)),
        },
        created_by=supply_manager,
        seed="insider-test-PL-2612",
    )


class Pharmacist:
    """Receives a site's shipments one at a time, and (the insider) writes down after each
    receipt which kits turned from shipped to at site, as /api/v1/kits/ shows them."""

    def __init__(self, world: World, site, user):
        self.world, self.site, self.user = world, site, user
        self.count = 0

    def kits_seen(self) -> dict:
        # A fresh session each time: the time machine moves days on and sessions expire.
        client = logged_in(self.user, api=True)
        return {kit["kit_number"]: kit["status"] for kit in api_pages(client, "/api/v1/kits/")}

    def receive_waiting(self, now):
        arrived = Shipment.objects.filter(site=self.site, received_at__isnull=True, shipped_at__lte=now - TRANSIT)
        for shipment in arrived.order_by("shipped_at", "id"):
            before = self.kits_seen()
            dosing.shipment_receive(shipment=shipment, received_by=self.user)
            self.count += 1
            for number, status in self.kits_seen().items():
                if before.get(number) == KitStatus.SHIPPED and status == KitStatus.AT_SITE:
                    self.world.receipts[self.site.code][number] = self.count


def choice_pools(visit: Visit, today: datetime.date) -> dict[str, dict[str, frozenset]]:
    """For each kit type, the (packaging lot, label expiry) pairs the kit given at this visit can
    have, per content, as the documented choice works: the packaging lot with the earliest label
    expiry among those holding a kit of every content that lasts until the next window closes.
    (The unblinded truth, read before the visit to see whether the label could tell.)"""
    lasting = dosing.kit_expiry_needed(visit)
    pools = collections.defaultdict(dict)
    for kit_type in ("INF", "TAB"):
        fit = Kit.objects.filter(
            site=visit.site, status=KitStatus.AT_SITE, kit_type=kit_type, label_expiry__gte=lasting
        ).values_list("packaging_lot", "label_expiry", "content")
        held: dict[tuple, set] = collections.defaultdict(set)
        for lot, expiry, content in fit:
            held[(lot, expiry)].add(content)
        common = sorted((expiry, lot) for (lot, expiry), contents in held.items() if contents >= {"active", "placebo"})
        for content in ("active", "placebo"):
            if common:
                expiry, lot = common[0]
                pools[kit_type][content] = frozenset({(lot, expiry)})
            else:
                pools[kit_type][content] = frozenset()
    return pools


def note_kits_given(world: World, visit: Visit, pools: dict, kits, today):
    """Kits given while the pools of the two contents differed: the label said which content."""
    contents = world.trial.arms.get(code=Slot.objects.get(participant_id=visit.participant_id).arm.code).kit_contents
    for kit in kits:
        by_content = pools[kit.kit_type]
        if (kit.packaging_lot, kit.label_expiry) not in by_content[contents[kit.kit_type]]:
            # The kit choice changed and `choice_pools` no longer describes it: update it
            # rather than trust what it says about the other content.
            world.told_by_label.append(
                f"choice_pools is out of date: at {visit.site.code} on {today} a {kit.kit_type} kit of "
                f"{kit.packaging_lot} ({kit.label_expiry}) was given, which it says could not be"
            )
        elif len(set(by_content.values())) > 1:
            could = "; ".join(
                f"{content} from {', '.join(sorted(f'{lot} ({expiry})' for lot, expiry in pool)) or 'nothing'}"
                for content, pool in sorted(by_content.items())
            )
            world.told_by_label.append(
                f"the label told the content: {visit.site.code} {today} "
                f"{visit.participant.randomization_number} {visit.code}: "
                f"{kit.kit_type} {contents[kit.kit_type]} kit {kit.packaging_lot} ({kit.label_expiry}) given "
                f"while {kit.kit_type} {could}"
            )


def record_dosing_visit(
    world: World, visit: Visit, coordinator, pharmacist, *, weight: Decimal, today, dispense: bool = True
):
    pools = choice_pools(visit, today)
    outcome = dosing.visit_record(
        visit=visit, actual_date=today, recorded_by=coordinator, weight_kg=weight, **NORMAL_LABS
    )
    world.no_kit_seen[(visit.participant_id, visit.code)] = outcome.no_kit
    note_kits_given(world, visit, pools, [kit for kit in outcome.kits if kit.status == KitStatus.ASSIGNED], today)
    for kit in outcome.kits:
        if kit.status == KitStatus.ASSIGNED and dispense:
            dosing.kit_dispense(kit=kit, label_number=kit.kit_number, dispensed_by=pharmacist)
    return outcome


def send_due_reminders(now):
    # The dispatcher's first step: plans made at randomization get their reminders after commit.
    reminders.reminders_plan_pending(now=now)
    for reminder_id in reminders.due_reminder_ids(now=now, batch_size=1000):
        reminders.reminder_send(reminder_id=reminder_id)


AE_TERMS = ("fatigue", "nausea", "epistaxis")


def adverse_events(world: World, cast, staff, investigators: dict, coordinators: dict):
    """Issue 18's safety data, given by enrollment order and never by arm: every participant but
    every third has an adverse event (a third of those with a grade change, resolved), every
    sixth a serious one whose clock sends its e-mails, with a signed SAE report. The sponsor's
    officer assesses each serious one a SUSAR, breaks the blind and sends the expedited report
    (that it sends it only on active product is tests/test_safety_blind.py's)."""
    from safety import services as safety

    now = datetime.datetime.now(tz=datetime.UTC)
    for index, participant in enumerate(world.participants):
        code = "NT" if participant.site_id == world.sites["NT"].pk else "SH"
        today = timezone_today(participant.site)
        if index % 3 != 2:
            event = safety.ae_record(
                participant=participant,
                recorded_by=coordinators[code],
                details=safety.AeDetails(
                    term=AE_TERMS[index % 3],
                    grade=1,
                    onset_date=today - DAY * (1 + index % 4),
                    relation_infusion="possible",
                    relation_tablets="unlikely",
                    action_infusion="none",
                    action_tablets="none",
                ),
            )
            if index % 3 == 0:
                safety.ae_grade_change(
                    event=event, recorded_by=coordinators[code], details=safety.AeDetails(grade=2, onset_date=today)
                )
            if index % 2 == 0:
                safety.ae_resolve(
                    event=event, recorded_by=coordinators[code], resolution_date=today, outcome="recovered"
                )
        if index % 6 == 1:
            serious = safety.ae_record(
                participant=participant,
                recorded_by=coordinators[code],
                details=safety.AeDetails(
                    # Not of special interest: an open grade 3+ one of those holds the next dose.
                    term="nausea",
                    grade=3,
                    onset_date=today - DAY,
                    serious=True,
                    seriousness=("hospitalisation",),
                    awareness_at=now - datetime.timedelta(hours=2 + index),
                    relation_infusion="probable",
                    relation_tablets="possible",
                    action_infusion="withdrawn",
                    action_tablets="held",
                ),
            )
            report = safety.sae_report_write(
                event=serious, written_by=coordinators[code], narrative="Admitted for IV fluids.", complete=True
            )
            safety.sae_report_sign(report=report, signer=investigators[code], password=factories.PASSWORD)
            assessment = safety.sae_assess(
                event=serious, assessed_by=cast.sponsor_safety, related=True, expectedness="unexpected", reference="IB"
            )
            if participant != world.unblinded:
                randomization.participant_unblind(
                    participant=participant,
                    unblinded_by=cast.sponsor_safety,
                    password=factories.PASSWORD,
                    reason="SUSAR: the expedited report needs the treatment",
                )
            safety.susar_report_done(assessment=assessment, reported_by=cast.sponsor_safety, reference=f"CIOMS-{index}")
    for notice_id in safety.due_notice_ids(now=now):
        safety.sae_notice_send(notice_id=notice_id)


def play_trial(trial, site, other_site, cast, traveller, *, per_site: int = 18) -> World:
    """Days 0-8: two participants a day at each site randomized and given cycle 1; day 4 every
    infusion placebo kit at SH is destroyed after a fridge failure, so SH's visits get no kit
    until the resupply arrives two days later; day 5 the PI breaks the blind of one participant.
    Days 28-32: cycle 2 for the first half, tablet bottles returned. Shipments are received one
    at a time, the daily resupply runs every day and due reminders go out. Kits are dispensed on
    the day, but day 8's wait in the pharmacy queue."""
    sh = other_site
    staff = {
        "nt_coordinator": cast.coordinator,
        "nt_pharmacist": cast.pharmacist,
        "nt_investigator": cast.investigator,
        "nt_monitor": cast.monitor,
        "sh_coordinator": cast.other_coordinator,
        "sh_monitor": cast.other_monitor,
        "sh_pharmacist": factories.make_user(Role.PHARMACIST, sh, username="sh_pharmacist"),
        "sh_investigator": factories.make_user(Role.INVESTIGATOR, sh, username="sh_investigator"),
        "statistician": cast.statistician,
        "supply_manager": cast.supply_manager,
    }
    from trialsite.audit import audit_context

    with audit_context(reason="test cast: second site"):
        cast.supply_manager.trial_roles.create(site=sh, role=Role.SUPPLY_MANAGER)
        cast.statistician.trial_roles.create(site=sh, role=Role.STATISTICIAN)
        cast.sponsor_safety.trial_roles.create(site=sh, role=Role.SPONSOR_SAFETY)
    for name, user in staff.items():
        user.email = f"{name}@hospital.example"
        user.save(update_fields=["email"])

    randomization_list = randomization.list_generate(
        trial=trial, seed="insider-list", slots_per_stratum=60, created_by=cast.statistician
    )
    randomization.list_lock(
        randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD
    )
    kit_lists(trial, cast.supply_manager)
    world = World(trial=trial, sites={"NT": site, "SH": sh}, staff=staff, participants=[], arm={})
    coordinators = {"NT": cast.coordinator, "SH": cast.other_coordinator}
    pharmacists = {"NT": Pharmacist(world, site, cast.pharmacist), "SH": Pharmacist(world, sh, staff["sh_pharmacist"])}
    # Two initial shipments per site, on their way at once; the pharmacist receives them on
    # different days.
    for one in (site, sh):
        dosing.shipment_create(site=one, per_content={"INF": 6, "TAB": 6}, shipped_by=cast.supply_manager)
        dosing.shipment_create(site=one, per_content={"INF": 4, "TAB": 4}, shipped_by=cast.supply_manager)
        first = Shipment.objects.filter(site=one).order_by("id").first()
        dosing.shipment_receive(shipment=first, received_by=pharmacists[one.code].user)
        pharmacists[one.code].count = 1
        world.receipts[one.code].update(
            {number: 1 for number in Kit.objects.filter(shipment=first).values_list("kit_number", flat=True)}
        )
    weights = random.Random(13)
    weight_of = {}
    for day in range(33):
        today = START.date() + day * DAY
        for code, one in (("NT", site), ("SH", sh)):
            if day > 0:
                pharmacists[code].receive_waiting(START + day * DAY)
            if code == "SH" and day == 4:
                for kit in Kit.objects.filter(site=sh, status=KitStatus.AT_SITE, kit_type="INF", content="placebo"):
                    dosing.kit_destroy(kit=kit, destroyed_by=cast.supply_manager, reason="fridge failure overnight")
            if day <= 8:
                for _ in range(2):
                    if len([p for p in world.participants if p.site_id == one.pk]) >= per_site:
                        break
                    participant = factories.make_participant(one, by=coordinators[code], screening_date=today)
                    participant = randomization.participant_randomize(
                        participant=participant, randomized_by=coordinators[code]
                    )
                    world.participants.append(participant)
                    weight_of[participant.pk] = Decimal(weights.randrange(450, 850)) / 10
                    record_dosing_visit(
                        world,
                        participant.visits.get(code="C1"),
                        coordinators[code],
                        pharmacists[code].user,
                        weight=weight_of[participant.pk],
                        today=today,
                        # The last day's kits wait in the pharmacy queue.
                        dispense=day < 8,
                    )
            # Visits that waited for a kit get one once stock is back (the pharmacist assigns).
            for visit in Visit.objects.filter(site=one, status=VisitStatus.COMPLETED, kind="dosing", kits__isnull=True):
                pools = choice_pools(visit, today)
                try:
                    kits = dosing.kits_assign(visit=visit, assigned_by=pharmacists[code].user)
                except NoKitAvailable:
                    continue
                note_kits_given(world, visit, pools, kits, today)
                for kit in kits:
                    dosing.kit_dispense(kit=kit, label_number=kit.kit_number, dispensed_by=pharmacists[code].user)
            # Cycle 2 on its target day for the first half of each site's participants.
            for participant in [p for p in world.participants if p.site_id == one.pk][: per_site // 2]:
                visit = participant.visits.get(code="C2")
                if visit.target_date == today:
                    for kit in participant.kits.filter(kit_type="TAB", status=KitStatus.DISPENSED):
                        dosing.kit_return(
                            kit=kit,
                            returned_by=pharmacists[code].user,
                            returned_on=today,
                            tablets_returned=weights.randrange(4, 9),
                        )
                    record_dosing_visit(
                        world,
                        visit,
                        coordinators[code],
                        pharmacists[code].user,
                        weight=weight_of[participant.pk],
                        today=today,
                    )
        if day == 5:
            target = [p for p in world.participants if p.site_id == site.pk][2]
            randomization.participant_unblind(
                participant=target,
                unblinded_by=cast.investigator,
                password=factories.PASSWORD,
                reason="severe bleeding: is the participant on aspirin?",
            )
            world.unblinded, world.unblinded_by = target, cast.investigator
        if day == 10:
            adverse_events(world, cast, staff, {"NT": cast.investigator, "SH": staff["sh_investigator"]}, coordinators)
        dosing.resupply_all_sites()
        send_due_reminders(START + day * DAY)
        traveller.shift(DAY)
    world.arm = dict(Slot.objects.filter(participant__isnull=False).values_list("participant_id", "arm__code"))
    world.participants = list(Participant.objects.filter(pk__in=world.arm).order_by("pk"))
    return world


# --- What a role can read -------------------------------------------------------------------------

SKIP = ("/accounts/logout/", "/static/", "/i18n/", "/admin/", "/accounts/two-factor/")
HREF = re.compile(r'href="([^"#]+)"')
VISIT_PAGE = re.compile(r"^/visits/(\d+)/")
FORM_PAGE = re.compile(r"^/participants/(\d+)/forms/([^/]+)/([^/]+)/$")


@dataclasses.dataclass
class Read:
    """One thing a role read: where (a path with ids replaced by {id}), and what."""

    source: str
    url: str
    kind: str  # html, json, csv, xlsx, odm, text
    body: object


# A paged list (the audit trail, reminders) is the same template over the same selector the API
# lists, and the API is read through every page: the crawl reads its first pages only.
PAGES_PER_LIST = 2


def crawl(client, world: World) -> list[Read]:
    """Every page reachable from home by following links. A visit that was never recorded is
    only its planned dates, which the participant page and the visits API already show: those
    visit pages are not opened (hundreds of copies of one template), nor are the blank forms of
    such a visit: nothing is entered on them, and they were more than half of all the pages."""
    recorded_visits = list(
        Visit.objects.exclude(status=VisitStatus.SCHEDULED).values_list("pk", "participant_id", "code")
    )
    recorded = {pk for pk, _participant_id, _code in recorded_visits}
    recorded_codes = {(participant_id, code) for _pk, participant_id, code in recorded_visits}
    filled = set(FormRecord.objects.values_list("participant_id", "form_code", "visit_code"))
    seen, queue, pages = set(), ["/"], []
    later_pages = collections.Counter()
    while queue:
        url = queue.pop(0)
        if url in seen or url.startswith(SKIP):
            continue
        seen.add(url)
        visit = VISIT_PAGE.match(url)
        if visit and int(visit.group(1)) not in recorded:
            continue
        form = FORM_PAGE.match(url)
        if form:
            participant_id, form_code, visit_code = int(form.group(1)), form.group(2), form.group(3)
            blank = (participant_id, form_code, visit_code) not in filled
            if blank and (participant_id, visit_code) not in recorded_codes:
                continue
        if "page=" in url:
            later_pages[template_of(url)] += 1
            if later_pages[template_of(url)] > PAGES_PER_LIST:
                continue
        response = client.get(url)
        if response.status_code != 200 or "text/html" not in response.get("Content-Type", ""):
            continue
        text = response.content.decode()
        pages.append(Read(template_of(url), url, "html", text))
        for href in HREF.findall(text):
            target = urlparse(urljoin(url, href.replace("&amp;", "&")))
            if target.netloc in ("", "testserver") and target.path.startswith("/"):
                queue.append(target.path + (f"?{target.query}" if target.query else ""))
    return pages


def template_of(url: str) -> str:
    parsed = urlparse(url)
    query = "&".join(
        sorted(part.split("=")[0] for part in parsed.query.split("&") if part and not part.startswith("page="))
    )
    return re.sub(r"/\d+/", "/{id}/", parsed.path) + (f"?{query}" if query else "")


def api_reads(client, world: World, export_ids: list[int]) -> list[Read]:
    """Every GET path of the OpenAPI schema, lists through all their pages, detail paths with
    the ids of real records of every site (another site's answer 404 and are read as nothing)."""
    schema = client.get("/api/v1/schema/?format=json").json()
    # Detail paths answer with the serializer of their list, which is read in full: a few real
    # ids of each site (the other site's must answer 404), the unblinded participant's among them.
    sample = [world.unblinded.pk]
    visits = []
    for one in world.sites.values():
        sample += [p.pk for p in world.participants if p.site_id == one.pk][:3]
        visits += list(
            Visit.objects.filter(site=one).exclude(status=VisitStatus.SCHEDULED).values_list("pk", flat=True)[:3]
        )
    ids = {
        "participants": sample,
        "screenings": sample,
        "visits": visits,
        "sites": [one.pk for one in world.sites.values()],
        "exports": export_ids,
    }
    reads = []
    for path, operations in schema["paths"].items():
        if "get" not in operations or path.endswith(("/schema/", "/docs/")):
            continue
        if "{" not in path:
            answer = client.get(path)
            if answer.status_code == 404:
                continue
            assert answer.status_code == 200, (path, answer.status_code)
            reads.append(Read(path, path, "json", api_pages(client, path)))
            continue
        collection = path.split("/")[3]
        for record_id in ids[collection]:
            answer = client.get(re.sub(r"{\w+}", str(record_id), re.sub(r"{(sequence|version)}", "1", path)))
            assert answer.status_code in (200, 404), (path, answer.status_code)
            if answer.status_code == 200:
                reads.append(Read(path, path.replace("{id}", str(record_id)), "json", answer.json()))
    return reads


# Every kind of export; a table's CSV and XLSX are written from the same rows, so one of the two.
# The dataset comes in both its formats (the ODM is written by its own SQL).
EXPORTS = [
    ("adverse_events", "csv"),
    ("adverse_events", "xlsx"),
    ("consort", "csv"),
    ("consort_diagram", "svg"),
    ("dataset", "odm"),
    ("dataset", "xlsx"),
    ("enrollment", "csv"),
    ("enrollment_by_month", "csv"),
    ("report", "pdf"),
    ("screen_failures", "csv"),
    ("subjects", "csv"),
    ("visits", "xlsx"),
]


def export_reads(client, user) -> tuple[list[Read], list[int]]:
    """Every export the role may request, read back from the download (listings are produced
    the way the worker does, then downloaded)."""
    reads = []
    for kind, format in EXPORTS:
        answer = client.post("/reports/exports/", {"kind": kind, "format": format})
        if answer.status_code == 302:
            export = Export.objects.filter(requested_by=user, kind=kind, format=format).latest("id")
            report_services.export_run(export_id=export.pk)
            answer = client.get(f"/reports/exports/{export.pk}/download/")
        assert answer.status_code == 200, (kind, format, answer.status_code)
        body = b"".join(answer.streaming_content)
        reads.append(Read(f"export {kind}.{format}", f"export {kind}.{format}", format, body))
    return reads, list(Export.objects.filter(requested_by=user).values_list("pk", flat=True))


def mail_reads(user) -> list[Read]:
    return [
        Read("e-mail", message.subject, "text", f"{message.subject}\n{message.body}")
        for message in mail.outbox
        if user.email in message.to
    ]


def read_everything(world: World, user) -> list[Read]:
    client = logged_in(user)
    reads = crawl(client, world)
    exports, export_ids = [], []
    if client.get("/reports/").status_code == 200:
        exports, export_ids = export_reads(client, user)
    return reads + api_reads(client, world, export_ids) + exports + mail_reads(user)


# --- From what was read to features of participants -----------------------------------------
#
# The feature families, and why each one is expected to say nothing about the arm (the
# permutation test below checks the expectation; the comment says what would break it):
# - The participant's own record (ids, screening and randomization numbers, site, initials,
#   status, randomized_at, eligibility): written in enrollment order before and regardless of
#   the allocation; the randomization number is a per-site counter, not the slot's sequence.
# - The visit plan and reminders (codes, target dates, windows, statuses, reminder kinds and due
#   times, the e-mails they send): computed from the randomization day by the protocol alone.
# - Doses and labs (weight, dose, vial plan, volumes, decision): from the weight and the labs;
#   a placebo infusion is prepared to the same dose and volume.
# - Kits (number, type, status, packaging lot, label expiry, ids, assigned, dispensed and
#   returned times, tablets returned): numbers are random 8-digit draws with the contents in
#   small balanced blocks along them; ids follow the numbers; a packaging lot and its label
#   expiry are shared by every content; the kit given is drawn at random among the fit ones;
#   the dates are the visit's. (Whether the lot given could differ by content at the moment of
#   giving is checked directly: `choice_pools`.)
# - Shipments and receipts: every shipment carries the same number of each content of a type,
#   from the same packaging lots, so which shipment or receipt a kit came in says nothing.
# - The audit trail: blinded by an allow-list, every undeclared column hidden, and an update
#   touching only hidden columns is left out (which rows changed together is itself a value).
# - Exports: a blinded export has no arm; its rows are the values above.
# - "No kit": refused for everyone at the site whose visit needs the short type, whichever
#   content is short, with one message.

VISIT_CODE = re.compile(r"^(C\d+|EOT|FU\d+)$")
ISO_MOMENT = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ]\d{2}:\d{2}")
AUDIT_WHAT = re.compile(r"(\w+) #(\d+)")


class Tables(HTMLParser):
    """The tables of a page (rows of cell texts, header cells marked) and its dt/dd pairs."""

    def __init__(self):
        super().__init__()
        self.tables, self.pairs = [], []
        self._cell = self._row = None
        self._dt = self._dd = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self._row = []
            self.tables[-1].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = [tag, ""]
            self._row.append(self._cell)
        elif tag == "dt":
            self._dt = ""
        elif tag == "dd":
            self._dd = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "dd" and self._dd is not None:
            self.pairs.append(((self._dt or "").strip(), self._dd.strip()))
            self._dd = None
        elif tag == "dt":
            pass

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data
        if self._dd is not None:
            self._dd += data
        elif self._dt is not None and self._dd is None:
            self._dt += data

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)


def squash(text: str) -> str:
    return " ".join(text.split())


class Features:
    """Per participant, every value the role read about them, by feature name. A value is
    about a participant when the object or row it sits in names them: their id, screening or
    randomization number, an audit event's subject, one of their kits, visits, slots or any
    audited record whose history names them."""

    def __init__(self, world: World, visible: set[int]):
        self.world = world
        self.values: dict[str, dict[int, list]] = collections.defaultdict(lambda: collections.defaultdict(list))
        participants = [p for p in world.participants if p.pk in visible]
        self.pks = {p.pk for p in participants}
        self.labels = {}
        for p in participants:
            self.labels[p.screening_number] = p.pk
            self.labels[p.randomization_number] = p.pk
        self.label_pattern = re.compile(
            r"(?<![\w-])(" + "|".join(map(re.escape, sorted(self.labels, key=len, reverse=True))) + r")(?![\w-])"
        )
        self.visit_owner = dict(Visit.objects.filter(participant__in=self.pks).values_list("pk", "participant_id"))
        self.kit_owner = dict(Kit.objects.filter(participant__in=self.pks).values_list("kit_number", "participant_id"))
        # (table, record id) -> participant, learnt from the audit trail itself (`link_records`).
        self.record_owner: dict[tuple[str, str], int] = {}

    def add(self, pk, name, value):
        if pk in self.pks:
            self.values[name][pk].append(squash(str(value)))
            moment = ISO_MOMENT.match(str(value))
            if moment:
                self.values[name + " (day)"][pk].append(moment.group(1))

    def owner_by_label(self, text: str):
        found = {self.labels[label] for label in self.label_pattern.findall(text)}
        return found.pop() if len(found) == 1 else None

    # JSON ----------------------------------------------------------------------------------
    def owner_of(self, obj: dict, source: str):
        participant = obj.get("participant")
        if isinstance(participant, int) and participant in self.pks:
            return participant
        if isinstance(participant, str) and participant in self.labels:
            return self.labels[participant]
        for key in ("randomization_number", "screening_number"):
            if obj.get(key) in self.labels:
                return self.labels[obj[key]]
        if source.startswith(("/api/v1/participants/", "/api/v1/screenings/")) and obj.get("id") in self.pks:
            return obj["id"]
        if obj.get("kit_number") in self.kit_owner:
            return self.kit_owner[obj["kit_number"]]
        return None

    def walk(self, source: str, obj, path: str = "", owner=None, tag: str = ""):
        if isinstance(obj, list):
            for item in obj:
                self.walk(source, item, path, owner, tag)
            return
        if not isinstance(obj, dict):
            return
        if "table_name" in obj and "new_values" in obj:
            self.audit_event(source, obj)
            return
        owner = self.owner_of(obj, source) or owner
        for key in ("code", "visit"):
            if isinstance(obj.get(key), str) and VISIT_CODE.match(obj[key]):
                tag = obj[key]
        for key, value in obj.items():
            if isinstance(value, (dict, list)):
                self.walk(source, value, f"{path}.{key}", owner, tag)
            elif owner is not None:
                self.add(owner, f"{source} {path}.{key} {tag}".rstrip(), value)

    def link_records(self, events: list[dict]):
        """An audit event names its subject; every other event of the same record (a kit's
        shipping before it was assigned, a slot's creation before it was used) is the same
        participant's too, as any reader can work out."""
        for event in events:
            if event.get("subject_id") in self.pks:
                self.record_owner[(event["table_name"], str(event["record_pk"]))] = event["subject_id"]

    def audit_event(self, source: str, event: dict):
        owner = self.record_owner.get((event["table_name"], str(event["record_pk"])))
        if event.get("subject_id") in self.pks:
            owner = event["subject_id"]
        if owner is None:
            return
        name = f"{source} {event['table_name']} {event['action']}"
        for side in ("old_values", "new_values"):
            for column, value in (event.get(side) or {}).items():
                self.add(owner, f"{name} {side}.{column}", value)
        for key in ("occurred_at", "actor", "reason", "database_user", "record_pk", "site_id"):
            self.add(owner, f"{name} {key}", event.get(key))
        self.add(owner, f"{name} changed_fields", ",".join(event.get("changed_fields") or []))

    # Pages, files, e-mails ----------------------------------------------------------------
    def page(self, read: Read):
        parser = Tables()
        parser.feed(read.body)
        path = urlparse(read.url).path
        page_owner = None
        if re.match(r"^/(participants|screening)/(\d+)/", path):
            page_owner = int(re.match(r"^/\w+/(\d+)/", path).group(1))
        elif VISIT_PAGE.match(path):
            page_owner = self.visit_owner.get(int(VISIT_PAGE.match(path).group(1)))
        for number, table in enumerate(parser.tables):
            header = [squash(text) for tag, text in table[0]] if table and table[0][0][0] == "th" else []
            for row in table:
                cells = [squash(text) for _tag, text in row]
                if not cells or (row[0][0] == "th" and row is table[0]):
                    continue
                owner = self.owner_by_label(" ".join(cells))
                if read.source == "/audit/" and len(cells) > 2:
                    what = AUDIT_WHAT.search(cells[2])
                    owner = self.record_owner.get((what.group(1), what.group(2))) if what else None
                tag = ""
                if owner is None:
                    owner, tag = page_owner, cells[0]
                if owner is None:
                    continue
                if read.source == "/audit/" and what:
                    tag = what.group(1)
                for index, cell in enumerate(cells):
                    column = header[index] if index < len(header) else str(index)
                    self.add(owner, f"page {read.source} table{number} {column} {tag}", self.unlabel(cell))
        if page_owner is not None:
            for term, value in parser.pairs:
                self.add(page_owner, f"page {read.source} {term}", self.unlabel(value))

    def unlabel(self, text: str) -> str:
        return self.label_pattern.sub("<participant>", text)

    def rows(self, source: str, rows: list[list]):
        """A listing: a header row, then one row per participant (and visit)."""
        rows = [[squash("" if cell is None else str(cell)) for cell in row] for row in rows if row]
        if not rows:
            return
        header = rows[0]
        for row in rows[1:]:
            owner = self.owner_by_label(" ".join(row))
            if owner is None:
                continue
            tag = next((cell for cell in row if VISIT_CODE.match(cell)), "")
            for index, cell in enumerate(row):
                column = header[index] if index < len(header) else str(index)
                self.add(owner, f"{source} {column} {tag}".rstrip(), self.unlabel(cell))

    def odm(self, source: str, body: bytes):
        root = ElementTree.fromstring(body)
        for subject in root.iter("{http://www.cdisc.org/ns/odm/v1.3}SubjectData"):
            owner = self.labels.get(subject.get("SubjectKey"))
            if owner is None:
                continue
            for event in subject.iter("{http://www.cdisc.org/ns/odm/v1.3}StudyEventData"):
                where = f"{event.get('StudyEventOID')}.{event.get('StudyEventRepeatKey') or ''}"
                for item in event.iter("{http://www.cdisc.org/ns/odm/v1.3}ItemData"):
                    self.add(owner, f"{source} {where} {item.get('ItemOID')}", item.get("Value"))
            for item in subject.findall("{http://www.cdisc.org/ns/odm/v1.3}ItemData"):
                self.add(owner, f"{source} {item.get('ItemOID')}", item.get("Value"))

    def text(self, read: Read):
        owner = self.owner_by_label(read.body)
        if owner is not None:
            name = re.sub(r"\d", "#", self.unlabel(read.url))
            self.add(owner, f"{read.source} {name}", self.unlabel(read.body))

    def read(self, reads: list[Read]):
        for read in reads:
            if read.kind == "json" and read.source.startswith("/api/v1/audit-events/"):
                self.link_records(read.body)
        for read in reads:
            if read.kind == "html" and read.source == "/audit/":
                continue
            if read.kind == "html":
                self.page(read)
            elif read.kind == "json":
                # A detail path answers with its list's serializer: one feature for both.
                self.walk(read.source.replace("{id}/", ""), read.body)
            elif read.kind == "csv":
                text = read.body.decode("utf-8-sig")
                self.rows(read.source, list(csv.reader(line for line in text.splitlines() if not line.startswith("#"))))
            elif read.kind == "xlsx":
                book = openpyxl.load_workbook(io.BytesIO(read.body), read_only=True)
                for sheet in book.worksheets:
                    self.rows(f"{read.source} {sheet.title}", [list(row) for row in sheet.iter_rows(values_only=True)])
            elif read.kind == "odm":
                self.odm(read.source, read.body)
            elif read.kind == "text":
                self.text(read)
        # The audit page after every record of the trail is linked to its participant.
        for read in reads:
            if read.kind == "html" and read.source == "/audit/":
                self.page(read)


def derived_features(features: Features, reads: list[Read], world: World, user):
    """What an insider computes from what they read, beyond single values: the order of kit
    numbers over time at a site, the receipt each kit came in (the pharmacist's notes), the "no
    kit" the coordinator read at a visit, the packaging lots a participant was given."""
    # (kit type, visit date, visit id, kit number, participant, visit code, packaging lot)
    given = []
    for read in reads:
        if read.source != "/api/v1/visits/":
            continue
        for visit in read.body:
            if visit["participant"] not in features.pks:
                continue
            for kit in visit["kits"]:
                given.append(
                    (
                        kit["kit_type"],
                        visit["actual_date"],
                        visit["id"],
                        kit["kit_number"],
                        visit["participant"],
                        visit["code"],
                        kit["packaging_lot"],
                    )
                )
    site_of = {p.pk: p.site_id for p in world.participants}
    # Safe: every packaging lot holds every content alike, and is given out alike.
    lots = collections.defaultdict(set)
    for _kit_type, _day, _visit, _number, pk, _code, packaging_lot in given:
        lots[pk].add(packaging_lot)
    for pk, found in lots.items():
        features.add(pk, "derived: packaging lots given", ",".join(sorted(found)))
    by_line = collections.defaultdict(list)
    for entry in given:
        by_line[(site_of[entry[4]], entry[0])].append(entry)
    # Safe: the kit is drawn at random among the fit ones, and along the numbers the contents
    # are in small balanced random blocks, so neither a number's rank nor its place in time
    # belongs to one content.
    for (_site, kit_type), entries in by_line.items():
        entries.sort(key=lambda entry: (entry[1], entry[2]))
        numbers = sorted(int(entry[3]) for entry in entries)
        chains: list[int] = []
        previous = None
        for _kit_type, _day, _visit, number, pk, code, _lot in entries:
            number = int(number)
            # Quartile of the number among the site's kits of this type.
            quartile = 4 * numbers.index(number) // len(numbers)
            features.add(pk, f"derived: {kit_type} {code} kit number quartile at the site", quartile)
            # Lower than the kit given just before at the site? (The landed code's kits rose
            # within each content, so a drop named the other content.)
            features.add(
                pk, f"derived: {kit_type} {code} below the previous kit", previous is not None and number < previous
            )
            previous = number
            # Patience sorting into rising runs: with lowest-first choice the runs are the contents.
            chain = next((index for index, last in enumerate(chains) if last < number), len(chains))
            if chain == len(chains):
                chains.append(number)
            chains[chain] = number
            features.add(pk, f"derived: {kit_type} {code} rising run", min(chain, 2))
    # The attack on kit numbers: with the lowest number handed out, a kit given soon
    # after another with a lower number must be the other content. Join every such pair given
    # within two days of each other and colour the graph in two (component, colour): with
    # lowest-first choice the colours are the contents. Safe: with a random choice the pairs
    # join kits of either content alike.
    for entries in by_line.values():
        neighbours = collections.defaultdict(set)
        for first, second in itertools.combinations(entries, 2):
            days = abs(datetime.date.fromisoformat(second[1]) - datetime.date.fromisoformat(first[1])).days
            if days <= 2 and int(second[3]) < int(first[3]):
                neighbours[first[3]].add(second[3])
                neighbours[second[3]].add(first[3])
        colour: dict[str, tuple[str, int]] = {}
        for start in (entry[3] for entry in entries):
            if start in colour:
                continue
            colour[start] = (start, 0)
            queue = [start]
            while queue:
                number = queue.pop()
                for other in neighbours[number]:
                    if other not in colour:
                        colour[other] = (start, 1 - colour[number][1])
                        queue.append(other)
        for kit_type, _day, _visit, number, pk, code, _lot in entries:
            features.add(pk, f"derived: {kit_type} {code} two-colouring of later, lower numbers", colour[number])
    # "The near-expiry lot goes first": a kit with a later label expiry than one of its type
    # given at the site that day or later came from a content whose near-expiry kits had gone.
    # Safe only while every content at the site can be given the same lots (`choice_pools`).
    expiry_of = {}
    for read in reads:
        if read.source == "/api/v1/visits/":
            for visit in read.body:
                for kit in visit["kits"]:
                    expiry_of[kit["kit_number"]] = kit["label_expiry"]
    for entries in by_line.values():
        for kit_type, day, _visit, number, pk, code, _lot in entries:
            later = [expiry_of[other[3]] for other in entries if other[1] >= day and other[3] != number]
            passed_over = any(expiry < expiry_of[number] for expiry in later)
            features.add(pk, f"derived: {kit_type} {code} passed over a nearer expiry", passed_over)
    if user.pk in {world.staff["nt_coordinator"].pk, world.staff["sh_coordinator"].pk}:
        # The coordinator read "no kit" at some visits: every visit from that day on, apart.
        # Safe: a site short of one content refuses everyone needing that type.
        first_no_kit = {}
        for (pk, code), no_kit in world.no_kit_seen.items():
            features.add(pk, f"derived: {code} no kit at the visit", no_kit)
            if no_kit and pk in features.pks:
                day = Visit.objects.get(participant_id=pk, code=code).actual_date.isoformat()
                first_no_kit[site_of[pk]] = min(first_no_kit.get(site_of[pk], day), day)
        for _kit_type, day, _visit, _number, pk, code, _lot in given:
            if site_of[pk] in first_no_kit:
                features.add(pk, f"derived: {code} after the site's first no-kit", day >= first_no_kit[site_of[pk]])
    if user.pk in {world.staff["nt_pharmacist"].pk, world.staff["sh_pharmacist"].pk}:
        # The pharmacist's notes of which receipt each kit came in. Safe: shipments are mixed.
        receipts = {
            number: batch for site_receipts in world.receipts.values() for number, batch in site_receipts.items()
        }
        pairs = collections.defaultdict(dict)
        for kit_type, _day, _visit, number, pk, code, _lot in given:
            batch = receipts.get(number)
            features.add(pk, f"derived: {kit_type} {code} receipt", batch)
            pairs[(pk, code)][kit_type] = batch
        for (pk, code), batches in pairs.items():
            features.add(pk, f"derived: {code} (infusion, tablet) receipts", (batches.get("INF"), batches.get("TAB")))


# --- Does anything separate the arms? -----------------------------------------------------------

PERMUTATIONS = 200


@dataclasses.dataclass
class Grouping:
    names: list  # the features (or pairs) that group participants this way
    groups: list  # bitmasks of the groups of two or more
    size: int  # participants in those groups


def canonical(labels: list) -> tuple:
    first = {}
    return tuple(first.setdefault(label, len(first)) for label in labels)


def groupings(features: Features, order: list[int], pairs: bool = True) -> list[Grouping]:
    """The distinct ways the features (and pairs of them) group participants, skipping those
    that put nobody together (values unique to each participant: ids, numbers, times) or
    everybody together."""
    singles: dict[tuple, list] = {}
    for name, by_pk in features.values.items():
        labels = canonical([tuple(sorted(set(by_pk.get(pk, ())))) for pk in order])
        if 1 < len(set(labels)) < len(labels):
            singles.setdefault(labels, []).append(name)
    found: dict[tuple, list] = dict(singles)
    if pairs:
        keys = list(singles)
        for a, b in itertools.combinations(keys, 2):
            labels = canonical(list(zip(a, b, strict=True)))
            if len(set(labels)) < len(labels) and labels not in found:
                found[labels] = [("pair", singles[a][0], singles[b][0])]
    result = []
    for labels, names in found.items():
        members = collections.defaultdict(int)
        counts = collections.Counter(labels)
        for index, label in enumerate(labels):
            if counts[label] > 1:
                members[label] |= 1 << index
        result.append(Grouping(names, list(members.values()), sum(c for c in counts.values() if c > 1)))
    return result


def class_masks(classes: list) -> list[int]:
    masks = collections.defaultdict(int)
    for index, value in enumerate(classes):
        masks[value] |= 1 << index
    return list(masks.values())


def accuracy(grouping: Grouping, masks: list[int]) -> float:
    """Participants guessed right by calling every group for its most frequent class."""
    return sum(max((group & mask).bit_count() for mask in masks) for group in grouping.groups) / grouping.size


def g_statistic(grouping: Grouping, masks: list[int]) -> float:
    """The likelihood-ratio statistic of groups against classes (2 N times their mutual
    information), which also sees a few pure groups beside large mixed ones where accuracy
    dilutes them; as its cube root, whose spread under relabelling is near normal (G itself is
    skewed, and its largest standardized values would set the bar out of reach)."""
    table = [[(group & mask).bit_count() for mask in masks] for group in grouping.groups]
    totals = [sum(column) for column in zip(*table, strict=True)]
    total = sum(totals)
    g = 0.0
    for row in table:
        size = sum(row)
        for count, column in zip(row, totals, strict=True):
            if count:
                g += count * math.log(count * total / (size * column))
    return max(2 * g, 0.0) ** (1 / 3)


STATISTICS = {"accuracy": accuracy, "G": g_statistic}


@dataclasses.dataclass
class Finding:
    names: list
    statistic: str
    observed: float
    p99: float
    z: float


def tables(grouping: Grouping, labellings: numpy.ndarray, classes: int) -> numpy.ndarray:
    """The contingency table of the grouping's groups against the classes, under each labelling
    (a row of class indices per labelling): counts[labelling, group, class]."""
    group_of = numpy.full(labellings.shape[1], -1)
    for number, members in enumerate(grouping.groups):
        group_of[[index for index in range(labellings.shape[1]) if members >> index & 1]] = number
    grouped = numpy.flatnonzero(group_of >= 0)
    cells = len(grouping.groups) * classes
    flat = group_of[grouped] * classes + labellings[:, grouped] + numpy.arange(len(labellings))[:, None] * cells
    return numpy.bincount(flat.ravel(), minlength=len(labellings) * cells).reshape(
        len(labellings), len(grouping.groups), classes
    )


def accuracies(counts: numpy.ndarray, size: int) -> numpy.ndarray:
    """`accuracy` of every labelling at once."""
    return counts.max(axis=2).sum(axis=1) / size


def g_statistics(counts: numpy.ndarray, size: int) -> numpy.ndarray:
    """`g_statistic` of every labelling at once."""
    expected = counts.sum(axis=2, keepdims=True) * counts.sum(axis=1, keepdims=True) / size
    with numpy.errstate(divide="ignore", invalid="ignore"):
        terms = numpy.where(counts > 0, counts * numpy.log(counts / expected), 0.0)
    return numpy.maximum(2 * terms.sum(axis=(1, 2)), 0.0) ** (1 / 3)


ARRAY_STATISTICS = {"accuracy": accuracies, "G": g_statistics}


def permutation_test(found: list[Grouping], classes: list, seed: int) -> tuple[list[Finding], dict[str, float]]:
    """Each grouping's accuracy (and G) at predicting `classes`, against the same grouping under
    200 random relabellings (fixed seed). Returns each grouping's finding and, per statistic,
    the family-wise threshold of the largest standardized value over all groupings in each
    relabelling: with hundreds of groupings tried, some pass their own 99th percentile by
    chance every time, so a grouping fails only when it beats what the best of all groupings
    reaches by chance (`family_wise_threshold`). The statistics are those of `accuracy` and
    `g_statistic`, computed for all relabellings at once."""
    rng = random.Random(seed)
    index_of = {value: index for index, value in enumerate(dict.fromkeys(classes))}
    relabelled = []
    for _ in range(PERMUTATIONS):
        shuffled = list(classes)
        rng.shuffle(shuffled)
        relabelled.append([index_of[value] for value in shuffled])
    labellings = numpy.array([[index_of[value] for value in classes], *relabelled])
    findings = []
    maxima = {name: numpy.full(PERMUTATIONS, -math.inf) for name in STATISTICS}
    for grouping in found:
        counts = tables(grouping, labellings, len(index_of))
        for name, statistic in ARRAY_STATISTICS.items():
            values = statistic(counts, grouping.size)
            observed, chance = float(values[0]), values[1:]
            mean = chance.mean()
            sd = math.sqrt(((chance - mean) ** 2).mean())
            if sd < 1e-12:
                z = 0.0 if observed <= mean + 1e-12 else math.inf
            else:
                z = (observed - mean) / sd
                maxima[name] = numpy.maximum(maxima[name], (chance - mean) / sd)
            findings.append(
                Finding(grouping.names, name, observed, float(numpy.sort(chance)[int(0.99 * PERMUTATIONS) - 1]), z)
            )
    thresholds = {name: family_wise_threshold([float(value) for value in values]) for name, values in maxima.items()}
    return findings, thresholds


# Chance of a false alarm per run of the whole test. It is one test of every (site, target,
# statistic) family: 2 sites x 3 targets x 2 statistics, each at ALARM_RATE / 12. With each at
# 0.5% (the 99.5th percentile of 200 relabellings), about one run in sixteen failed on a
# grouping of random kit numbers that chance had lined up (z 4.54 against 4.40).
ALARM_RATE = 0.002
TARGETS = ("arm", "INF", "TAB")


def family_wise_threshold(maxima: list[float]) -> float:
    """The z that the best grouping of a relabelling exceeds with probability ALARM_RATE /
    FAMILIES: the largest of many z values is Gumbel-distributed, fitted to the relabellings'
    maxima by their mean and spread, since 200 relabellings cannot show a 1-in-6,000 quantile
    directly. Never below the largest maximum seen."""
    finite = [value for value in maxima if math.isfinite(value)]
    mean = sum(finite) / len(finite)
    sd = math.sqrt(sum((value - mean) ** 2 for value in finite) / len(finite))
    scale = sd * math.sqrt(6) / math.pi
    location = mean - 0.5772156649 * scale
    families = len(BLINDED_ROLES) * len(TARGETS) * len(STATISTICS)
    quantile = location - scale * math.log(-math.log(1 - ALARM_RATE / families))
    return max(quantile, max(finite))


BLINDED_ROLES = {
    "NT": ["nt_coordinator", "nt_pharmacist", "nt_investigator", "nt_monitor"],
    "SH": ["sh_coordinator", "sh_pharmacist", "sh_investigator", "sh_monitor"],
}


def text_of(read: Read) -> str:
    if read.kind == "json":
        return json.dumps(read.body)
    if read.kind == "xlsx":
        book = openpyxl.load_workbook(io.BytesIO(read.body), read_only=True)
        return "\n".join(
            " ".join("" if cell is None else str(cell) for cell in row)
            for sheet in book.worksheets
            for row in sheet.iter_rows(values_only=True)
        )
    if read.kind == "pdf":
        return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(read.body)).pages)
    return read.body.decode("utf-8") if isinstance(read.body, bytes) else read.body


def words_that_name_an_arm(world: World, user, reads: list[Read]) -> list[tuple[str, list]]:
    """Arm and content words anywhere; the PI who broke the blind may read the arm on that
    participant's own pages."""
    allowed = set()
    if user == world.unblinded_by:
        allowed = {f"/participants/{world.unblinded.pk}/", f"/participants/{world.unblinded.pk}/unblind/"}
    return [
        (read.url, found)
        for read in reads
        if read.url not in allowed
        for found in [LEAK.findall(text_of(read))]
        if found
    ]


def test_nothing_a_blinded_role_reads_separates_participants_by_arm(trial, site, other_site, cast):
    clock = time.perf_counter
    started = clock()
    with time_machine.travel(START, tick=False) as traveller:
        world = play_trial(trial, site, other_site, cast, traveller)
        print("built in", clock() - started)
        leaks = []
        per_site = {}
        for code, names in BLINDED_ROLES.items():
            # The participant whose blind was broken is left out of every grouping: their arm is
            # known to the PI (rightly), so only the others' must stay unguessable.
            order = [p.pk for p in world.participants if p.site_id == world.sites[code].pk and p != world.unblinded]
            # The four roles of a site pooled: any grouping one of them, or two together, can make.
            merged = Features(world, set(order))
            for name in names:
                user = world.staff[name]
                started = clock()
                reads = read_everything(world, user)
                leaks += [(name, *leak) for leak in words_that_name_an_arm(world, user, reads)]
                features = Features(world, set(order))
                features.read(reads)
                derived_features(features, reads, world, user)
                for feature, by_pk in features.values.items():
                    merged.values[f"{name}: {feature}"] = by_pk
                print(name, len(reads), "reads,", len(features.values), "features in", clock() - started)
            per_site[code] = (order, merged)
    assert leaks == []
    # The packaging lot and label expiry every blinded role reads on each kit given must not
    # depend on its content at the moment it is given.
    failures = list(world.told_by_label)
    for code, (order, merged) in per_site.items():
        started = clock()
        found = groupings(merged, order)
        print(code, len(merged.values), "features,", len(found), "groupings in", clock() - started)
        for target in TARGETS:
            classes = [world.arm[pk] if target == "arm" else world.contents(pk)[target] for pk in order]
            started = clock()
            findings, thresholds = permutation_test(found, classes, seed=13)
            print(code, target, "tested in", clock() - started, "family-wise z thresholds", thresholds)
            for name in STATISTICS:
                ranked = sorted((f for f in findings if f.statistic == name), key=lambda finding: -finding.z)
                for finding in ranked[:5]:
                    print(
                        "   ",
                        name,
                        round(finding.observed, 3),
                        "p99",
                        round(finding.p99, 3),
                        "z",
                        round(finding.z, 2),
                        finding.names[:2],
                    )
            failures += [
                f"{code}: grouping by {finding.names[0]} predicts {target} ({finding.statistic} {finding.observed:.3f}, "
                f"z {finding.z:.2f} above the family-wise {thresholds[finding.statistic]:.2f}; "
                f"99th percentile of its own relabellings {finding.p99:.3f})"
                for finding in findings
                if finding.z > thresholds[finding.statistic]
            ]
    assert failures == [], "\n".join(failures)


# --- The attacks of issue 13, one by one ----------------------------------------------------------


def small_trial(trial, sites, cast, *, kits_per_type: int = 48):
    """A locked randomization list and one generated packaging lot, with every role the
    small tests need at each site."""
    from trialsite.audit import audit_context

    with audit_context(reason="test cast: second site"):
        for one in sites[1:]:
            cast.statistician.trial_roles.create(site=one, role=Role.STATISTICIAN)
            cast.supply_manager.trial_roles.create(site=one, role=Role.SUPPLY_MANAGER)
            for role in (Role.PHARMACIST, Role.INVESTIGATOR):
                factories.make_user(role, one, username=f"{one.code.lower()}_{role}")
    randomization_list = randomization.list_generate(
        trial=trial, seed="insider-attacks", slots_per_stratum=40, created_by=cast.statistician
    )
    randomization.list_lock(
        randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD
    )
    expiry = datetime.date(2027, 12, 31)
    dosing.kit_list_generate(
        trial=trial,
        packaging_lot="PL-ATTACK",
        kits_per_type=kits_per_type,
        lots={
            (kit_type, content): (f"{kit_type}-{content}", expiry)
            for kit_type in ("INF", "TAB")
            for content in ("active", "placebo")
        },
        created_by=cast.supply_manager,
        seed="insider-attacks-kits",
    )


def randomize(site, coordinator, count: int) -> list[Participant]:
    return [
        randomization.participant_randomize(
            participant=factories.make_participant(site, by=coordinator, screening_date=datetime.date(2026, 11, 30)),
            randomized_by=coordinator,
        )
        for _ in range(count)
    ]


def arm_of(participant) -> str:
    return Slot.objects.get(participant=participant).arm.code


def grouping_of(labels: dict, order: list[int]) -> list[Grouping]:
    """One grouping of participants by the label the insider put on each."""
    values = collections.defaultdict(dict)
    values["insider"] = {pk: [str(labels.get(pk))] for pk in order}
    holder = dataclasses.make_dataclass("Read", ["values"])(values)
    return groupings(holder, order, pairs=False)


def no_better_than_every_relabelling(labels: dict, order: list[int], classes: list) -> bool:
    """Does grouping by `labels` predict `classes` no better than at least one of 200 random
    relabellings does? (A grouping that names the arms beats them all.)"""
    found = grouping_of(labels, order)
    if not found:
        return True
    rng = random.Random(13)
    chance = []
    for _ in range(PERMUTATIONS):
        shuffled = list(classes)
        rng.shuffle(shuffled)
        chance.append(accuracy(found[0], class_masks(shuffled)))
    return accuracy(found[0], class_masks(classes)) <= max(chance)


def test_attack_1_shipments_do_not_pair_participants_by_arm(trial, site, cast, client_for, api_for):
    """The landed code shipped one content per shipment and showed each kit's shipment in the
    audit trail: grouping participants by (infusion shipment, tablet shipment) named the arms."""
    with time_machine.travel(START, tick=False):
        small_trial(trial, [site], cast)
        shipments = [
            dosing.shipment_create(site=site, per_content={"INF": 5, "TAB": 5}, shipped_by=cast.supply_manager)
            for _ in range(3)
        ]
        for shipment in shipments:
            dosing.shipment_receive(shipment=shipment, received_by=cast.pharmacist)
        participants = randomize(site, cast.coordinator, 20)
        for participant in participants:
            dosing.visit_record(
                visit=participant.visits.get(code="C1"),
                actual_date=START.date(),
                recorded_by=cast.coordinator,
                weight_kg=Decimal("60.0"),
                **NORMAL_LABS,
            )
        # Every shipment holds each content of each type alike, so knowing a kit's shipment
        # tells nothing about its content.
        for shipment in shipments:
            counts = collections.Counter(shipment.kits.values_list("kit_type", "content"))
            assert counts[("INF", "active")] == counts[("INF", "placebo")] == 5, counts
            assert counts[("TAB", "active")] == counts[("TAB", "placebo")] == 5, counts
        # And no blinded reader of the trail sees which shipment a kit came in.
        for reader in (cast.monitor, cast.investigator):
            events = api_pages(api_for(reader), "/api/v1/audit-events/?table=dosing_kit")
            shown = {
                (event["record_pk"], values["shipment_id"])
                for event in events
                for values in (event["old_values"] or {}, event["new_values"] or {})
                if values.get("shipment_id") not in (None, selectors.BLINDED_VALUE)
            }
            assert shown == set(), f"{reader} reads the shipment of {len(shown)} kits"
            page = client_for(reader).get("/audit/?table=dosing_kit").content.decode()
            assert not re.search(r"<code>shipment_id</code>:\s*(<span[^>]*>[^<]*</span>\s*→\s*)?\d", page)
        # Even with the shipments known (the supply manager's view), the pairs say nothing.
        order = [p.pk for p in participants]
        pairs = {p.pk: tuple(p.kits.order_by("kit_type").values_list("kit_type", "shipment_id")) for p in participants}
        assert no_better_than_every_relabelling(pairs, order, [arm_of(p) for p in participants])


def test_attack_2_receiving_shipments_one_at_a_time_says_nothing(trial, site, cast):
    """The pharmacist watched /api/v1/kits/ while receiving shipments one at a time: each
    receipt turned one content's kits from shipped to at site."""
    with time_machine.travel(START, tick=False):
        small_trial(trial, [site], cast)
        world = World(trial=trial, sites={"NT": site}, staff={}, participants=[], arm={})
        pharmacist = Pharmacist(world, site, cast.pharmacist)
        for count in (6, 4, 4):
            dosing.shipment_create(site=site, per_content={"INF": count, "TAB": count}, shipped_by=cast.supply_manager)
        queue = api_pages(logged_in(cast.pharmacist, api=True), "/api/v1/pharmacy/queue/")[0]
        # What the receipt screen tells apart: only how many kits each shipment holds.
        assert sorted(shipment["kit_count"] for shipment in queue["shipments"]) == [16, 16, 24]
        pharmacist.receive_waiting(START + TRANSIT)
        batches = world.receipts["NT"]
        assert sorted(collections.Counter(batches.values()).values()) == [16, 16, 24]
        content = dict(Kit.objects.values_list("kit_number", "content"))
        kit_type = dict(Kit.objects.values_list("kit_number", "kit_type"))
        per_batch = collections.Counter((batch, kit_type[number], content[number]) for number, batch in batches.items())
        for batch in set(batches.values()):
            for one_type in ("INF", "TAB"):
                assert per_batch[(batch, one_type, "active")] == per_batch[(batch, one_type, "placebo")] > 0
        # Every attribute the kit list shows the pharmacist groups the kits with both contents alike.
        kits = api_pages(logged_in(cast.pharmacist, api=True), "/api/v1/kits/")
        assert {key for kit in kits for key in kit} == {
            "id",
            "kit_number",
            "kit_type",
            "status",
            "packaging_lot",
            "label_expiry",
        }
        groups = collections.Counter(
            (kit["kit_type"], kit["status"], kit["packaging_lot"], kit["label_expiry"], content[kit["kit_number"]])
            for kit in kits
        )
        for one_type, status, lot, label_expiry, _content in groups:
            assert (
                groups[(one_type, status, lot, label_expiry, "active")]
                == groups[(one_type, status, lot, label_expiry, "placebo")]
            )
        # The participants' kits, grouped by the receipt they came in: no better than chance.
        participants = randomize(site, cast.coordinator, 20)
        for participant in participants:
            dosing.visit_record(
                visit=participant.visits.get(code="C1"),
                actual_date=START.date(),
                recorded_by=cast.coordinator,
                weight_kg=Decimal("60.0"),
                **NORMAL_LABS,
            )
        order = [p.pk for p in participants]
        pairs = {
            p.pk: tuple(batches[number] for number in p.kits.order_by("kit_type").values_list("kit_number", flat=True))
            for p in participants
        }
        assert no_better_than_every_relabelling(pairs, order, [arm_of(p) for p in participants])


SLOT_SECRETS = ("arm_id", "block", "block_size", "sequence", "randomization_list_id")


def test_attack_4_the_block_structure_of_the_list_is_not_readable(trial, site, cast, api_for, client_for):
    """Slot audit rows showed block, block size and sequence of every slot, used or not, to the
    monitor and the PI: with the arms of a few known, the next allocation was guessed."""
    with time_machine.travel(START, tick=False):
        small_trial(trial, [site], cast)
        randomize(site, cast.coordinator, 6)
        for reader in (cast.monitor, cast.investigator):
            events = api_pages(api_for(reader), "/api/v1/audit-events/?table=randomization_slot")
            assert len(events) >= 40  # the whole list's slots are in the trail
            shown = [
                (event["record_pk"], column, values[column])
                for event in events
                for values in (event["old_values"] or {}, event["new_values"] or {})
                for column in SLOT_SECRETS
                if column in values and values[column] != selectors.BLINDED_VALUE
            ]
            assert shown == [], shown[:5]
            # The page shows the same rows: "old → new" of a column, each value blinded.
            client, url, shown_on_pages = client_for(reader), "/audit/?table=randomization_slot", []
            while url:
                text = client.get(url).content.decode()
                for column, value in re.findall(r"<code>(\w+)</code>:(.*?)</div>", text, re.S):
                    values = [part.strip() for part in re.sub(r"<[^>]+>", "", value).split("→")]
                    if column in SLOT_SECRETS and any(part not in ("", selectors.BLINDED_VALUE) for part in values):
                        shown_on_pages.append((column, values))
                following = re.search(r'href="(\?[^"]*page=\d+)">Next', text)
                url = f"/audit/{following.group(1).replace('&amp;', '&')}" if following else None
            assert shown_on_pages == [], shown_on_pages[:5]


def spearman_z(values: list[float]) -> float:
    """Rank correlation of the values with their order, as a z score (sqrt(n-1) * rho)."""
    n = len(values)
    ranks = {value: rank for rank, value in enumerate(sorted(values))}
    d2 = sum((index - ranks[value]) ** 2 for index, value in enumerate(values))
    rho = 1 - 6 * d2 / (n * (n * n - 1))
    return rho * math.sqrt(n - 1)


def test_attack_5_kit_numbers_do_not_rise_within_a_content(trial, site, cast):
    """The lowest-numbered fit kit was handed out, so within a content the numbers rose over
    time and a later, lower number named the other content. And the import accepted numbers
    running in order by content without a word."""
    from dosing import kitlist

    with time_machine.travel(START, tick=False) as traveller:
        small_trial(trial, [site], cast, kits_per_type=80)
        dosing.shipment_create(site=site, per_content={"INF": 30, "TAB": 30}, shipped_by=cast.supply_manager)
        traveller.shift(DAY)
        for shipment in Shipment.objects.filter(site=site):
            dosing.shipment_receive(shipment=shipment, received_by=cast.pharmacist)
        for _day in range(6):
            for participant in randomize(site, cast.coordinator, 5):
                dosing.visit_record(
                    visit=participant.visits.get(code="C1"),
                    actual_date=timezone_today(site),
                    recorded_by=cast.coordinator,
                    weight_kg=Decimal("60.0"),
                    **NORMAL_LABS,
                )
            traveller.shift(DAY)
        given = Kit.objects.filter(site=site, participant__isnull=False).order_by("assigned_at", "visit_id")
        for kit_type in ("INF", "TAB"):
            numbers = {}
            for content in ("active", "placebo"):
                numbers[content] = [
                    int(n)
                    for n in given.filter(kit_type=kit_type, content=content).values_list("kit_number", flat=True)
                ]
                sequence = numbers[content]
                assert len(sequence) >= 8
                assert sequence != sorted(sequence), f"{kit_type} {content} kit numbers rise with time: {sequence}"
                assert abs(spearman_z(sequence)) < kitlist.REFUSE_Z, (kit_type, content, spearman_z(sequence))
            by_number = [content for _number, content in sorted((n, c) for c, ns in numbers.items() for n in ns)]
            assert abs(kitlist.rank_sum_z(by_number)) < kitlist.REFUSE_Z, (kit_type, kitlist.rank_sum_z(by_number))
        ordered = "kit_number,kit_type,content,lot,expiry,packaging_lot\n" + "".join(
            f"{1001 + i},INF,{'active' if i < 8 else 'placebo'},L{i < 8},2027-12-31,PL-IMPORT\n" for i in range(16)
        )
        with pytest.raises(KitListInvalid) as refused:
            dosing.kits_import(csv_text=ordered, imported_by=cast.supply_manager, trial=trial)
        assert "z = " in " ".join(refused.value.errors)
        assert not Kit.objects.filter(packaging_lot="PL-IMPORT").exists()


def timezone_today(site) -> datetime.date:
    from django.utils import timezone

    return timezone.localdate(timezone=site.zone)


def test_attack_5b_a_stock_out_answers_alike_whichever_content_is_short(trial, site, other_site, cast, api_for):
    """When one content ran out, only the participants needing it heard "no kit available", and
    only for the infusion: the set of participants hit split the contents."""
    with time_machine.travel(START, tick=False) as traveller:
        small_trial(trial, [site, other_site], cast)
        for one in (site, other_site):
            dosing.shipment_create(site=one, per_content={"INF": 8, "TAB": 8}, shipped_by=cast.supply_manager)
        traveller.shift(DAY)
        for shipment in Shipment.objects.select_related("site"):
            dosing.shipment_receive(shipment=shipment, received_by=pharmacist_at(shipment.site))
        # Infusion placebo runs out at NT, infusion active at SH.
        for one, content in ((site, "placebo"), (other_site, "active")):
            for kit in Kit.objects.filter(site=one, kit_type="INF", content=content):
                dosing.kit_destroy(kit=kit, destroyed_by=cast.supply_manager, reason="fridge failure overnight")
        answers = collections.defaultdict(set)
        hit = collections.defaultdict(set)
        for one, coordinator in ((site, cast.coordinator), (other_site, cast.other_coordinator)):
            participants = randomize(one, coordinator, 8)
            assert {arm_of(p) for p in participants} == set(ARMS)
            for participant in participants:
                visit = participant.visits.get(code="C1")
                answer = api_for(coordinator).post(
                    f"/api/v1/visits/{visit.pk}/record/",
                    {
                        "actual_date": timezone_today(one).isoformat(),
                        "weight_kg": "60.0",
                        **{k: str(v) for k, v in NORMAL_LABS.items()},
                    },
                    format="json",
                )
                assert answer.status_code == 200, answer.content
                body = answer.json()
                answers[one.code].add(
                    (body["no_kit"], body["message"], len(body["visit"]["kits"]), body["visit"]["status"])
                )
                hit[one.code].add(participant.pk)
                with pytest.raises(NoKitAvailable) as again:
                    dosing.kits_assign(visit=visit, assigned_by=pharmacist_at(one))
                answers[one.code].add(("service", str(again.value.message)))
        # The same answer at both sites (one short of placebo, one of active), for every arm.
        assert answers["NT"] == answers["SH"]
        assert len({answer for answer in answers["NT"] if answer[0] is True}) == 1
        # Nobody at either site got any kit, the tablets included.
        assert not Kit.objects.filter(participant__isnull=False).exists()
        queue_nt = api_pages(api_for(cast.pharmacist), "/api/v1/pharmacy/queue/")[0]
        assert len(queue_nt["awaiting_kits"]) == len(hit["NT"]) == 8


def pharmacist_at(one):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(trial_roles__site=one, trial_roles__role=Role.PHARMACIST)


def test_attack_3_the_admin_is_closed_to_blinded_staff(site, cast, client_for):
    """Admin list filters on JSON values were an oracle for a blinded user with is_staff."""
    for name in ("coordinator", "pharmacist", "investigator", "monitor"):
        user = cast[name]
        user.is_staff = True
        user.save(update_fields=["is_staff"])
        client = client_for(user)
        for url in (
            "/admin/",
            "/admin/trialsite/auditevent/?table_name=randomization_slot&new_values__arm_id__iexact=1",
            "/admin/dosing/kit/?content__exact=active",
        ):
            assert client.get(url).status_code == 404, (name, url)


def test_the_permutation_test_finds_a_planted_leak_among_chance_features():
    """The control of the threshold: among 60 random features of 24 participants, one that
    names the infusion content for all but one of them is found, and chance alone is not (with
    the 99.5th percentile of the relabellings' maxima as the threshold, it was: a pair of random
    features reached accuracy 1.0 at z 4.96)."""
    rng = random.Random(7)
    order = list(range(24))
    classes = ["active", "placebo"] * 12
    rng.shuffle(classes)
    chance = {f"random {n}": {pk: [str(rng.randrange(3))] for pk in order} for n in range(60)}
    planted = {pk: [classes[pk] if pk > 0 else ("placebo" if classes[pk] == "active" else "active")] for pk in order}

    def above(values) -> list:
        findings, thresholds = permutation_test(
            groupings(types.SimpleNamespace(values=values), order), classes, seed=13
        )
        return [finding.names for finding in findings if finding.z > thresholds[finding.statistic]]

    assert above(chance) == []
    assert ["planted"] in above({**chance, "planted": planted})
