"""The two safety reports (issue 18), from one set of functions so the page and the PDF agree.

Open report (blinded roles): every adverse event by participant, and pooled tables by CTCAE term
and worst grade. Nothing in it is split or ordered by arm: participants are listed by number.

Closed report (the DSMB and the unblinded statistician): the same tables by arm, plus serious
adverse events, deaths, dose holds and treatment stops by arm. Only a user who may view
allocation at *every* site in scope gets it; anyone else gets 404 (`closed_scope`), and the
open report's code never reads an arm.

Definitions:
- an event is a first record (`follows` is empty) with its grade changes; its worst grade is the
  highest grade of any of its records; it is serious when any of its records is serious.
- by term: participants with at least one event of the term, counted once, under the worst grade
  of all their events of that term; and the events of the term.
- death: a participant with an event whose outcome is fatal (counted once per participant).
- dose holds and stops: dose records whose safety-gate decision is hold or stop, counted both as
  participants with at least one and as dose records.
- "not randomized" is a column of its own in the closed report when someone not randomized has
  an event, so that the columns by arm always add up to the open report's totals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.http import Http404
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from safety.ctcae import TERMS
from safety.models import AdverseEvent, Outcome
from trialsite import access
from trialsite.access import Capability
from trialsite.models import Site, Trial

GRADES = (1, 2, 3, 4, 5)
NOT_RANDOMIZED = ""


@dataclass(frozen=True)
class SafetyScope:
    user: object
    trial: Trial
    sites: tuple[Site, ...]
    closed: bool

    @property
    def site_ids(self) -> list[int]:
        return [site.pk for site in self.sites]


def _scope(user, site_ids: set[int], *, closed: bool) -> SafetyScope:
    from trialsite import tenancy

    trial = tenancy.trial_for(user)
    sites = tuple(Site.objects.filter(pk__in=site_ids, trial=trial).select_related("trial").order_by("code"))
    if not sites:
        raise Http404("Not found")
    return SafetyScope(user=user, trial=trial, sites=sites, closed=closed)


def _open_site_ids(user) -> set[int]:
    return access.site_ids_with(user, Capability.VIEW_PARTICIPANTS) | access.site_ids_with(
        user, Capability.VIEW_SAFETY_REPORTS
    )


def _closed_site_ids(user) -> set[int]:
    allowed = access.site_ids_with(user, Capability.VIEW_SAFETY_REPORTS)
    if not allowed or not allowed <= access.site_ids_with(user, Capability.VIEW_ALLOCATION):
        return set()
    return allowed


def may_read_open_report(user) -> bool:
    return bool(_open_site_ids(user))


def may_read_closed_report(user) -> bool:
    """The menu asks this, so that nobody is shown a link to a report that would answer 404."""
    return bool(_closed_site_ids(user))


def open_scope(user) -> SafetyScope:
    """The sites whose participants the user sees (or whose safety reports they read)."""
    return _scope(user, _open_site_ids(user), closed=False)


def closed_scope(user) -> SafetyScope:
    """The sites the user reads safety reports for, only if they may view allocation at each."""
    allowed = _closed_site_ids(user)
    if not allowed:
        raise Http404("Not found")
    return _scope(user, allowed, closed=True)


def term_label(code: str) -> str:
    term = TERMS.get(code)
    if term is None:
        return code
    return term.term_zh if (get_language() or "").startswith("zh") else term.term


@dataclass
class Event:
    participant_id: int
    participant_number: str
    sequence: int
    term: str
    worst_grade: int
    serious: bool
    fatal: bool
    onset_date: object
    outcome: str
    arm: str | None = None

    @property
    def outcome_label(self) -> str:
        return str(Outcome(self.outcome).label)


@dataclass
class TermRow:
    term: str
    label: str
    # participants by worst grade, participants with any grade, events
    by_grade: dict[int, int] = field(default_factory=lambda: dict.fromkeys(GRADES, 0))
    participants: int = 0
    events: int = 0


@dataclass
class Summary:
    participants_with_events: int = 0
    events: int = 0
    sae_participants: int = 0
    sae_events: int = 0
    deaths: int = 0
    hold_participants: int = 0
    holds: int = 0
    stop_participants: int = 0
    stops: int = 0


SUMMARY_LABELS = [
    ("participants_with_events", _("Participants with an adverse event")),
    ("events", _("Adverse events")),
    ("sae_participants", _("Participants with a serious adverse event")),
    ("sae_events", _("Serious adverse events")),
    ("deaths", _("Deaths")),
    ("hold_participants", _("Participants with a dose held")),
    ("holds", _("Doses held")),
    ("stop_participants", _("Participants whose treatment was stopped")),
    ("stops", _("Treatment stops")),
]


def _events(scope: SafetyScope) -> list[Event]:
    """One entry per event (first record and its grade changes together), by participant number."""
    records = (
        AdverseEvent.objects.filter(site_id__in=scope.site_ids)
        .select_related("participant", "follows")
        .order_by("participant__screening_number", "participant_id", "sequence", "id")
    )
    events: dict[int, Event] = {}
    for record in records:
        first_id = record.follows_id or record.pk
        event = events.get(first_id)
        if event is None:
            first = record.follows or record
            event = events[first_id] = Event(
                participant_id=record.participant_id,
                participant_number=first.participant.screening_number,
                sequence=first.sequence,
                term=first.term,
                worst_grade=0,
                serious=False,
                fatal=False,
                onset_date=first.onset_date,
                outcome=record.outcome,
            )
        event.worst_grade = max(event.worst_grade, record.grade)
        event.serious = event.serious or record.serious
        event.fatal = event.fatal or record.outcome == Outcome.FATAL
        # The latest record's outcome is the event's outcome (records come in id order).
        event.outcome = record.outcome
    ordered = sorted(events.values(), key=lambda event: (event.participant_number, event.sequence))
    if scope.closed:
        arms = _arm_codes(scope)
        for event in ordered:
            event.arm = arms.get(event.participant_id, NOT_RANDOMIZED)
    return ordered


def _arm_codes(scope: SafetyScope) -> dict[int, str]:
    if not scope.closed:
        raise PermissionError("the open report must not read arms")
    from enrollment.models import Participant

    rows = Participant.objects.filter(site_id__in=scope.site_ids, slot__isnull=False).values_list(
        "pk", "slot__arm__code"
    )
    return dict(rows)


def term_table(events: list[Event]) -> list[TermRow]:
    worst: dict[tuple[str, int], int] = {}
    rows: dict[str, TermRow] = {}
    for event in events:
        row = rows.setdefault(event.term, TermRow(term=event.term, label=term_label(event.term)))
        row.events += 1
        key = (event.term, event.participant_id)
        worst[key] = max(worst.get(key, 0), event.worst_grade)
    for (term, _participant), grade in worst.items():
        rows[term].by_grade[grade] += 1
        rows[term].participants += 1
    return sorted(rows.values(), key=lambda row: (-row.participants, row.label))


def _summary(events: list[Event], doses: list[tuple[int, str]]) -> Summary:
    summary = Summary()
    summary.participants_with_events = len({event.participant_id for event in events})
    summary.events = len(events)
    serious = [event for event in events if event.serious]
    summary.sae_participants = len({event.participant_id for event in serious})
    summary.sae_events = len(serious)
    summary.deaths = len({event.participant_id for event in events if event.fatal})
    holds = [participant for participant, decision in doses if decision == "hold"]
    stops = [participant for participant, decision in doses if decision == "stop"]
    summary.hold_participants, summary.holds = len(set(holds)), len(holds)
    summary.stop_participants, summary.stops = len(set(stops)), len(stops)
    return summary


def _doses(scope: SafetyScope) -> list[tuple[int, str]]:
    from dosing.models import DoseRecord

    return list(
        DoseRecord.objects.filter(site_id__in=scope.site_ids, decision__in=["hold", "stop"]).values_list(
            "participant_id", "decision"
        )
    )


@dataclass
class Group:
    """One column group of the report: everyone (open), or one arm (closed)."""

    code: str | None
    label: str
    events: list[Event]
    terms: list[TermRow]
    summary: Summary


@dataclass
class SafetyReport:
    scope: SafetyScope
    total: Group
    arms: list[Group]


def safety_report(scope: SafetyScope) -> SafetyReport:
    events = _events(scope)
    doses = _doses(scope)
    total = Group(
        code=None,
        label=str(_("All participants")),
        events=events,
        terms=term_table(events),
        summary=_summary(events, doses),
    )
    arms: list[Group] = []
    if scope.closed:
        arm_of = _arm_codes(scope)
        groups = [(arm.code, arm.local_name) for arm in scope.trial.arms.order_by("order")]
        if any(event.arm == NOT_RANDOMIZED for event in events) or any(p not in arm_of for p, _d in doses):
            groups.append((NOT_RANDOMIZED, str(_("Not randomized"))))
        for code, label in groups:
            arm_events = [event for event in events if event.arm == code]
            arm_doses = [(p, d) for p, d in doses if arm_of.get(p, NOT_RANDOMIZED) == code]
            arms.append(
                Group(
                    code=code,
                    label=label,
                    events=arm_events,
                    terms=term_table(arm_events),
                    summary=_summary(arm_events, arm_doses),
                )
            )
    return SafetyReport(scope=scope, total=total, arms=arms)
