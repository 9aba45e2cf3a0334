"""Issue 18's safety features against a motivated insider: "the blinding crawl and the insider
test cover every new page, API and export for every blinded role; only the DSMB role and
unblinded roles see AEs by arm."

The twin trial: participants randomized from a real locked list at two sites until both hold an
active arm and placebo; the site then does exactly the same for every participant, on the same
frozen clock: an adverse event with a grade change, resolved; a serious one whose SAE clock runs
(three e-mails), with a complete SAE report the PI signs; at Nantong the sponsor's safety officer
assesses it a SUSAR, breaks the blind through the emergency unblinding and records the expedited
report. Since nothing the site did differs by arm, nothing a blinded role reads about one
participant may differ from what it reads about another, once the participant's own numbers and
every digit are masked: every route of the URL conf (pages, their PDFs, the API), the exports,
the audit trail and the e-mails. Any difference is something that depends on the arm. Lists must
also not order participants by arm.

Routes are found from the URL resolver (tests/sweep.py), so a new page, API path or PDF is read
without anyone listing it here."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import io
import json
import re
from xml.etree import ElementTree

import openpyxl
import pypdf
import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from enrollment.models import Participant
from randomization import services as randomization
from randomization.models import Slot
from reports import services as report_services
from reports.models import Export
from safety import services as safety
from safety.models import SusarAssessment
from tests import factories
from tests.sweep import CRF_PARTS, fill, record_id, row_counts
from trialsite.access import Capability
from trialsite.models import Role

pytestmark = pytest.mark.django_db

# Tuesday 09:00 in Shanghai, where both sites are.
NOW = datetime.datetime(2026, 12, 15, 1, 0, tzinfo=datetime.UTC)
# The words of tests/test_blinding_leak.py, and the arm names in Chinese.
LEAK = re.compile(
    r"\b(TOC|ASA|COMBO|PBO|Tocilizumab alone|Aspirin alone|Tocilizumab \+ aspirin|Placebo|active|placebo)\b"
    r"|托珠单抗|阿司匹林|安慰剂"
)
NT_BLINDED = ["coordinator", "pharmacist", "investigator", "monitor"]
SH_BLINDED = ["other_coordinator", "other_monitor", "sh_investigator"]
SKIP = ("accounts/", "i18n/", "admin/", "api/v1/schema/", "api/v1/docs/", "trials/", "favicon.ico")
# Exports a blinded reader may ask for that carry adverse events, in every format they come in.
EXPORTS = [
    ("adverse_events", "csv"),
    ("adverse_events", "xlsx"),
    ("dataset", "odm"),
    ("dataset", "xlsx"),
    ("subjects", "csv"),
    ("report", "pdf"),
]
QUERY_LINK = re.compile(r'href="\?([^"#]+)"')
ODM = "{http://www.cdisc.org/ns/odm/v1.3}"


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def routes() -> list[str]:
    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern)

    return [route for route in walk(get_resolver().url_patterns) if route and not route.startswith(SKIP)]


def per_participant(route: str) -> bool:
    return route.removeprefix("api/v1/").startswith(
        ("participants/<int:pk>/", "screenings/<int:pk>/", "screening/<int:pk>/")
    )


def filled(route: str, pk: int) -> list[str]:
    """The route with the participant's id, every event number (1, 2) and report version (1)."""
    url = fill(route.replace("<int:version>", "1"), pk)
    if "<" in url:
        return []
    if "<int:sequence>" in route and "adverse-events" in route:
        url = "/" + re.sub(r"<int:pk>", str(pk), route.replace("<int:version>", "1"))
        for part, value in CRF_PARTS.items():
            if part != "<int:sequence>":
                url = url.replace(part, value)
        return [url.replace("<int:sequence>", str(sequence)) for sequence in (1, 2)]
    return [url]


# --- The twin trial --------------------------------------------------------------------------


@dataclasses.dataclass
class Twins:
    sites: dict
    staff: dict
    participants: dict  # site code -> participants done alike, in randomization order
    arm: dict  # participant pk -> arm code
    # Serious, related but expected: assessed, not a SUSAR, the blind not broken.
    not_susar: Participant


def randomize_until_both_contents(site, coordinator, *, at_least: int) -> list[Participant]:
    done = []
    while True:
        arms = set(Slot.objects.filter(participant__in=done).values_list("arm__code", flat=True))
        if len(done) >= at_least and "PBO" in arms and arms - {"PBO"}:
            return done
        participant = factories.make_participant(site, by=coordinator, screening_date=datetime.date(2026, 12, 1))
        done.append(randomization.participant_randomize(participant=participant, randomized_by=coordinator))


