"""Date inputs carry ISO values in every language (a date picker shows nothing for 1980/01/01),
and a form posted back unchanged in Chinese saves."""

from __future__ import annotations

import datetime
import re
from html.parser import HTMLParser

import pytest
import time_machine
from django.conf import settings

from tests import factories
from trialsite.forms import DateField

NOW = datetime.datetime(2026, 11, 21, 2, 0, tzinfo=datetime.UTC)


class FormValues(HTMLParser):
    """What a browser would submit for the page's forms: inputs, checked radios, selected
    options, textareas (the CSRF token included)."""

    def __init__(self):
        super().__init__()
        self.values: dict[str, str] = {}
        self.date_inputs: dict[str, str | None] = {}
        self._select = self._textarea = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "input" and name:
            kind = attrs.get("type", "text")
            if kind == "date":
                self.date_inputs[name] = attrs.get("value")
            if kind in ("radio", "checkbox"):
                if "checked" in attrs:
                    self.values[name] = attrs.get("value", "on")
            elif kind not in ("submit", "button", "password"):
                self.values[name] = attrs.get("value") or ""
        elif tag == "select":
            self._select = name
        elif tag == "option" and self._select and "selected" in attrs:
            self.values[self._select] = attrs.get("value", "")
        elif tag == "textarea":
            self._textarea = name
            self.values[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.values[self._textarea] += data


def read_form(page: str) -> FormValues:
    parser = FormValues()
    parser.feed(page)
    return parser


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_a_correction_form_keeps_its_dates_and_saves_unchanged(cast, site, client_for, language):
    participant = factories.make_participant(site, by=cast.coordinator, date_of_birth=datetime.date(1980, 1, 1))
    screening = participant.screening
    client = client_for(cast.coordinator)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = language
    page = client.get(f"/screening/{screening.pk}/").content.decode()
    assert f'<html lang="{language}">' in page
    form = read_form(page)
    assert form.date_inputs == {
        "date_of_birth": "1980-01-01",
        "screening_date": "2026-11-02",
        "consent_date": "2026-11-02",
    }
    answer = client.post(f"/screening/{screening.pk}/", {**form.values, "reason": "checked"})
    assert answer.status_code == 302, re.findall(r'class="errorlist[^"]*"[^>]*>(.*?)</ul>', answer.content.decode())
    screening.refresh_from_db()
    assert screening.date_of_birth == datetime.date(1980, 1, 1)


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_every_date_field_renders_and_reads_iso_in_either_language(language):
    from django.utils import translation

    field = DateField()
    with translation.override(language):
        html = field.widget.render("day", datetime.date(1980, 1, 31))
        assert 'type="date"' in html and 'value="1980-01-31"' in html
        assert field.clean("1980-01-31") == datetime.date(1980, 1, 31)
    # Chinese readers may still type the date as their reports write it.
    with translation.override("zh-hans"):
        assert field.clean("1980/01/31") == datetime.date(1980, 1, 31)


def test_no_form_declares_a_date_field_of_its_own():
    import pathlib

    root = pathlib.Path(settings.BASE_DIR)
    offenders = [
        str(path.relative_to(root))
        for app in ("enrollment", "schedules", "dosing", "randomization", "reports", "trialsite")
        for path in (root / app).rglob("forms.py")
        if re.search(r"forms\.(DateField|DateInput)\(", path.read_text())
    ]
    assert offenders == []
