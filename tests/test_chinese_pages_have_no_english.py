"""Issue 16, done when: no English word on any Chinese page outside a short allow-list. Every
role crawls every page it can reach on the demo site (plus a held dose, a correction after
randomization with its deviation, and a shipment on its way) with the zh-hans language; what a
reader sees (text, and the title, aria-label, placeholder and button values) is searched for
ASCII words of two letters or more."""

from __future__ import annotations

import datetime
import os
import re
from decimal import Decimal
from html.parser import HTMLParser
from urllib.parse import urljoin, urlparse

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from trialsite.access import DEFAULT_ROLE_CAPABILITIES, Capability
from trialsite.management.commands.load_demo import DEMO_PASSWORD, DEMO_USERS

# Removed before looking for words, each for the reason given. Everything else in Latin letters
# on a Chinese page is a missing translation.
ALLOWED_PATTERNS = [
    (r"[\w.+-]+@[\w-]+(\.[\w-]+)*", "e-mail addresses are addresses"),
    (r"\b[\w-]+\.toml\b", "the protocol's file name"),
    (r"Affiliated Hospital of Nantong University", "the site's name as stored, in the audit trail's values"),
    (r"\b(S-)?[A-Z]{2}-\d{4}\b", "screening and randomization numbers (S-NT-0001, NT-0001)"),
    (r"\bNCT\d{8}\b", "the trial's registry id"),
    (r"\bDEMO[\w-]*", "the demo's own data (record numbers DEMO0001, lots DEMO-PL-1): typed, not text"),
    (r"\b(PL|L)-WALK[\w-]*", "lots typed by the walks"),
    (r"\bv\d+\b", "list versions (v1), as printed on the list"),
    (r"\b[A-Z]{2,3}\d+\b", "protocol codes with a number: inclusion IN1, exclusion EX1, visits C12"),
    (r"\bSHA-256\b", "the name of the hash"),
    (r"Authorization: Token <key>", "the HTTP header a script sends, written as it must be typed"),
    (r"\b[A-Z][a-z]+/[A-Z][A-Za-z_]+\b", "IANA time zone names (Asia/Shanghai), as the protocol file gives them"),
    (
        r"\b[a-z_]+(,[a-z_]+){2,}\b",
        "a CSV file's header (kit_number,kit_type,...): the columns as the file must name them",
    ),
    (r"[0-9a-f]{16,}", "hashes and seeds, in hexadecimal"),
]
# Single words that stay in Latin letters in a Chinese clinical site, and why.
ALLOWED_WORDS = {
    # Site codes, as printed on every label and randomization number.
    "NT", "SH",
    # Lab and unit symbols a Chinese lab report prints this way.
    "ULN", "ALT", "AST", "mm", "kg", "mg", "mL", "ml",
    # File formats and standards, named as the software that opens them names them.
    "CSV", "XLSX", "PDF", "ODM", "PNG", "SVG", "JSON", "API", "TOTP", "CONSORT", "ISO", "MedDRA",
    # The statistical packages an analysis package opens in, and SAS's transport format.
    "SAS", "XPT", "SPSS", "Stata",
    # Time zone abbreviation shown after times (Django's "T" date format), and UTC, the trail's clock.
    "CST", "UTC",
    # Protocol codes shown beside their label: the visit at the end of treatment, the age rule,
    # the arms (on unblinded pages only).
    "EOT", "AGE", "TOC", "ASA", "COMBO", "PBO",
    # Standards and products named by their own names: CDISC (ODM's body), the authenticator apps.
    "CDISC", "FreeOTP", "Google", "Microsoft", "Authenticator",
    # The demo patients' initials (data, as on the patient's file).
    "WJ", "ZL", "HM", "QY",
    # The cast: demo user names and their pinyin names are people, not text.
    *(username for username, _role, _name in DEMO_USERS),
    *(part for _username, _role, name in DEMO_USERS for part in name.split()),
}  # fmt: skip
WORD = re.compile(r"(?<![A-Za-z])[A-Za-z]{2,}(?![A-Za-z])")
HREF = re.compile(r'href="([^"#]+)"')
# Not pages: leaving, switching language, files, the admin (404 for blinded roles) and the
# API's Swagger UI (its own English interface).
SKIP = ("/accounts/logout/", "/static/", "/i18n/", "/admin/", "/api/", "/media/", "/favicon")
PER_PATH = 3  # paged lists: the first pages say all a page says