def serious_event(participant, coordinator):
    today = timezone.localdate(timezone=participant.site.zone)
    return safety.ae_record(
        participant=participant,
        recorded_by=coordinator,
        details=safety.AeDetails(
            term="sepsis",
            grade=4,
            onset_date=today - datetime.timedelta(days=2),
            serious=True,
            seriousness=("hospitalisation", "life_threatening"),
            awareness_at=timezone.now() - datetime.timedelta(hours=30),
            relation_infusion="probable",
            relation_tablets="unlikely",
            action_infusion="withdrawn",
            action_tablets="held",
        ),
    )


def site_does_the_same(participant, coordinator, investigator):
    """An event with a grade change, resolved; a serious one with its clock's e-mails and a signed report."""
    today = timezone.localdate(timezone=participant.site.zone)
    first = safety.ae_record(
        participant=participant,
        recorded_by=coordinator,
        details=safety.AeDetails(
            term="fatigue",
            grade=1,
            onset_date=today - datetime.timedelta(days=3),
            relation_infusion="possible",
            relation_tablets="possible",
            action_infusion="none",
            action_tablets="none",
        ),
    )
    safety.ae_grade_change(
        event=first,
        recorded_by=coordinator,
        details=safety.AeDetails(grade=2, onset_date=today - datetime.timedelta(days=2)),
    )
    safety.ae_resolve(event=first, recorded_by=coordinator, resolution_date=today, outcome="recovered")
    serious = serious_event(participant, coordinator)
    for notice_id in safety.due_notice_ids(now=timezone.now()):
        safety.sae_notice_send(notice_id=notice_id)
    report = safety.sae_report_write(
        event=serious, written_by=coordinator, narrative="Admitted with sepsis; IV antibiotics.", complete=True
    )
    safety.sae_report_sign(report=report, signer=investigator, password=factories.PASSWORD)
    return serious


def sponsor_handles_the_susar(event, officer, *, report: bool, capture):
    assessment = safety.sae_assess(
        event=event, assessed_by=officer, related=True, expectedness="unexpected", reference="IB v3.0 section 6.2"
    )
    with capture(execute=True):
        randomization.participant_unblind(
            participant=event.participant,
            unblinded_by=officer,
            password=factories.PASSWORD,
            reason="SUSAR: the expedited report needs the treatment",
        )
    if report:
        safety.susar_report_done(assessment=assessment, reported_by=officer, reference="CIOMS-2026-0042")
    return assessment


def build_twins(trial, site, other_site, cast, capture, *, sponsor_reports) -> Twins:
    """`sponsor_reports(arm code) -> bool`: whether the sponsor, once it knows the arm, sends the
    expedited report (on placebo a SUSAR is not expedited: what a real sponsor does)."""
    from trialsite.audit import audit_context

    staff = dict(cast)
    staff["sh_investigator"] = factories.make_user(Role.INVESTIGATOR, other_site, username="sh_investigator")
    with audit_context(reason="test cast: second site"):
        cast.statistician.trial_roles.create(site=other_site, role=Role.STATISTICIAN)
    for name, user in staff.items():
        user.email = f"{name}@hospital.example"
        user.save(update_fields=["email"])
    randomization_list = randomization.list_generate(
        trial=trial, seed="safety-twins", slots_per_stratum=40, created_by=cast.statistician
    )
    randomization.list_lock(
        randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD
    )
    nt = randomize_until_both_contents(site, cast.coordinator, at_least=6)
    sh = randomize_until_both_contents(other_site, cast.other_coordinator, at_least=3)
    arm = dict(Slot.objects.filter(participant__isnull=False).values_list("participant_id", "arm__code"))
    for participant in nt:
        event = site_does_the_same(participant, cast.coordinator, cast.investigator)
        sponsor_handles_the_susar(
            event, cast.sponsor_safety, report=sponsor_reports(arm[participant.pk]), capture=capture
        )
    for participant in sh:
        site_does_the_same(participant, cast.other_coordinator, staff["sh_investigator"])
    # One more at Nantong, done differently on purpose (left out of the comparison).
    not_susar = randomization.participant_randomize(
        participant=factories.make_participant(site, by=cast.coordinator, screening_date=datetime.date(2026, 12, 1)),
        randomized_by=cast.coordinator,
    )
    event = serious_event(not_susar, cast.coordinator)
    safety.sae_assess(
        event=event, assessed_by=cast.sponsor_safety, related=True, expectedness="expected", reference="IB v3.0"
    )
    arm = dict(Slot.objects.filter(participant__isnull=False).values_list("participant_id", "arm__code"))
    return Twins(
        sites={"NT": site, "SH": other_site},
        staff=staff,
        participants={"NT": nt, "SH": sh},
        arm=arm,
        not_susar=not_susar,
    )


