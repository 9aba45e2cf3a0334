"""The one reporting layer: every number on the Reports page, in the API and in every export
format (CSV, XLSX, ODM, PDF, the CONSORT SVG/PNG) comes from these functions, so they cannot
disagree.

Scope. A report covers the sites where the user has "export reports"; trial-wide totals are the
sum over those sites. It is unblinded (arm columns, one CONSORT box per arm) only when the user
may view allocation at *every* site in scope; otherwise it is the blinded variant, whose code
paths never query an arm (`Slot.arm` is only joined under `if scope.unblinded`).

Definitions (people are counted, never reasons, unless a count says "by reason"):
- screened: Screening rows (the screening log: everyone screened, eligible or not).
- eligible: screenings whose outcome is eligible.
- screen failures: screenings whose outcome is ineligible. "By reason" counts, per failed
  reason code, the ineligible screenings that failed it; one screening may fail several
  reasons, so the reason counts may add up to more than the screen failures.
- incomplete: screenings with an unanswered item (neither eligible nor a screen failure).
- consented: screenings with at least one recorded consent.
- enrolled: participants (eligible, consented people given a screening number).
- randomized: participants with a randomization number.
- on treatment: randomized, not withdrawn, not dead, not completed, treatment not stopped by the lab
  safety gates and not lost to follow-up.
- completed: participant status "completed".
- withdrawn: participants with a Withdrawal record (before or after randomization).
- died: participants whose death is recorded (a grade 5 adverse event); not on treatment, and
  in CONSORT a reason of "not received" and "discontinued".
- CONSORT: assessed for eligibility = screened; excluded = screened - randomized, broken down by
  screening outcome of the people not randomized (not eligible [with reasons], incomplete,
  eligible but not randomized), so assessed = excluded + randomized by construction of the
  groups, and the tests check it on the data. Allocated = randomized (per arm only unblinded).
  Received allocated intervention (CONSORT item 13a): at least one dose given (a dose record
  whose lab gates said "give"); the others did not receive it, by reason: withdrew before a
  dose, first dose held by the lab gates, no dose recorded yet.
  Lost to follow-up: the Withdrawal record has only a free-text reason, which we do not parse;
  instead a randomized participant who is not withdrawn and not completed is lost to follow-up
  when their latest resolved visit (completed or missed) was missed, i.e. they stopped coming
  and nobody has recorded why.
  Discontinued intervention (item 13b), by reason: withdrew after randomization, or treatment
  stopped by the lab safety gates (and not lost to follow-up since). Each randomized person is
  in exactly one of on treatment, completed, discontinued and lost to follow-up, so those four
  add up to allocated. Analysed = allocated (intention to treat); excluded from analysis is 0
  because the protocol defines no exclusion from the analysis.
- Enrollment by month: randomizations per calendar month in the time zone of the first site in
  scope, cumulative, against the trial's target enrollment.
- Data version: the id of the newest audit event about trial data (export bookkeeping itself
  excluded); for a blinded scope, the number of the scope's audit events a blinded trail shows
  (`data_version`). Two exports with the same data version were made from the same data.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from django.db import connection
from django.db.models import Count, Exists, Max, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce, TruncMonth
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from enrollment.models import Consent, Outcome, Participant, ParticipantStatus, Screening
from trialsite import access
from trialsite.access import Capability
from trialsite.models import Arm, AuditEvent, Site, Trial

# Column order of the enrollment table, with the headings every format uses.
ENROLLMENT_COLUMNS: list[tuple[str, str]] = [
    ("screened", _("Screened")),
    ("eligible", _("Eligible")),
    ("screen_failures", _("Screen failures")),
    ("incomplete", _("Incomplete screenings")),
    ("consented", _("Consented")),
    ("enrolled", _("Enrolled")),
    ("randomized", _("Randomized")),
    ("on_treatment", _("On treatment")),
    ("completed", _("Completed")),
    ("withdrawn", _("Withdrawn")),
    ("died", _("Died")),
]
COUNT_KEYS = [key for key, _label in ENROLLMENT_COLUMNS]


@dataclass(frozen=True)
class ReportScope:
    """Who a report is for, over which sites, and whether it may show arms."""

    user: object
    trial: Trial
    sites: tuple[Site, ...]
    unblinded: bool

    @property
    def site_ids(self) -> list[int]:
        return [site.pk for site in self.sites]

    @property
    def zone(self) -> ZoneInfo:
        return self.sites[0].zone if self.sites else ZoneInfo("UTC")

    def arms(self) -> list[Arm]:
        """The trial's arms, for the unblinded variant only."""
        if not self.unblinded:
            raise PermissionError("a blinded report must not read arms")
        return list(self.trial.arms.order_by("order"))