class VisibleText(HTMLParser):
    """What a reader sees or hears: text outside script and style, and the attributes a screen
    reader or the browser shows. Not <code>: machine text typed or read as it is (the TOTP key,
    kit numbers, a table's or database role's name); nor the title of the audit trail's field
    names, which is the column's name in the database beside its translated label."""

    SHOWN_ATTRIBUTES = ("title", "aria-label", "placeholder")
    MACHINE = ("script", "style", "code")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.MACHINE:
            self.hidden += 1
        values = dict(attrs)
        for name in self.SHOWN_ATTRIBUTES:
            if values.get(name) and not (name == "title" and "field" in (values.get("class") or "").split()):
                self.parts.append(values[name])
        if tag == "input" and values.get("type") in ("submit", "button") and values.get("value"):
            self.parts.append(values["value"])

    def handle_endtag(self, tag):
        if tag in self.MACHINE:
            self.hidden -= 1

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def english_words(html: str, *, context: bool = False) -> list:
    """The words left; with `context`, each with the text around it (for the failure message)."""
    parser = VisibleText()
    parser.feed(html)
    text = "\n".join(parser.parts)
    for pattern, _why in ALLOWED_PATTERNS:
        text = re.sub(pattern, " ", text)
    return [
        (match.group(), " ".join(text[max(0, match.start() - 40) : match.end() + 40].split()))
        if context
        else match.group()
        for match in WORD.finditer(text)
        if match.group() not in ALLOWED_WORDS
    ]


def crawl(client: Client, limit: int = 200):
    seen, queue, per_path, pages = set(), ["/"], {}, []
    while queue and len(pages) < limit:
        url = queue.pop(0)
        path = urlparse(url).path
        if url in seen or path.startswith(SKIP) or per_path.get(path, 0) >= PER_PATH:
            continue
        seen.add(url)
        per_path[path] = per_path.get(path, 0) + 1
        response = client.get(url)
        if response.status_code != 200 or "text/html" not in response.get("Content-Type", ""):
            continue
        html = response.content.decode()
        pages.append((url, html))
        for href in HREF.findall(html):
            target = urlparse(urljoin(url, href.replace("&amp;", "&")))
            if target.netloc in ("", "testserver") and target.path.startswith("/"):
                queue.append(target.path + (f"?{target.query}" if target.query else ""))
    return pages


@pytest.fixture
def busy_demo(settings, trial, site):
    """The demo, and what a few days later adds: a held infusion with repeat labs, a date of
    birth corrected after randomization (a deviation when the verdict changes), kits in transit,
    a printed set of code-break sheets."""
    from dosing import services as dosing
    from enrollment import services as enrollment
    from enrollment.models import Participant
    from randomization import services as randomization

    settings.DEBUG = True
    call_command("load_demo", stdout=open(os.devnull, "w"))
    settings.DEBUG = False
    users = {user.username: user for user in get_user_model().objects.all()}
    today = timezone.localdate(timezone=site.zone)
    signed = Participant.objects.get(screening__hospital_record_number="DEMO0002")
    signed = randomization.participant_randomize(participant=signed, randomized_by=users["coordinator"])
    c1 = signed.visits.order_by("sequence").first()
    dosing.visit_record(
        visit=c1,
        actual_date=today,
        recorded_by=users["coordinator"],
        weight_kg=Decimal("58"),
        neutrophils=3000,
        platelets=90000,
        alt_uln=Decimal("1"),
        ast_uln=Decimal("1"),
    )
    dosing.visit_repeat_labs(
        visit=c1,
        measured_on=today,
        recorded_by=users["coordinator"],
        neutrophils=3100,
        platelets=95000,
        alt_uln=Decimal("1"),
        ast_uln=Decimal("1"),
    )
    enrollment.screening_update(
        screening=signed.screening,
        changed_by=users["coordinator"],
        reason="身份证上的出生日期",
        date_of_birth=datetime.date(2015, 1, 1),
    )
    dosing.shipment_create(site=site, per_content={"INF": 1, "TAB": 1}, shipped_by=users["supply"])
    return {**users, "trial": trial}


@pytest.mark.parametrize("username", [username for username, _role, _name in DEMO_USERS])
def test_no_english_word_on_any_chinese_page(busy_demo, username):
    client = Client()
    client.force_login(busy_demo[username])
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    pages = crawl(client)
    assert len(pages) >= 4, [url for url, _html in pages]
    found = {}
    for url, html in pages:
        for word, around in english_words(html, context=True):
            found.setdefault(word, f"{url}: …{around}…")
    assert found == {}, "\n".join(f"{word!r} on {where}" for word, where in sorted(found.items()))
    role = next(role for name, role, _name in DEMO_USERS if name == username)
    if Capability.VIEW_ALLOCATION not in DEFAULT_ROLE_CAPABILITIES[role]:
        # The arms now have Chinese names: a blinded reader meets none of them either.
        arm_names = [arm.name_zh for arm in busy_demo["trial"].protocol.arms]
        assert arm_names and not [(url, name) for url, html in pages for name in arm_names if name in html]


def test_the_check_sees_english_and_spares_the_allow_list():
    assert english_words("<p>受试者 NT-0001 Platelets 低于 100 ×10⁹/L</p>") == ["Platelets"]  # noqa: RUF001 (the unit as printed)
    assert english_words('<button aria-label="Close">关</button><script>var x="Hello";</script>') == ["Close"]
    assert english_words("<p>coordinator@example.org 于 2026-11-30 签署 PDF</p>") == []
    assert DEMO_PASSWORD not in ALLOWED_WORDS