# --- What a role reads -----------------------------------------------------------------------


@dataclasses.dataclass
class Read:
    source: str  # the route (or export, or "e-mail")
    url: str
    status: int
    kind: str  # html, json, csv, xlsx, odm, pdf, text
    body: object


def logged_in(user, api=False):
    client = APIClient() if api else Client()
    client.force_login(user)
    return client


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def kind_of(response) -> str:
    content_type = response.get("Content-Type", "")
    for marker, kind in (("html", "html"), ("json", "json"), ("pdf", "pdf"), ("csv", "csv"), ("sheet", "xlsx")):
        if marker in content_type:
            return kind
    return "text"


def get(client, source, url) -> Read:
    response = client.get(url)
    assert response.status_code < 500, (url, response.status_code)
    body = body_of(response)
    kind = kind_of(response)
    headers = "".join(
        f"{name}: {value}\n" for name, value in response.headers.items() if name != "Content-Security-Policy"
    )
    if kind == "json" and response.status_code == 200:
        parsed = json.loads(body)
        # Every page of a paged list.
        while isinstance(parsed, dict) and {"results", "next"} <= set(parsed) and parsed["next"]:
            more = client.get(parsed["next"]).json()
            parsed = {**more, "results": parsed["results"] + more["results"]}
        return Read(source, url, response.status_code, kind, parsed)
    if kind in ("pdf", "xlsx", "csv"):
        return Read(source, url, response.status_code, kind, body)
    return Read(source, url, response.status_code, kind, headers + body.decode("utf-8", "replace"))


def later_pages(client, read: Read, limit: int = 40) -> list[Read]:
    """The same page's other views (its filters, groups and pages): a participant's rows on page
    2, or past the first few of a group, are as readable as on the first view."""
    pages, seen, queue = [], {read.url}, []

    def links(page: Read):
        for query in QUERY_LINK.findall(page.body):
            url = read.url + "?" + query.replace("&amp;", "&")
            if url not in seen:
                seen.add(url)
                queue.append(url)

    links(read)
    while queue and len(pages) < limit:
        page = get(client, read.source, queue.pop(0))
        pages.append(page)
        if page.kind == "html":
            links(page)
    return pages


def export_reads(client, user) -> list[Read]:
    reads = []
    for kind, format in EXPORTS:
        answer = client.post("/reports/exports/", {"kind": kind, "format": format})
        if answer.status_code != 302:
            continue
        export = Export.objects.filter(requested_by=user, kind=kind, format=format).latest("id")
        report_services.export_run(export_id=export.pk)
        answer = client.get(f"/reports/exports/{export.pk}/download/")
        assert answer.status_code == 200, (kind, format, answer.status_code)
        reads.append(Read(f"export {kind}.{format}", f"export {kind}.{format}", 200, format, body_of(answer)))
    return reads


def read_everything(user, participants) -> list[Read]:
    """Every route of the URL conf: those of a participant with each participant's id (and each
    event's number), the others as they are; the exports the role may ask for; its e-mails."""
    client, api = logged_in(user), logged_in(user, api=True)
    reads = []
    for route in routes():
        if per_participant(route):
            for participant in participants:
                for url in filled(route, participant.pk):
                    reads.append(get(api if route.startswith("api/") else client, route, url))
        elif "<" not in route:
            read = get(api if route.startswith("api/") else client, route, "/" + route)
            reads.append(read)
            if read.kind == "html":
                reads += later_pages(client, read)
    if client.get("/reports/").status_code == 200:
        reads += export_reads(client, user)
    reads += [
        Read("e-mail", message.subject, 200, "text", f"{message.subject}\n{message.body}")
        for message in mail.outbox
        if user.email in message.to
    ]
    return reads