def report_scope(user, *, site_id: int | None = None, trial: Trial | None = None) -> ReportScope:
    """The sites `user` may report on in one trial (all of them, or the one asked for), 404
    otherwise. The trial is the one named, or the one the request works in (trialsite.tenancy)."""
    from trialsite import tenancy

    trial = trial or tenancy.trial_for(user)
    token = tenancy.activate(trial)
    try:
        allowed = access.site_ids_with(user, Capability.EXPORT_REPORTS)
    finally:
        tenancy.deactivate(token)
    if site_id is not None:
        if site_id not in allowed:
            raise Http404("Not found")
        allowed = {site_id}
    sites = tuple(Site.objects.filter(pk__in=allowed).select_related("trial").order_by("code"))
    if not sites:
        raise Http404("Not found")
    unblinded = all(access.can(user, Capability.VIEW_ALLOCATION, site) for site in sites)
    return ReportScope(user=user, trial=trial, sites=sites, unblinded=unblinded)


def data_version(scope: ReportScope | None = None) -> int:
    """Which data an export was made from: two exports with the same data version were made from
    the same data. Unblinded (or with no scope): the newest audit event about trial data, exports'
    own bookkeeping aside. Blinded: the number of audit events about the scope's data that a
    blinded reader's trail shows (its sites' events, less the updates it leaves out, and the
    trial's own rows). Not an event id: the ids come from one sequence shared with writes hidden
    from a blinded reader (the expedited report of a SUSAR, sent for active product only), so
    the newest id, or the step between two exports' versions, would move with those writes."""
    if scope is None or scope.unblinded:
        newest = AuditEvent.objects.exclude(table_name="reports_export").aggregate(newest=Max("id"))["newest"]
        return newest or 0
    from trialsite.models import ProtocolVersion
    from trialsite.selectors import hidden_from_blinded_readers

    versions = [str(pk) for pk in ProtocolVersion.objects.filter(trial=scope.trial).values_list("pk", flat=True)]
    about_the_scope = (
        Q(site_id__in=scope.site_ids)
        | Q(table_name=Trial._meta.db_table, record_pk=str(scope.trial.pk))
        | Q(table_name=ProtocolVersion._meta.db_table, record_pk__in=versions)
    )
    return AuditEvent.objects.filter(about_the_scope).exclude(hidden_from_blinded_readers()).count()


# --- Participants' facts, shared by the counts and CONSORT -----------------------------------


def _visit_model():
    from schedules.models import Visit

    return Visit


def _dose_model():
    from dosing.models import DoseRecord

    return DoseRecord


def _participants(scope: ReportScope):
    """Participants in scope, each with the status of their latest resolved visit ("" when none)
    and whether a dose was ever given, held or treatment stopped by the lab gates."""
    Visit, DoseRecord = _visit_model(), _dose_model()
    resolved = Visit.objects.filter(participant=OuterRef("pk"), status__in=["completed", "missed"]).order_by(
        "-target_date", "-pk"
    )
    doses = DoseRecord.objects.filter(participant=OuterRef("pk"))
    return (
        Participant.objects.filter(site_id__in=scope.site_ids)
        .annotate(
            # Never NULL, so that a negated condition on it keeps people without a resolved visit.
            latest_resolved_visit=Coalesce(Subquery(resolved.values("status")[:1]), Value("")),
            dose_given=Exists(doses.filter(decision="give")),
            dose_held=Exists(doses.filter(decision="hold")),
            treatment_stopped=Exists(doses.filter(decision="stop")),
        )
        .order_by()
    )


