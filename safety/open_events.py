"""The participant's open adverse events, for the dosing visit (dosing reads safety; safety
imports no dosing for this)."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, QuerySet
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from enrollment.models import Participant
from safety.ctcae import TERMS
from safety.models import AdverseEvent


def open_events(participant: Participant) -> QuerySet[AdverseEvent]:
    """The participant's events not resolved, each at its current grade: the latest record of a
    chain. A grade change ends the record before it, so only the latest has no resolution date;
    `followed` and `later` keep that true even if an earlier record were left open."""
    followed = AdverseEvent.objects.filter(follows_id=OuterRef("id"))
    later = AdverseEvent.objects.filter(follows_id=OuterRef("follows_id"), id__gt=OuterRef("id"))
    return (
        AdverseEvent.objects.filter(participant=participant, resolution_date__isnull=True)
        .exclude(Exists(followed))
        .exclude(Exists(later))
        .order_by("sequence", "id")
    )


def grade_3_special_interest(events) -> list[AdverseEvent]:
    """The open events that ask for the investigator's review before a dose: special interest at
    grade 3 or worse."""
    return [event for event in events if event.special_interest and event.grade >= 3]


def term_label(code: str) -> str:
    """The CTCAE term in the reader's language."""
    term = TERMS.get(code)
    if term is None:
        return code
    return term.term_zh if (get_language() or "").startswith("zh") else term.term


def event_in_words(event: AdverseEvent) -> str:
    return _("AE %(sequence)s: %(term)s, grade %(grade)s") % {
        "sequence": event.sequence,
        "term": term_label(event.term),
        "grade": event.grade,
    }