def text_of(read: Read) -> str:
    if read.kind == "json":
        return json.dumps(read.body, ensure_ascii=False)
    if read.kind == "xlsx":
        book = openpyxl.load_workbook(io.BytesIO(read.body), read_only=True)
        return "\n".join(
            "\t".join("" if cell is None else str(cell) for cell in row)
            for sheet in book.worksheets
            for row in sheet.iter_rows(values_only=True)
        )
    if read.kind == "pdf":
        document = pypdf.PdfReader(io.BytesIO(read.body))
        metadata = "\n".join(f"{key}: {value}" for key, value in (document.metadata or {}).items())
        return metadata + "\n" + "\n".join(page.extract_text() for page in document.pages)
    return read.body.decode("utf-8") if isinstance(read.body, bytes) else read.body


# --- Chunks of what was read, each about one participant --------------------------------------

ROW = re.compile(r"<tr\b.*?</tr>|<li\b.*?</li>|<dd\b.*?</dd>", re.S)


class Owners:
    def __init__(self, participants):
        self.by_label = {}
        self.by_pk = {p.pk: p for p in participants}
        for p in participants:
            self.by_label[p.screening_number] = p.pk
            if p.randomization_number:
                self.by_label[p.randomization_number] = p.pk
            # The permanent subject key (issue 19), where there is one.
            subject_key = getattr(p.screening, "subject_key", "")
            if subject_key:
                self.by_label[subject_key] = p.pk
        self.pattern = re.compile(
            r"(?<![\w-])(" + "|".join(map(re.escape, sorted(self.by_label, key=len, reverse=True))) + r")(?![\w-])"
        )

    def of_text(self, text: str):
        found = {self.by_label[label] for label in self.pattern.findall(text)}
        return found.pop() if len(found) == 1 else None

    def of_json(self, obj: dict, source: str):
        for key in ("participant", "subject_id", "subject"):
            value = obj.get(key)
            if isinstance(value, int) and value in self.by_pk:
                return value
            if isinstance(value, str) and value in self.by_label:
                return self.by_label[value]
        for key in ("randomization_number", "screening_number"):
            if obj.get(key) in self.by_label:
                return self.by_label[obj[key]]
        if source.startswith(("api/v1/participants/", "api/v1/screenings/")) and obj.get("id") in self.by_pk:
            return obj["id"]
        return None


def mask(text: str, owners: Owners) -> str:
    text = owners.pattern.sub("<participant>", text)
    text = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", text)
    text = re.sub(r'nonce="[^"]*"', "", text)
    text = re.sub(r"csrftoken=[^;]*", "csrftoken=", text)
    return re.sub(r"\d+", "#", " ".join(text.split()))


def json_chunks(obj, source, owners, owner=None):
    """(owner, masked json) of every object about one participant, innermost owner first."""
    if isinstance(obj, list):
        for item in obj:
            yield from json_chunks(item, source, owners, owner)
        return
    if not isinstance(obj, dict):
        return
    mine = owners.of_json(obj, source)
    if mine is not None and mine != owner:
        yield mine, mask(json.dumps(obj, sort_keys=True, ensure_ascii=False), owners)
        return
    for value in obj.values():
        yield from json_chunks(value, source, owners, owner)


def chunks(read: Read, owners: Owners):
    """(owner, masked text) of each part of a read that is about one participant."""
    if read.kind == "json":
        yield from json_chunks(read.body, read.source, owners)
        return
    if read.kind == "odm":
        root = ElementTree.fromstring(read.body)
        for subject in root.iter(f"{ODM}SubjectData"):
            owner = owners.by_label.get(subject.get("SubjectKey"))
            if owner is not None:
                yield owner, mask(ElementTree.tostring(subject, encoding="unicode"), owners)
        return
    if read.kind == "csv":
        lines = read.body.decode("utf-8-sig").splitlines()
    elif read.kind == "html":
        lines = ROW.findall(read.body)
    else:
        lines = text_of(read).splitlines()
    for line in lines:
        owner = owners.of_text(line)
        if owner is not None:
            yield owner, mask(line, owners)