RANDOMIZED = Q(randomization_number__isnull=False)
COMPLETED = Q(status=ParticipantStatus.COMPLETED)
WITHDRAWN = Q(withdrawal__isnull=False)
DIED = Q(status=ParticipantStatus.DIED)
# A participant who left (withdrew or died) is neither lost nor stopped by the gates.
LEFT = WITHDRAWN | DIED
LOST = RANDOMIZED & ~LEFT & ~COMPLETED & Q(latest_resolved_visit="missed")
STOPPED_NOT_LOST = RANDOMIZED & ~LEFT & ~COMPLETED & Q(treatment_stopped=True) & ~Q(latest_resolved_visit="missed")
NOT_GIVEN = RANDOMIZED & Q(dose_given=False)
PARTICIPANT_COUNTS: dict[str, Q] = {
    "enrolled": Q(),
    "randomized": RANDOMIZED,
    "on_treatment": RANDOMIZED
    & ~WITHDRAWN
    & ~COMPLETED
    & ~DIED
    & Q(treatment_stopped=False)
    & ~Q(latest_resolved_visit="missed"),
    "completed": COMPLETED,
    "withdrawn": WITHDRAWN,
    "died": DIED,
    # CONSORT 13a: received the allocated intervention, or not and why (one reason per person).
    "received_intervention": RANDOMIZED & Q(dose_given=True),
    "not_received": NOT_GIVEN,
    "not_received_withdrew": NOT_GIVEN & WITHDRAWN,
    "not_received_died": NOT_GIVEN & DIED,
    "not_received_held": NOT_GIVEN & ~LEFT & Q(dose_held=True),
    "not_received_not_yet": NOT_GIVEN & ~LEFT & Q(dose_held=False),
    # CONSORT 13b: discontinued intervention and lost to follow-up, with reasons; disjoint.
    "discontinued": (RANDOMIZED & LEFT) | STOPPED_NOT_LOST,
    "discontinued_withdrew": RANDOMIZED & WITHDRAWN,
    "discontinued_died": RANDOMIZED & DIED,
    "discontinued_stopped_by_lab_gates": STOPPED_NOT_LOST,
    "lost_to_follow_up": LOST,
    "lost_missed_last_visit": LOST,
}
SCREENING_COUNTS: dict[str, Q] = {
    "screened": Q(),
    "eligible": Q(outcome=Outcome.ELIGIBLE),
    "screen_failures": Q(outcome=Outcome.INELIGIBLE),
    "incomplete": Q(outcome=Outcome.INCOMPLETE),
    "consented": Q(has_consent=True),
    # CONSORT's "excluded", by screening outcome of the people not randomized.
    "excluded": Q(randomized=False),
    "excluded_not_eligible": Q(randomized=False, outcome=Outcome.INELIGIBLE),
    "excluded_incomplete": Q(randomized=False, outcome=Outcome.INCOMPLETE),
    "excluded_eligible_not_randomized": Q(randomized=False, outcome=Outcome.ELIGIBLE),
}


def _zero() -> dict[str, int]:
    return dict.fromkeys([*SCREENING_COUNTS, *PARTICIPANT_COUNTS], 0)


def _counts_by_site(scope: ReportScope) -> dict[int, dict[str, int]]:
    """Two grouped queries: screenings and participants, each counted per site."""
    counts = {site_id: _zero() for site_id in scope.site_ids}
    screenings = (
        Screening.objects.filter(site_id__in=scope.site_ids)
        .annotate(
            has_consent=Exists(Consent.objects.filter(screening=OuterRef("pk"))),
            randomized=Exists(Participant.objects.filter(pk=OuterRef("pk"), randomization_number__isnull=False)),
        )
        .order_by()
        .values("site_id")
        .annotate(**{key: Count("pk", filter=condition) for key, condition in SCREENING_COUNTS.items()})
    )
    for row in screenings:
        counts[row.pop("site_id")].update(row)
    participants = (
        _participants(scope)
        .values("site_id")
        .annotate(**{key: Count("pk", filter=condition) for key, condition in PARTICIPANT_COUNTS.items()})
    )
    for row in participants:
        counts[row.pop("site_id")].update(row)
    return counts


def _arm_counts_by_site(scope: ReportScope) -> dict[int, dict[str, dict[str, int]]]:
    """Per site, per arm code: the participant counts. Unblinded variant only."""
    if not scope.unblinded:
        raise PermissionError("a blinded report must not read arms")
    rows = (
        _participants(scope)
        .filter(RANDOMIZED)
        .values("site_id", "slot__arm__code")
        .annotate(**{key: Count("pk", filter=condition) for key, condition in PARTICIPANT_COUNTS.items()})
    )
    counts: dict[int, dict[str, dict[str, int]]] = {site_id: {} for site_id in scope.site_ids}
    for row in rows:
        counts[row.pop("site_id")][row.pop("slot__arm__code")] = row
    return counts