def per_participant_reads(reads: list[Read], owners: Owners, participants) -> dict:
    """source -> participant -> sorted masked texts. A participant's own route is read whole."""
    found = collections.defaultdict(lambda: collections.defaultdict(list))
    pk_in_url = re.compile(r"^/(?:api/v1/)?(?:participants|screenings|screening)/(\d+)/")
    for read in reads:
        match = pk_in_url.match(read.url)
        if match and int(match.group(1)) in owners.by_pk:
            text = text_of(read) if read.kind != "json" or read.status != 200 else json.dumps(read.body, sort_keys=True)
            where = re.sub(r"/\d+/", "/#/", read.url)
            found[f"{read.source} {where}"][int(match.group(1))].append(f"{read.status} {mask(text, owners)}")
            continue
        for owner, text in chunks(read, owners):
            found[read.source][owner].append(text)
    for by_owner in found.values():
        for participant in participants:
            # A set: a row shown in a group's first few and again in the whole group counts once.
            by_owner[participant.pk] = sorted(set(by_owner.get(participant.pk, [])))
    return found


def differences(reads: list[Read], participants, arm: dict) -> list[str]:
    """What one participant's reads have that another's lack, described with the arms."""
    owners = Owners(participants)
    problems = []
    for source, by_owner in per_participant_reads(reads, owners, participants).items():
        variants = collections.defaultdict(list)
        for participant in participants:
            variants[tuple(by_owner[participant.pk])].append(arm[participant.pk])
        if len(variants) > 1:
            texts = list(variants)
            extra = sorted(set(texts[0]) ^ set(texts[1]))
            problems.append(
                f"{source}: {len(variants)} variants over participants done alike, arms "
                f"{[sorted(arms) for arms in variants.values()]}; first difference: {extra[:1]}"[:1500]
            )
    return problems


def ordered_by_arm(reads: list[Read], participants) -> list[str]:
    """A list showing participants must keep them in an order of their own (ascending or
    descending numbers), not group them by anything else."""
    owners = Owners(participants)
    rank = {p.pk: index for index, p in enumerate(sorted(participants, key=lambda p: p.screening_number))}
    problems = []
    for read in reads:
        if re.match(r"^/(?:api/v1/)?(participants|screenings|screening)/\d+/", read.url) or read.kind == "text":
            continue
        order = []
        for owner, _text in chunks(read, owners):
            if not order or order[-1] != owner:
                order.append(owner)
        if len(set(order)) < 3:
            continue
        # Lists by time may take each participant's rows in turn; the first appearances keep the order.
        # A later page of such a list starts anywhere in the turn.
        ranks = [rank[owner] for owner in dict.fromkeys(order)]
        turns = [ranks[start:] + ranks[:start] for start in range(len(ranks))]
        if not any(turn in (sorted(ranks), sorted(ranks, reverse=True)) for turn in turns):
            problems.append(f"{read.url}: participants in the order {ranks}")
    return problems


def arm_words(reads: list[Read], allowed_urls=()) -> list[tuple[str, list]]:
    return [
        (read.url, found)
        for read in reads
        if read.url not in allowed_urls
        for found in [LEAK.findall(text_of(read))]
        if found
    ]


# --- The tests -------------------------------------------------------------------------------


@pytest.fixture
def twins(frozen, trial, site, other_site, cast, django_capture_on_commit_callbacks):
    return build_twins(
        trial, site, other_site, cast, django_capture_on_commit_callbacks, sponsor_reports=lambda arm: True
    )


@pytest.mark.parametrize("role", NT_BLINDED + SH_BLINDED)
def test_a_blinded_role_reads_the_same_about_participants_the_site_treated_alike(twins, role):
    user = twins.staff[role]
    code = "NT" if role in NT_BLINDED else "SH"
    participants = twins.participants[code]
    reads = read_everything(user, [*participants, twins.not_susar])
    assert len({read.source for read in reads if read.status == 200}) > 20, "the crawl read too little"
    # Every safety route was read, and the participant's AE pages were there to read.
    safety_routes = {route for route in routes() if "safety" in route or "adverse-events" in route}
    assert safety_routes <= {read.source for read in reads}, safety_routes - {read.source for read in reads}
    own = [read for read in reads if read.url.startswith(f"/participants/{participants[0].pk}/adverse-events/")]
    assert own and all(read.status == 200 for read in own), [(read.url, read.status) for read in own]
    problems = arm_words(reads) + differences(reads, participants, twins.arm) + ordered_by_arm(reads, participants)
    assert problems == [], "\n".join(map(str, problems))


def test_the_twins_are_in_both_contents_and_the_comparison_sees_a_difference(twins, cast):
    """The comparison is not blind itself: one extra grade change for one participant shows."""
    for participants in twins.participants.values():
        arms = {twins.arm[p.pk] for p in participants}
        assert "PBO" in arms and arms - {"PBO"}
    participants = twins.participants["NT"]
    safety.ae_record(
        participant=participants[1],
        recorded_by=cast.coordinator,
        details=safety.AeDetails(
            term="fatigue", grade=1, onset_date=timezone.localdate(timezone=participants[1].site.zone)
        ),
    )
    reads = read_everything(cast.monitor, participants)
    found = differences(reads, participants, twins.arm)
    assert any("adverse-events" in problem for problem in found), found
    assert any("audit" in problem for problem in found), found


def test_the_sponsor_officer_sees_no_arm_of_a_participant_whose_blind_it_did_not_break(twins, cast):
    user = cast.sponsor_safety
    unblinded = twins.participants["NT"]
    reads = read_everything(user, [twins.not_susar, *unblinded])
    allowed = {f"/participants/{p.pk}/" for p in unblinded} | {f"/participants/{p.pk}/unblind/" for p in unblinded}
    assert arm_words(reads, allowed) == []
    about_him = [read for read in reads if read.url.startswith(f"/participants/{twins.not_susar.pk}/")]
    assert about_him and not arm_words(about_him)


def test_the_closed_report_is_the_dsmb_and_unblinded_roles_only(twins, cast):
    for role in NT_BLINDED + SH_BLINDED + ["sponsor_safety", "supply_manager"]:
        client = logged_in(twins.staff[role])
        for url in ("/safety/closed-report/", "/safety/closed-report/pdf/"):
            assert client.get(url).status_code == 404, (role, url)
    for role in ("dsmb", "statistician"):
        client = logged_in(twins.staff[role])
        page = client.get("/safety/closed-report/")
        assert page.status_code == 200
        # By arm: every arm's name heads its columns.
        for arm in twins.sites["NT"].trial.arms.all():
            assert arm.local_name in page.content.decode(), (role, arm.code)
        pdf = client.get("/safety/closed-report/pdf/")
        assert pdf.status_code == 200 and pdf["Cache-Control"] == "no-store"
        assert LEAK.search(text_of(Read("pdf", "pdf", 200, "pdf", pdf.content)))


@pytest.fixture
def sponsor_reports_active_only(frozen, trial, site, other_site, cast, django_capture_on_commit_callbacks):
    return build_twins(
        trial,
        site,
        other_site,
        cast,
        django_capture_on_commit_callbacks,
        sponsor_reports=lambda arm: arm != "PBO",
    )


@pytest.mark.parametrize("role", ["investigator", "monitor"])
def test_the_sponsor_reporting_only_active_susars_is_not_readable_at_the_site(sponsor_reports_active_only, role):
    """The leak this test found: the expedited report's columns were blinded-visible in the audit
    trail, and a real sponsor sends it only for a participant on active product."""
    twins = sponsor_reports_active_only
    participants = twins.participants["NT"]
    reads = read_everything(twins.staff[role], participants)
    assert differences(reads, participants, twins.arm) == []


# --- The DSMB writes nothing; the sponsor breaks only a SUSAR's blind -----------------------


def every_method_payloads(today: str) -> list[dict]:
    """What a form or an API path of the safety and data-entry pages takes, so that a refusal is
    the role's and not a missing field's."""
    event = {
        "term": "fatigue",
        "grade": 1,
        "onset_date": today,
        "outcome": "not_recovered",
        "serious": False,
        "relation_infusion": "possible",
        "relation_tablets": "possible",
        "action_infusion": "none",
        "action_tablets": "none",
    }
    return [
        {},
        event,
        *({**event, "action": action} for action in ("grade", "resolve", "report", "sign", "assess", "susar_report")),
        {"narrative": "x", "complete": True, "related": True, "expectedness": "unexpected", "reference": "IB"},
        {"password": factories.PASSWORD, "reason": "DSMB wants to know"},
        {"resolution_date": today, "outcome": "recovered", "report_reference": "CIOMS-1"},
    ]


@pytest.fixture
def serious_world(frozen, world, cast):
    """tests/sweep.py's record of every kind, its participant with a signed SAE report and a SUSAR."""
    participant = Participant.objects.get(pk=world["participant"])
    event = serious_event(participant, cast.coordinator)
    report = safety.sae_report_write(event=event, written_by=cast.coordinator, narrative="n", complete=True)
    safety.sae_report_sign(report=report, signer=cast.investigator, password=factories.PASSWORD)
    safety.sae_assess(
        event=event, assessed_by=cast.sponsor_safety, related=True, expectedness="unexpected", reference="IB"
    )
    return world