def _sum(dicts) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in dicts:
        for key, value in one.items():
            total[key] = total.get(key, 0) + value
    return total


def reason_labels(trial: Trial) -> dict[str, str]:
    """Each reason code's label in the reader's language, from the protocol: a criterion by its
    text (English or Chinese), age and consent by the rule. Never one screening's own wording,
    which names that person's age."""
    from enrollment.eligibility import criterion_text

    rules = trial.protocol.eligibility
    labels = {
        "AGE": gettext("Age outside %(low)s to %(high)s years")
        % {"low": rules.minimum_age_years, "high": rules.maximum_age_years},
        "CONSENT": gettext("Written consent not dated on or before the screening date"),
    }
    for criterion in rules.criteria:
        labels[criterion.code] = criterion_text(criterion)
    return labels


def _failure_reasons_by_site(scope: ReportScope) -> list[dict]:
    """Per failed reason code: the ineligible screenings that failed it, per site and in total.
    Labelled by the code, in protocol order (age, consent, then the criteria)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT s.site_id, r.value ->> 'code', count(DISTINCT s.id)
            FROM enrollment_screening s
            CROSS JOIN LATERAL jsonb_array_elements(
                CASE WHEN jsonb_typeof(s.reasons) = 'array' THEN s.reasons ELSE '[]'::jsonb END) AS r(value)
            WHERE s.outcome = %s AND s.site_id = ANY(%s) AND jsonb_typeof(r.value) = 'object'
            GROUP BY 1, 2
            """,
            [Outcome.INELIGIBLE, scope.site_ids],
        )
        rows = cursor.fetchall()
    known = reason_labels(scope.trial)
    order = {code: index for index, code in enumerate(known)}
    reasons: dict[str, dict] = {}
    for site_id, code, number in rows:
        code = code or "?"
        reason = reasons.setdefault(
            code, {"code": code, "text": known.get(code, code), "by_site": dict.fromkeys(scope.site_ids, 0)}
        )
        reason["by_site"][site_id] = number
    for reason in reasons.values():
        reason["total"] = sum(reason["by_site"].values())
    return sorted(reasons.values(), key=lambda reason: (order.get(reason["code"], len(order)), reason["code"]))


# --- The reports -----------------------------------------------------------------------------


@dataclass
class EnrollmentReport:
    scope: ReportScope
    # One entry per site: {"site": Site, "counts": {...}, "by_arm": {arm code: {...}} or None}
    sites: list[dict]
    total: dict[str, int]
    total_by_arm: dict[str, dict[str, int]] | None
    failure_reasons: list[dict]
    arms: list[Arm] | None = field(default=None)


def enrollment_report(scope: ReportScope) -> EnrollmentReport:
    counts = _counts_by_site(scope)
    by_arm = _arm_counts_by_site(scope) if scope.unblinded else None
    arms = scope.arms() if scope.unblinded else None
    sites = [
        {"site": site, "counts": counts[site.pk], "by_arm": by_arm[site.pk] if by_arm is not None else None}
        for site in scope.sites
    ]
    total_by_arm = None
    if by_arm is not None:
        total_by_arm = {
            arm.code: _sum(per_site.get(arm.code, {}) for per_site in by_arm.values())
            or dict.fromkeys(PARTICIPANT_COUNTS, 0)
            for arm in arms
        }
    return EnrollmentReport(
        scope=scope,
        sites=sites,
        total=_sum(counts.values()) if counts else _zero(),
        total_by_arm=total_by_arm,
        failure_reasons=_failure_reasons_by_site(scope),
        arms=arms,
    )