def writes_tried(user, world, today: str) -> tuple[int, list, bool]:
    """Every route of the URL conf, page and API, every writing method, with payloads a writer's
    request would carry: (requests, those answered as done, whether any row was written)."""
    client, api = logged_in(user), logged_in(user, api=True)
    before = row_counts()
    tried, accepted = 0, []
    for route in routes():
        try:
            urls = filled(route, record_id(route, world)) if "<int:pk>" in route else ["/" + route]
        except AssertionError:
            continue
        for url in urls:
            for payload in every_method_payloads(today):
                if route.startswith("api/"):
                    answers = [
                        api.post(url, payload, format="json"),
                        api.put(url, payload, format="json"),
                        api.patch(url, payload, format="json"),
                        api.delete(url),
                    ]
                else:
                    answers = [client.post(url, payload)]
                for answer in answers:
                    tried += 1
                    if answer.status_code in (201, 202, 204, 302):
                        accepted.append((answer.request["REQUEST_METHOD"], url, answer.status_code))
    return tried, accepted, row_counts() != before


def test_the_dsmb_member_writes_nothing_anywhere(serious_world, cast, site):
    today = timezone.localdate(timezone=site.zone).isoformat()
    tried, accepted, wrote = writes_tried(cast.dsmb, serious_world, today)
    assert tried > 500
    assert accepted == [] and not wrote, accepted[:20]
    client = logged_in(cast.dsmb)
    # It reads the closed report by arm, and no participant's data.
    assert client.get("/safety/closed-report/").status_code == 200
    assert client.get(f"/participants/{serious_world['participant']}/adverse-events/").status_code == 404


def test_the_same_sweep_as_the_coordinator_does_write(serious_world, cast, site):
    """The sweep's payloads are ones a writer's request carries: the sweep can see a write."""
    today = timezone.localdate(timezone=site.zone).isoformat()
    _tried, accepted, wrote = writes_tried(cast.coordinator, serious_world, today)
    assert wrote
    assert any("adverse-events" in url for _method, url, _status in accepted), accepted


def test_the_dsmb_role_holds_no_capability_that_writes(site):
    from trialsite.access import role_capabilities

    assert role_capabilities(site, Role.DSMB) == {Capability.VIEW_ALLOCATION, Capability.VIEW_SAFETY_REPORTS}


@pytest.fixture
def sponsor_cases(frozen, site, cast):
    """Three randomized participants: one with a SUSAR, one whose serious event is expected (no
    SUSAR), one with no serious event at all."""
    from tests import dosing_factories

    cases = {}
    for name in ("susar", "expected", "no_sae"):
        cases[name] = dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    for name, expectedness in (("susar", "unexpected"), ("expected", "expected")):
        event = serious_event(cases[name], cast.coordinator)
        safety.sae_assess(
            event=event, assessed_by=cast.sponsor_safety, related=True, expectedness=expectedness, reference="IB"
        )
    return cases


def unblind_as_sponsor(client, participant):
    return client.post(
        f"/participants/{participant.pk}/unblind/",
        {"password": factories.PASSWORD, "reason": "the sponsor wants to know"},
    )


def test_the_sponsor_officer_breaks_the_blind_of_a_susar(sponsor_cases, cast):
    answer = unblind_as_sponsor(logged_in(cast.sponsor_safety), sponsor_cases["susar"])
    assert answer.status_code == 200 and LEAK.search(answer.content.decode())


@pytest.mark.parametrize("case", ["expected", "no_sae"])
def test_the_sponsor_officer_cannot_break_the_blind_without_a_susar(sponsor_cases, cast, case):
    from randomization.models import Unblinding

    client = logged_in(cast.sponsor_safety)
    answer = unblind_as_sponsor(client, sponsor_cases[case])
    api_answer = logged_in(cast.sponsor_safety, api=True).post(
        f"/api/v1/participants/{sponsor_cases[case].pk}/unblind/",
        {"password": factories.PASSWORD, "reason": "the sponsor wants to know"},
        format="json",
    )
    assert not LEAK.search(answer.content.decode())
    assert api_answer.status_code in (403, 404, 409)
    assert not Unblinding.objects.filter(participant=sponsor_cases[case]).exists()
    assert not SusarAssessment.objects.filter(participant=sponsor_cases[case], expectedness="unexpected").exists()