def enrollment_by_month(scope: ReportScope, *, until: datetime.date | None = None) -> list[dict]:
    """Randomizations per month (in the first site's zone) and the running total, with every
    month from the first randomization to `until` (today) present, empty ones too."""
    rows = (
        Participant.objects.filter(site_id__in=scope.site_ids, randomization_number__isnull=False)
        .annotate(month=TruncMonth("randomized_at", tzinfo=scope.zone))
        .order_by()
        .values("month")
        .annotate(randomized=Count("pk"))
        .order_by("month")
    )
    per_month = {row["month"].date().replace(day=1): row["randomized"] for row in rows}
    if not per_month:
        return []
    until = until or timezone.localdate(timezone=scope.zone)
    month = min(per_month)
    last = max(max(per_month), until.replace(day=1))
    months, cumulative = [], 0
    while month <= last:
        cumulative += per_month.get(month, 0)
        months.append({"month": month, "randomized": per_month.get(month, 0), "cumulative": cumulative})
        month = (month + datetime.timedelta(days=32)).replace(day=1)
    return months


@dataclass
class ConsortGroup:
    """One allocation box and the boxes under it: an arm (unblinded) or everyone (blinded)."""

    label: str
    allocated: int
    received: int
    not_received: int
    # (key, label, n) per reason, disjoint, adding up to the box's count.
    not_received_reasons: list[tuple[str, str, int]]
    lost_to_follow_up: int
    lost_reasons: list[tuple[str, str, int]]
    discontinued: int
    discontinued_reasons: list[tuple[str, str, int]]
    on_treatment: int
    completed: int
    analysed: int
    excluded_from_analysis: int = 0
    code: str | None = None


# Why excluded from analysis is 0: said wherever the count appears.
ANALYSIS_NOTE = _(
    "Intention to treat: everyone randomized is analysed in the arm allocated; the protocol defines no exclusion from the analysis."
)


@dataclass
class ConsortFlow:
    assessed: int
    excluded: int
    excluded_not_eligible: int
    excluded_incomplete: int
    excluded_eligible_not_randomized: int
    failure_reasons: list[dict]
    randomized: int
    groups: list[ConsortGroup]
    blinded: bool
    analysis_note: str = ""


def _group(label: str, counts: dict[str, int], code: str | None = None) -> ConsortGroup:
    def n(key: str) -> int:
        return counts.get(key, 0)

    return ConsortGroup(
        label=label,
        code=code,
        allocated=n("randomized"),
        received=n("received_intervention"),
        not_received=n("not_received"),
        not_received_reasons=[
            ("withdrew", gettext("Withdrew before a dose"), n("not_received_withdrew")),
            ("died", gettext("Died before a dose"), n("not_received_died")),
            ("first_dose_held", gettext("First dose held by the lab safety gates"), n("not_received_held")),
            ("no_dose_yet", gettext("No dose recorded yet"), n("not_received_not_yet")),
        ],
        lost_to_follow_up=n("lost_to_follow_up"),
        lost_reasons=[
            ("missed_last_visit", gettext("Missed their latest visit, no reason recorded"), n("lost_missed_last_visit"))
        ],
        discontinued=n("discontinued"),
        discontinued_reasons=[
            ("withdrew", gettext("Withdrew from the trial"), n("discontinued_withdrew")),
            ("died", gettext("Died"), n("discontinued_died")),
            (
                "stopped_by_lab_gates",
                gettext("Treatment stopped by the lab safety gates"),
                n("discontinued_stopped_by_lab_gates"),
            ),
        ],
        on_treatment=n("on_treatment"),
        completed=n("completed"),
        analysed=n("randomized"),
        excluded_from_analysis=0,
    )


def consort_flow(scope: ReportScope, report: EnrollmentReport | None = None) -> ConsortFlow:
    report = report or enrollment_report(scope)
    total = report.total
    if scope.unblinded:
        groups = [_group(arm.local_name, report.total_by_arm[arm.code], code=arm.code) for arm in report.arms]
    else:
        groups = [_group(gettext("All arms (blinded)"), total)]
    return ConsortFlow(
        assessed=total["screened"],
        excluded=total["excluded"],
        excluded_not_eligible=total["excluded_not_eligible"],
        excluded_incomplete=total["excluded_incomplete"],
        excluded_eligible_not_randomized=total["excluded_eligible_not_randomized"],
        failure_reasons=[{"code": r["code"], "text": r["text"], "total": r["total"]} for r in report.failure_reasons],
        randomized=total["randomized"],
        groups=groups,
        blinded=not scope.unblinded,
        analysis_note=str(ANALYSIS_NOTE),
    )
