"""Export formats. Every format reads the same selectors (reports/selectors.py) and the same row
iterators (below), and writes incrementally: listings are read with `.iterator(chunk_size=2000)`
over `.values()` and written row by row, so memory does not grow with the number of participants.

Blinding: the arm column, the ARM item and the arm code list exist only when the scope is
unblinded; in the blinded variant no query below even joins the arm."""

from __future__ import annotations

import csv
import datetime
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from xml.sax.saxutils import escape

from django.db import connection
from django.db.models import OuterRef, Subquery
from django.utils import timezone
from django.utils.translation import gettext

from enrollment.models import Consent, EligibilityAnswer, Screening
from reports import selectors
from reports.selectors import ENROLLMENT_COLUMNS, ReportScope
from trialsite.text import defuse_formula, defuse_formula_sql

CHUNK = 2000

ProgressCallback = Callable[[int], None]


def safe_cell(value):
    """Text that a spreadsheet would run as a formula is prefixed with a quote (CSV injection)."""
    return defuse_formula(value)


@dataclass(frozen=True)
class Stamp:
    """Who exported, when, from which data: written into every file."""

    export_id: int | None
    exported_by: str
    exported_at: datetime.datetime
    data_version: int
    blinded: bool
    site_codes: tuple[str, ...]
    trial: str

    def lines(self) -> list[str]:
        return [
            gettext("%(trial)s export %(id)s") % {"trial": self.trial, "id": self.export_id or "-"},
            gettext("Exported by %(user)s at %(when)s (UTC); data version %(version)s")
            % {
                "user": self.exported_by,
                "when": self.exported_at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "version": self.data_version,
            },
            gettext("Sites: %(sites)s; %(blinding)s")
            % {
                "sites": ", ".join(self.site_codes),
                "blinding": gettext("blinded (no allocation)")
                if self.blinded
                else gettext("unblinded (with allocation)"),
            },
        ]


def make_stamp(scope: ReportScope, *, export_id: int | None, version: int | None = None) -> Stamp:
    return Stamp(
        export_id=export_id,
        exported_by=scope.user.get_username(),
        exported_at=timezone.now(),
        data_version=selectors.data_version() if version is None else version,
        blinded=not scope.unblinded,
        site_codes=tuple(site.code for site in scope.sites),
        trial=scope.trial.nct_id,
    )


# --- Tables: a title, headings and rows (lists), shared by CSV, XLSX and PDF -------------------


@dataclass
class Table:
    key: str
    title: str
    headings: list[str]
    rows: Iterable[list]
    # How many rows to expect, for progress; None when it is small and cheap.
    expected_rows: int | None = None
    # The same rows formatted by PostgreSQL, for the CSV writer to stream with COPY; only the
    # large listings have one.
    copy_query: CopyQuery | None = None


COPY_BLOCK_SUBJECTS = 10_000


@dataclass(frozen=True)
class CopyQuery:
    """A listing as one SELECT whose last condition is a range of subject ids (`BETWEEN %s AND
    %s`). It is read in blocks of subjects because nothing else can run on the connection during
    a COPY, and the export's progress is saved between blocks."""

    sql: str
    parameters: list
    site_ids: list[int]

    def blocks(self) -> Iterator[tuple[str, list]]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT min(id), max(id) FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / %s AS block "
                "FROM enrollment_screening WHERE site_id = ANY(%s)) AS numbered GROUP BY block ORDER BY block",
                [COPY_BLOCK_SUBJECTS, self.site_ids],
            )
            ranges = cursor.fetchall()
        for first, last in ranges:
            yield self.sql, [*self.parameters, first, last]


def enrollment_table(scope: ReportScope, report: selectors.EnrollmentReport | None = None) -> Table:
    report = report or selectors.enrollment_report(scope)
    headings = [gettext("Site"), *[str(label) for _key, label in ENROLLMENT_COLUMNS]]
    rows = [
        [entry["site"].code, *[entry["counts"][key] for key, _label in ENROLLMENT_COLUMNS]] for entry in report.sites
    ]
    rows.append([gettext("All sites"), *[report.total[key] for key, _label in ENROLLMENT_COLUMNS]])
    if scope.unblinded:
        headings.insert(1, gettext("Arm"))
        for row in rows:
            row.insert(1, gettext("All arms"))
        for arm in report.arms:
            for entry in report.sites:
                arm_counts = entry["by_arm"].get(arm.code, {})
                rows.append(
                    [entry["site"].code, arm.code, *[arm_counts.get(key, "") for key, _label in ENROLLMENT_COLUMNS]]
                )
    return Table("enrollment", gettext("Enrollment by site"), headings, rows)


def screen_failures_table(scope: ReportScope, report: selectors.EnrollmentReport | None = None) -> Table:
    report = report or selectors.enrollment_report(scope)
    headings = [gettext("Reason code"), gettext("Reason"), *[site.code for site in scope.sites], gettext("All sites")]
    rows = [
        [reason["code"], reason["text"], *[reason["by_site"][site.pk] for site in scope.sites], reason["total"]]
        for reason in report.failure_reasons
    ]
    rows.append(
        [
            "",
            gettext("People with at least one failed reason"),
            *[entry["counts"]["screen_failures"] for entry in report.sites],
            report.total["screen_failures"],
        ]
    )
    return Table("screen_failures", gettext("Screen failures by reason"), headings, rows)


def enrollment_by_month_table(scope: ReportScope) -> Table:
    target = scope.trial.target_enrollment
    rows = [
        [month["month"].strftime("%Y-%m"), month["randomized"], month["cumulative"], target]
        for month in selectors.enrollment_by_month(scope)
    ]
    return Table(
        "enrollment_by_month",
        gettext("Enrollment by month"),
        [gettext("Month"), gettext("Randomized"), gettext("Cumulative"), gettext("Target")],
        rows,
    )


def consort_table(scope: ReportScope, flow: selectors.ConsortFlow | None = None) -> Table:
    flow = flow or selectors.consort_flow(scope)
    rows = [
        ["assessed", gettext("Assessed for eligibility"), "", flow.assessed],
        ["excluded", gettext("Excluded"), "", flow.excluded],
        ["excluded_not_eligible", gettext("Not meeting inclusion criteria"), "", flow.excluded_not_eligible],
    ]
    rows += [[f"reason_{r['code']}", r["text"], "", r["total"]] for r in flow.failure_reasons]
    rows += [
        ["excluded_incomplete", gettext("Screening incomplete"), "", flow.excluded_incomplete],
        [
            "excluded_eligible_not_randomized",
            gettext("Eligible, not randomized"),
            "",
            flow.excluded_eligible_not_randomized,
        ],
        ["randomized", gettext("Randomized"), "", flow.randomized],
    ]
    for group in flow.groups:
        arm = group.code or ""
        rows += [
            ["allocated", gettext("Allocated"), arm, group.allocated],
            ["received_intervention", gettext("Received allocated intervention"), arm, group.received],
            ["not_received", gettext("Did not receive allocated intervention"), arm, group.not_received],
        ]
        rows += [[f"not_received_{key}", label, arm, n] for key, label, n in group.not_received_reasons]
        rows += [["lost_to_follow_up", gettext("Lost to follow-up"), arm, group.lost_to_follow_up]]
        rows += [[f"lost_{key}", label, arm, n] for key, label, n in group.lost_reasons]
        rows += [["discontinued", gettext("Discontinued intervention"), arm, group.discontinued]]
        rows += [[f"discontinued_{key}", label, arm, n] for key, label, n in group.discontinued_reasons]
        rows += [
            ["on_treatment", gettext("On treatment"), arm, group.on_treatment],
            ["completed", gettext("Completed"), arm, group.completed],
            ["analysed", gettext("Analysed"), arm, group.analysed],
            [
                "excluded_from_analysis",
                gettext("Excluded from analysis") + " (" + flow.analysis_note + ")",
                arm,
                group.excluded_from_analysis,
            ],
        ]
    headings = [
        gettext("Box"),
        gettext("Label"),
        gettext("Arm") if scope.unblinded else gettext("Group"),
        gettext("Participants"),
    ]
    return Table("consort", gettext("CONSORT flow"), headings, rows)


# --- The large listings as SQL, for COPY -----------------------------------------------------
#
# A CSV of 100,000 participants and their visits formatted row by row in Python took 18 times as
# long as PostgreSQL's own COPY of the same rows. So for CSV the database formats the listings
# itself (`COPY (SELECT ...) TO STDOUT WITH (FORMAT csv)`) and Python only streams the bytes.
# Each expression below mirrors one cell of the Python rows, which XLSX and PDF still use: empty
# text is written as NULL (an empty cell, as Python's csv writes ""), and text cells get
# `safe_cell`'s quote prefix. A test holds the two paths byte-for-byte equal.


def _sql_text(expression: str) -> str:
    """A text cell: empty as an empty cell, and neutralized like `safe_cell`, from the same
    trigger characters."""
    return f"nullif({defuse_formula_sql(expression)}, '')"


def _sql_date(expression: str) -> str:
    # ISO (YYYY-MM-DD) because the connection's DateStyle is ISO (settings.py); a cast is
    # cheaper than to_char, which matters at a few million dates.
    return f"({expression})::text"


def _sql_utc(expression: str) -> str:
    return f"""to_char({expression} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""


# `age_on(date_of_birth, screening_date)`, the failed criteria and the latest consent of screening `s`.
_SQL_AGE = (
    "(extract(year FROM s.screening_date) - extract(year FROM s.date_of_birth)"
    " - CASE WHEN (extract(month FROM s.screening_date), extract(day FROM s.screening_date))"
    " < (extract(month FROM s.date_of_birth), extract(day FROM s.date_of_birth)) THEN 1 ELSE 0 END)::int"
)
# A reason is "unanswered" when the screening's answer to that criterion is blank: an incomplete
# screening lists its unanswered items among its reasons, and they are not failures.
_SQL_REASON_UNANSWERED = (
    "EXISTS (SELECT 1 FROM enrollment_eligibilityanswer ua WHERE ua.screening_id = s.id"
    " AND ua.criterion_code = reason ->> 'code' AND coalesce(ua.answer, '') NOT IN ('yes', 'no'))"
)


def _sql_reason_codes(condition: str) -> str:
    return (
        "(SELECT string_agg(coalesce(reason ->> 'code', ''), ';' ORDER BY position)"
        " FROM jsonb_array_elements(CASE WHEN jsonb_typeof(s.reasons) = 'array' THEN s.reasons ELSE '[]' END)"
        f" WITH ORDINALITY AS listed(reason, position) WHERE jsonb_typeof(reason) = 'object' AND {condition})"
    )


_SQL_FAILED_CRITERIA = _sql_reason_codes(f"NOT {_SQL_REASON_UNANSWERED}")
_SQL_UNANSWERED_CRITERIA = _sql_reason_codes(_SQL_REASON_UNANSWERED)
_SQL_CONSENT_DATE = "(SELECT c.signed_on FROM enrollment_consent c WHERE c.screening_id = s.id ORDER BY c.signed_on DESC, c.id DESC LIMIT 1)"
_SQL_SUBJECT_KEY = "coalesce(nullif(p.randomization_number, ''), nullif(p.screening_number, ''), 'SCR-' || s.id)"


def subjects_copy_query(scope: ReportScope) -> CopyQuery:
    """`subjects_table`'s rows as one SELECT. The arm is joined only for an unblinded scope."""
    subject = _SQL_SUBJECT_KEY
    age, reasons, consent = _SQL_AGE, _SQL_FAILED_CRITERIA, _SQL_CONSENT_DATE
    cells = [
        _sql_text(subject),
        _sql_text("st.code"),
        _sql_date("s.screening_date"),
        _sql_text("s.sex"),
        age,
        _sql_text("s.outcome"),
        _sql_text(reasons),
        _sql_text(_SQL_UNANSWERED_CRITERIA),
        _sql_date(consent),
        _sql_text("p.screening_number"),
        _sql_text("p.randomization_number"),
        _sql_utc("p.randomized_at"),
        _sql_text("p.status"),
        _sql_date("w.withdrawn_on"),
    ]
    joins = [
        "JOIN trialsite_site st ON st.id = s.site_id",
        "LEFT JOIN enrollment_participant p ON p.screening_id = s.id",
        "LEFT JOIN enrollment_withdrawal w ON w.participant_id = p.screening_id",
    ]
    if scope.unblinded:
        cells.append(_sql_text("a.code"))
        joins += [
            "LEFT JOIN randomization_slot sl ON sl.participant_id = p.screening_id",
            "LEFT JOIN trialsite_arm a ON a.id = sl.arm_id",
        ]
    sql = (
        f"SELECT {', '.join(cells)} FROM enrollment_screening s {' '.join(joins)} "
        "WHERE s.site_id = ANY(%s) AND s.id BETWEEN %s AND %s ORDER BY s.id"
    )
    return CopyQuery(sql, [list(scope.site_ids)], list(scope.site_ids))


def visits_copy_query(scope: ReportScope) -> CopyQuery:
    """`visits_table`'s rows as one SELECT, in the same order."""
    visit_table = selectors._visit_model()._meta.db_table
    cells = [
        _sql_text("coalesce(p.randomization_number, p.screening_number)"),
        _sql_text("st.code"),
        _sql_text("v.code"),
        _sql_text("v.kind"),
        "v.cycle",
        _sql_date("v.target_date"),
        _sql_date("v.window_start"),
        _sql_date("v.window_end"),
        _sql_text("v.status"),
        _sql_date("v.actual_date"),
    ]
    sql = (
        f"SELECT {', '.join(cells)} FROM {visit_table} v "
        "JOIN enrollment_participant p ON p.screening_id = v.participant_id "
        "JOIN trialsite_site st ON st.id = v.site_id "
        "WHERE v.site_id = ANY(%s) AND v.participant_id BETWEEN %s AND %s "
        "ORDER BY v.participant_id, v.target_date, v.id"
    )
    return CopyQuery(sql, [list(scope.site_ids)], list(scope.site_ids))


def subject_key(row: dict) -> str:
    """How an export names a person: randomization number, else screening number, else the
    screening's id (never a name or a hospital record number)."""
    return row.get("randomization_number") or row.get("screening_number") or f"SCR-{row['id']}"


def age_on(birth: datetime.date, day: datetime.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def reason_codes(row: dict) -> tuple[str, str]:
    """The screening's failed and unanswered reason codes, each ";"-joined in the verdict's order."""
    unanswered = set(row.get("unanswered_codes") or [])
    reasons = [reason for reason in row["reasons"] if isinstance(reason, dict)]
    return (
        ";".join(reason.get("code", "") for reason in reasons if reason.get("code") not in unanswered),
        ";".join(reason.get("code", "") for reason in reasons if reason.get("code") in unanswered),
    )


def subject_values(scope: ReportScope) -> Iterator[dict]:
    """One dict per screening in scope, in id order, streamed from a server-side cursor."""
    from django.contrib.postgres.expressions import ArraySubquery

    latest_consent = Consent.objects.filter(screening=OuterRef("pk")).order_by("-signed_on", "-pk")
    blank_answers = EligibilityAnswer.objects.filter(screening=OuterRef("pk")).exclude(answer__in=["yes", "no"])
    fields = [
        "id",
        "site__code",
        "screening_date",
        "date_of_birth",
        "sex",
        "outcome",
        "reasons",
        "unanswered_codes",
        "consent_date",
        "screening_number",
        "randomization_number",
        "randomized_at",
        "status",
        "withdrawn_on",
    ]
    rows = Screening.objects.filter(site_id__in=scope.site_ids).annotate(
        consent_date=Subquery(latest_consent.values("signed_on")[:1]),
        unanswered_codes=ArraySubquery(blank_answers.values("criterion_code")),
    )
    rows = rows.alias().order_by("pk")
    from django.db.models import F

    rows = rows.annotate(
        screening_number=F("participant__screening_number"),
        randomization_number=F("participant__randomization_number"),
        randomized_at=F("participant__randomized_at"),
        status=F("participant__status"),
        withdrawn_on=F("participant__withdrawal__withdrawn_on"),
    )
    if scope.unblinded:
        rows = rows.annotate(arm=F("participant__slot__arm__code"))
        fields.append("arm")
    yield from rows.values(*fields).iterator(chunk_size=CHUNK)


def subject_count(scope: ReportScope) -> int:
    return Screening.objects.filter(site_id__in=scope.site_ids).count()


def subjects_table(scope: ReportScope) -> Table:
    headings = [
        gettext("Subject"),
        gettext("Site"),
        gettext("Screening date"),
        gettext("Sex"),
        gettext("Age at screening"),
        gettext("Screening outcome"),
        gettext("Failed criteria"),
        gettext("Unanswered criteria"),
        gettext("Consent date"),
        gettext("Screening number"),
        gettext("Randomization number"),
        gettext("Randomized at (UTC)"),
        gettext("Status"),
        gettext("Withdrawal date"),
    ]
    if scope.unblinded:
        headings.append(gettext("Arm"))

    def rows():
        for row in subject_values(scope):
            failed, unanswered = reason_codes(row)
            line = [
                subject_key(row),
                row["site__code"],
                row["screening_date"].isoformat(),
                row["sex"],
                age_on(row["date_of_birth"], row["screening_date"]),
                row["outcome"],
                failed,
                unanswered,
                row["consent_date"].isoformat() if row["consent_date"] else "",
                row["screening_number"] or "",
                row["randomization_number"] or "",
                _utc(row["randomized_at"]),
                row["status"] or "",
                row["withdrawn_on"].isoformat() if row["withdrawn_on"] else "",
            ]
            if scope.unblinded:
                line.append(row["arm"] or "")
            yield line

    return Table(
        "subjects",
        gettext("Subjects"),
        headings,
        rows(),
        expected_rows=subject_count(scope),
        copy_query=subjects_copy_query(scope),
    )


def _utc(moment: datetime.datetime | None) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


VISIT_FIELDS = [
    "participant_id",
    "participant__randomization_number",
    "participant__screening_number",
    "site__code",
    "code",
    "kind",
    "cycle",
    "target_date",
    "window_start",
    "window_end",
    "status",
    "actual_date",
]


def visit_values(scope: ReportScope) -> Iterator[dict]:
    """Visits in scope ordered by participant id (the order of `subject_values`), streamed."""
    Visit = selectors._visit_model()
    yield from (
        Visit.objects.filter(site_id__in=scope.site_ids)
        .order_by("participant_id", "target_date", "pk")
        .values(*VISIT_FIELDS)
        .iterator(chunk_size=CHUNK)
    )


def visit_count(scope: ReportScope) -> int:
    return selectors._visit_model().objects.filter(site_id__in=scope.site_ids).count()


def visits_table(scope: ReportScope) -> Table:
    headings = [
        gettext("Subject"),
        gettext("Site"),
        gettext("Visit"),
        gettext("Kind"),
        gettext("Cycle"),
        gettext("Target date"),
        gettext("Window opens"),
        gettext("Window closes"),
        gettext("Visit status"),
        gettext("Visit date"),
    ]

    def rows():
        for row in visit_values(scope):
            yield [
                row["participant__randomization_number"] or row["participant__screening_number"],
                row["site__code"],
                row["code"],
                row["kind"],
                row["cycle"] if row["cycle"] is not None else "",
                _iso(row["target_date"]),
                _iso(row["window_start"]),
                _iso(row["window_end"]),
                row["status"],
                _iso(row["actual_date"]),
            ]

    return Table(
        "visits",
        gettext("Visits"),
        headings,
        rows(),
        expected_rows=visit_count(scope),
        copy_query=visits_copy_query(scope),
    )


def _iso(day) -> str:
    return day.isoformat() if day else ""


# --- Adverse events ----------------------------------------------------------------------------

AE_FIELDS = [
    "id",
    "participant_id",
    "participant__randomization_number",
    "participant__screening_number",
    "site__code",
    "sequence",
    "follows__sequence",
    "term",
    "term_text",
    "grade",
    "onset_date",
    "resolution_date",
    "serious",
    "seriousness",
    "relation_infusion",
    "relation_tablets",
    "action_infusion",
    "action_tablets",
    "outcome",
    "special_interest",
    "protocol_version__version",
]


def ae_values(scope: ReportScope) -> Iterator[dict]:
    """AE records in scope in participant id order (the order of `subject_values`), each event's
    records together, the first before its grade changes. The arm is joined only unblinded."""
    from safety.models import AdverseEvent

    fields = list(AE_FIELDS)
    rows = AdverseEvent.objects.filter(site_id__in=scope.site_ids).order_by("participant_id", "sequence", "pk")
    if scope.unblinded:
        from django.db.models import F

        rows = rows.annotate(arm=F("participant__slot__arm__code"))
        fields.append("arm")
    yield from rows.values(*fields).iterator(chunk_size=CHUNK)


def ae_count(scope: ReportScope) -> int:
    from safety.models import AdverseEvent

    return AdverseEvent.objects.filter(site_id__in=scope.site_ids).count()


def _yes_no(flag: bool) -> str:
    # Codes, like the other coded cells (sex, outcome): the same in every language.
    return "yes" if flag else "no"


def adverse_events_table(scope: ReportScope) -> Table:
    """One row per AE record (a grade change is its own row, `Follows` naming the event's first
    record by its number). Relation and action are per study product, in the blinded words."""
    from safety.ctcae import TERMS
    from safety.models import Seriousness

    criteria = list(Seriousness)
    headings = [
        gettext("Subject"),
        gettext("Site"),
        gettext("Event number"),
        gettext("Follows"),
        gettext("Term code"),
        gettext("CTCAE term"),
        gettext("MedDRA code"),
        gettext("Term in words"),
        gettext("Grade"),
        gettext("Onset date"),
        gettext("Resolution date"),
        gettext("Serious"),
        *[str(criterion.label) for criterion in criteria],
        gettext("Relation to the study infusion"),
        gettext("Relation to the study tablets"),
        gettext("Action taken with the study infusion"),
        gettext("Action taken with the study tablets"),
        gettext("Outcome"),
        gettext("Special interest"),
        gettext("Protocol version"),
    ]
    if scope.unblinded:
        headings.append(gettext("Arm"))

    def rows():
        for row in ae_values(scope):
            term = TERMS.get(row["term"])
            line = [
                row["participant__randomization_number"] or row["participant__screening_number"],
                row["site__code"],
                row["sequence"],
                row["follows__sequence"] if row["follows__sequence"] is not None else "",
                row["term"],
                # English whatever the reader's language: the term is coded data.
                term.term if term else "",
                term.meddra_code if term and term.meddra_code else "",
                row["term_text"],
                row["grade"],
                _iso(row["onset_date"]),
                _iso(row["resolution_date"]),
                _yes_no(row["serious"]),
                *[_yes_no(criterion.value in row["seriousness"]) for criterion in criteria],
                row["relation_infusion"],
                row["relation_tablets"],
                row["action_infusion"],
                row["action_tablets"],
                row["outcome"],
                _yes_no(row["special_interest"]),
                row["protocol_version__version"] or "",
            ]
            if scope.unblinded:
                line.append(row["arm"] or "")
            yield line

    return Table("adverse_events", gettext("Adverse events"), headings, rows(), expected_rows=ae_count(scope))


def tables_for(kind: str, scope: ReportScope) -> list[Table]:
    """The tables of an export kind (several for the full dataset workbook)."""
    if kind in ("dataset", "report"):
        report = selectors.enrollment_report(scope)
        flow = selectors.consort_flow(scope, report)
        tables = [
            enrollment_table(scope, report),
            screen_failures_table(scope, report),
            enrollment_by_month_table(scope),
            consort_table(scope, flow),
        ]
        if kind == "dataset":
            tables += [subjects_table(scope), visits_table(scope), adverse_events_table(scope)]
        return tables
    builders = {
        "enrollment": enrollment_table,
        "screen_failures": screen_failures_table,
        "enrollment_by_month": enrollment_by_month_table,
        "consort": consort_table,
        "subjects": subjects_table,
        "visits": visits_table,
        "adverse_events": adverse_events_table,
    }
    return [builders[kind](scope)]


class Progress:
    """Counts written rows and reports whole percentages, at most once per percent."""

    def __init__(self, expected: int, report: ProgressCallback | None):
        self.expected = max(expected, 1)
        self.report = report
        self.done = 0
        self.last = -1

    def step(self, rows: int = 1) -> None:
        self.done += rows
        if self.report is None:
            return
        percent = min(99, self.done * 100 // self.expected)
        if percent > self.last:
            self.last = percent
            self.report(percent)


def expected_rows(tables: list[Table]) -> int:
    return sum(table.expected_rows or 10 for table in tables)


# --- CSV ---------------------------------------------------------------------------------------


def _copy_csv_rows(table: Table, stream, counter: Progress) -> int:
    """Stream the table's rows as PostgreSQL formats them. COPY hands over one row per chunk;
    its line end becomes the CRLF the rest of the file (and RFC 4180) uses, leaving line breaks
    inside quoted cells as they are, as Python's csv writer does."""
    rows = 0

    def flush(batch: list) -> None:
        # Whole rows only, so the batch decodes on its own; one write per batch, not per row.
        stream.write(b"".join(batch).decode("utf-8"))
        batch.clear()

    for sql, parameters in table.copy_query.blocks():
        block_rows = 0
        batch = []
        with connection.cursor() as django_cursor:
            with django_cursor.cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", parameters) as copy:
                for row in copy:
                    batch.append(row[:-1])
                    batch.append(b"\r\n")
                    if len(batch) >= 2000:
                        flush(batch)
                    block_rows += 1
        flush(batch)
        # Only now may the progress callback use the connection.
        counter.step(block_rows)
        rows += block_rows
    return rows


# Listings a script reads: their CSV starts with the heading row (issue 19: `pandas.read_csv`
# with no options failed on the stamp lines). Who exported them, when and from which data is on
# the export's row in the audit trail and in the download's X-Data-Version header.
LISTING_KEYS = frozenset({"subjects", "visits", "adverse_events"})


def write_csv(
    tables: list[Table], stream, stamp: Stamp, progress: ProgressCallback | None = None, *, use_copy: bool = True
) -> int:
    """A byte order mark (Excel on Windows reads UTF-8 only with one), the stamp lines (starting
    with '#') unless every table is a listing, then per table its heading row and rows. Returns
    the number of data rows written. A table with a `copy_query` is streamed from COPY unless
    `use_copy` is False (then from its Python rows; a test holds the two equal)."""
    writer = csv.writer(stream)
    counter = Progress(expected_rows(tables), progress)
    stream.write("\ufeff")
    stamped = not all(table.key in LISTING_KEYS for table in tables)
    for line in stamp.lines() if stamped else ():
        # Written as they are (not as a CSV cell), so every stamp line starts with '#'.
        stream.write("# " + line.replace("\r", " ").replace("\n", " ") + "\r\n")
    rows_written = 0
    for index, table in enumerate(tables):
        if len(tables) > 1:
            if index:
                writer.writerow([])
            stream.write("# " + table.title + "\r\n")
        writer.writerow([safe_cell(heading) for heading in table.headings])
        if use_copy and table.copy_query is not None:
            rows_written += _copy_csv_rows(table, stream, counter)
            continue
        for row in table.rows:
            writer.writerow([safe_cell(value) for value in row])
            rows_written += 1
            counter.step()
    return rows_written


# --- XLSX --------------------------------------------------------------------------------------


def write_xlsx(tables: list[Table], path, stamp: Stamp, progress: ProgressCallback | None = None) -> int:
    """A write-only workbook (rows go to disk as they come): an "Export" sheet with the stamp,
    then one sheet per table."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    workbook.properties.creator = stamp.exported_by
    workbook.properties.title = f"{stamp.trial} export {stamp.export_id or ''}".strip()
    workbook.properties.description = " | ".join(stamp.lines())
    about = workbook.create_sheet(gettext("Export")[:31])
    for line in stamp.lines():
        about.append([safe_cell(line)])
    counter = Progress(expected_rows(tables), progress)
    rows_written = 0
    for table in tables:
        sheet = workbook.create_sheet(_sheet_title(table.title))
        sheet.append([safe_cell(heading) for heading in table.headings])
        for row in table.rows:
            sheet.append([safe_cell(value) for value in row])
            rows_written += 1
            counter.step()
    workbook.save(path)
    return rows_written


def _sheet_title(title: str) -> str:
    for character in "[]:*?/\\":
        title = title.replace(character, " ")
    return title[:31]


# --- CDISC ODM 1.3.2 ---------------------------------------------------------------------------

ODM_NAMESPACE = "http://www.cdisc.org/ns/odm/v1.3"


def oid_part(value: str) -> str:
    """Visit codes and site codes as OID-safe (ASCII) text."""
    return "".join(
        character if (character.isascii() and character.isalnum()) or character in "._-" else "_" for character in value
    )


# Attribute values are always double-quoted, with the same escapes in Python and in SQL (below).
# A backslash is written as a character reference too, so that nothing in a subject's XML is
# special to any transport it passes through.
_XML_ATTRIBUTE_ESCAPES = (
    ("&", "&amp;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    ('"', "&quot;"),
    ("\n", "&#10;"),
    ("\r", "&#13;"),
    ("\t", "&#9;"),
    ("\\", "&#92;"),
)


def xml_attribute(value) -> str:
    text = str(value)
    for character, reference in _XML_ATTRIBUTE_ESCAPES:
        if character in text:
            text = text.replace(character, reference)
    return '"' + text + '"'


def _attrs(**attributes) -> str:
    return "".join(
        f" {name.replace('__', ':')}={xml_attribute(value)}" for name, value in attributes.items() if value is not None
    )


# --- ODM subjects as SQL -------------------------------------------------------------------------
#
# Writing 100,000 subjects with their answers and visits element by element in Python took a
# minute. PostgreSQL builds each subject's <SubjectData> instead, with the same escapes and the
# same element order as `OdmWriter._write_subject`; a test holds the two outputs equal.


def _sql_xml_attribute(expression: str) -> str:
    escaped = expression
    for character, reference in _XML_ATTRIBUTE_ESCAPES:
        literal = {"\n": "E'\\n'", "\r": "E'\\r'", "\t": "E'\\t'", "\\": "E'\\\\'"}.get(character)
        literal = literal or "'" + character.replace("'", "''") + "'"
        escaped = f"replace({escaped}, {literal}, '{reference}')"
    return f"""('"' || {escaped} || '"')"""


def _sql_oid_part(expression: str) -> str:
    return f"regexp_replace({expression}, '[^A-Za-z0-9._-]', '_', 'g')"


def _sql_item(item_oid_sql: str, value: str) -> str:
    """One <ItemData>, or nothing for an empty value (as `_item_group`)."""
    return (
        f"CASE WHEN nullif({value}, '') IS NULL THEN '' "
        f"""ELSE '<ItemData ItemOID="' || {item_oid_sql} || '" Value=' || {_sql_xml_attribute(value)} || '/>' END"""
    )


def _sql_group(oid: str, items: list[tuple[str, str]]) -> str:
    inner = " || ".join(_sql_item(f"'{item_oid}'", value) for item_oid, value in items)
    return f"""'<ItemGroupData ItemGroupOID="{oid}">' || {inner} || '</ItemGroupData>'"""


def odm_subjects_query(scope: ReportScope, criteria_codes: list[str]) -> tuple[str, list]:
    """One row per screening in scope, in id order: its whole <SubjectData> element and a newline."""
    visit_table = selectors._visit_model()._meta.db_table
    screening = _sql_group(
        "IG.SCREENING",
        [
            ("IT.SITE", "st.code"),
            ("IT.SCREENING_DATE", _sql_date("s.screening_date")),
            ("IT.SEX", "s.sex"),
            ("IT.AGE", f"{_SQL_AGE}::text"),
            ("IT.CONSENT_DATE", _sql_date(_SQL_CONSENT_DATE)),
            ("IT.OUTCOME", "s.outcome"),
            ("IT.FAILED_CRITERIA", _SQL_FAILED_CRITERIA),
            ("IT.UNANSWERED_CRITERIA", _SQL_UNANSWERED_CRITERIA),
        ],
    )
    eligibility_item = _sql_item(f"'IT.ELIG.' || {_sql_oid_part('a.criterion_code')}", "a.answer")
    eligibility = (
        f"""coalesce((SELECT '<ItemGroupData ItemGroupOID="IG.ELIGIBILITY">' || string_agg({eligibility_item}, '' ORDER BY a.id)"""
        " || '</ItemGroupData>' FROM enrollment_eligibilityanswer a WHERE a.screening_id = s.id"
        " AND nullif(a.answer, '') IS NOT NULL AND a.criterion_code = ANY(%s)), '')"
    )
    randomization_items = [
        ("IT.SCREENING_NUMBER", "p.screening_number"),
        ("IT.RANDOMIZATION_NUMBER", "p.randomization_number"),
        ("IT.RANDOMIZED_AT", """to_char(p.randomized_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')"""),
        ("IT.STATUS", "p.status"),
        ("IT.WITHDRAWN_ON", _sql_date("w.withdrawn_on")),
    ]
    joins = [
        "JOIN trialsite_site st ON st.id = s.site_id",
        "LEFT JOIN enrollment_participant p ON p.screening_id = s.id",
        "LEFT JOIN enrollment_withdrawal w ON w.participant_id = p.screening_id",
    ]
    if scope.unblinded:
        randomization_items.append(("IT.ARM", "a.code"))
        joins += [
            "LEFT JOIN randomization_slot sl ON sl.participant_id = p.screening_id",
            "LEFT JOIN trialsite_arm a ON a.id = sl.arm_id",
        ]
    randomization = (
        "CASE WHEN nullif(p.screening_number, '') IS NULL THEN '' ELSE "
        f"""'<StudyEventData StudyEventOID="{OdmWriter.STUDY_EVENT_RANDOMIZATION}"><FormData FormOID="F.RANDOMIZATION">'"""
        f" || {_sql_group('IG.RANDOMIZATION', randomization_items)} || '</FormData></StudyEventData>' END"
    )
    visit_group = _sql_group(
        "IG.VISIT",
        [
            ("IT.VISIT_KIND", "v.kind"),
            ("IT.VISIT_CYCLE", "v.cycle::text"),
            ("IT.VISIT_TARGET_DATE", _sql_date("v.target_date")),
            ("IT.VISIT_WINDOW_START", _sql_date("v.window_start")),
            ("IT.VISIT_WINDOW_END", _sql_date("v.window_end")),
            ("IT.VISIT_STATUS", "v.status"),
            ("IT.VISIT_DATE", _sql_date("v.actual_date")),
        ],
    )
    visit_event_oid = _sql_xml_attribute("'SE.VISIT.' || " + _sql_oid_part("v.code"))
    visits = (
        "coalesce((SELECT string_agg('<StudyEventData StudyEventOID=' || "
        f"{visit_event_oid}"
        f"""|| '><FormData FormOID="F.VISIT">' || {visit_group} || '</FormData></StudyEventData>', '' """
        f"ORDER BY v.target_date, v.id) FROM {visit_table} v WHERE v.participant_id = s.id AND v.site_id = ANY(%s)), '')"
    )
    location_oid = _sql_xml_attribute("'LOC.' || " + _sql_oid_part("st.code"))
    adverse_events = _sql_adverse_events()
    subject = (
        f"'<SubjectData SubjectKey=' || {_sql_xml_attribute(_SQL_SUBJECT_KEY)} || '>'"
        f" || '<SiteRef LocationOID=' || {location_oid} || '/>'"
        f"""|| '<StudyEventData StudyEventOID="{OdmWriter.STUDY_EVENT_SCREENING}"><FormData FormOID="F.SCREENING">'"""
        f" || {screening} || {eligibility} || '</FormData></StudyEventData>'"
        f" || {randomization} || {visits} || {adverse_events} || '</SubjectData>' || E'\\n'"
    )
    sql = f"SELECT {subject} FROM enrollment_screening s {' '.join(joins)} WHERE s.site_id = ANY(%s) ORDER BY s.id"
    site_ids = list(scope.site_ids)
    return sql, [criteria_codes, site_ids, site_ids, site_ids]


def _sql_meddra_codes() -> str:
    """The CTCAE table's MedDRA codes as a jsonb literal (our own constants: term codes and
    numbers), so the term's code is looked up in the query without a parameter per use."""
    from safety.ctcae import TERMS

    codes = json.dumps({code: str(term.meddra_code) for code, term in TERMS.items() if term.meddra_code})
    return "'" + codes.replace("'", "''") + "'::jsonb"


def _sql_yes_no(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 'yes' ELSE 'no' END"


def _sql_adverse_events() -> str:
    """The subject's AE records as one repeating item group each, in `OdmWriter._ae_items`'s
    order, inside one SE.AE event; nothing when the subject has none. Parameter: the site ids."""
    from safety.models import Seriousness

    items = [
        ("IT.AE_SEQUENCE", "ae.sequence::text"),
        ("IT.AE_FOLLOWS", "f.sequence::text"),
        ("IT.AE_TERM", "ae.term"),
        ("IT.AE_MEDDRA", f"({_sql_meddra_codes()} ->> ae.term)"),
        ("IT.AE_TERM_TEXT", "ae.term_text"),
        ("IT.AE_GRADE", "ae.grade::text"),
        ("IT.AE_ONSET_DATE", _sql_date("ae.onset_date")),
        ("IT.AE_RESOLUTION_DATE", _sql_date("ae.resolution_date")),
        ("IT.AE_SERIOUS", _sql_yes_no("ae.serious")),
        *[
            (f"IT.AE_SER_{criterion.value.upper()}", _sql_yes_no(f"'{criterion.value}' = ANY(ae.seriousness)"))
            for criterion in Seriousness
        ],
        ("IT.AE_RELATION_INFUSION", "ae.relation_infusion"),
        ("IT.AE_RELATION_TABLETS", "ae.relation_tablets"),
        ("IT.AE_ACTION_INFUSION", "ae.action_infusion"),
        ("IT.AE_ACTION_TABLETS", "ae.action_tablets"),
        ("IT.AE_OUTCOME", "ae.outcome"),
        ("IT.AE_SPECIAL_INTEREST", _sql_yes_no("ae.special_interest")),
        ("IT.AE_VERSION", "pv.version"),
    ]
    inner = " || ".join(_sql_item(f"'{item_oid}'", value) for item_oid, value in items)
    group = (
        """'<ItemGroupData ItemGroupOID="IG.AE" ItemGroupRepeatKey="' || ae.repeat_key || '">' """
        f"|| {inner} || '</ItemGroupData>'"
    )
    return (
        f"""coalesce((SELECT '<StudyEventData StudyEventOID="{OdmWriter.STUDY_EVENT_AE}"><FormData FormOID="F.AE">'"""
        f" || string_agg({group}, '' ORDER BY ae.repeat_key) || '</FormData></StudyEventData>'"
        " FROM (SELECT *, row_number() OVER (ORDER BY sequence, id) AS repeat_key FROM safety_adverseevent"
        " WHERE participant_id = s.id AND site_id = ANY(%s)) AS ae"
        " LEFT JOIN safety_adverseevent f ON f.id = ae.follows_id"
        " LEFT JOIN trialsite_protocolversion pv ON pv.id = ae.protocol_version_id), '')"
    )


class OdmWriter:
    """Writes ODM incrementally to a text stream: metadata first, then one SubjectData per
    screening, merged in id order with its eligibility answers and visits."""

    STUDY_EVENT_SCREENING = "SE.SCREENING"
    STUDY_EVENT_RANDOMIZATION = "SE.RANDOMIZATION"
    STUDY_EVENT_AE = "SE.AE"

    def __init__(self, scope: ReportScope, stream, stamp: Stamp):
        self.scope = scope
        self.stream = stream
        self.stamp = stamp
        self.trial = scope.trial
        self.study_oid = f"ST.{oid_part(self.trial.nct_id)}"
        self.mdv_oid = "MDV.1"
        self.criteria = list(self.trial.protocol.eligibility.criteria)

    def write(self, progress: ProgressCallback | None = None, *, use_sql: bool = True) -> int:
        """`use_sql` False builds the subjects in Python (the reference the SQL is tested against)."""
        visit_codes = self._visit_codes()
        expected = subject_count(self.scope) + (0 if use_sql else visit_count(self.scope))
        counter = Progress(expected, progress)
        w = self.stream.write
        created = self.stamp.exported_at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        w('<?xml version="1.0" encoding="UTF-8"?>\n')
        w("<!-- " + escape(" | ".join(self.stamp.lines())).replace("--", "- -") + " -->\n")
        w(
            "<ODM"
            + _attrs(
                xmlns=ODM_NAMESPACE,
                FileType="Snapshot",
                FileOID=f"FILE.{oid_part(self.trial.nct_id)}.EXPORT{self.stamp.export_id or 0}.V{self.stamp.data_version}",
                CreationDateTime=created,
                AsOfDateTime=created,
                ODMVersion="1.3.2",
                Originator=self.stamp.exported_by,
                SourceSystem="trialsite",
                SourceSystemVersion=f"data-version-{self.stamp.data_version}",
                Description=" | ".join(self.stamp.lines()),
            )
            + ">\n"
        )
        self._write_study(visit_codes)
        self._write_admin_data()
        w("<ClinicalData" + _attrs(StudyOID=self.study_oid, MetaDataVersionOID=self.mdv_oid) + ">\n")
        if use_sql:
            subjects = self._write_subjects_from_sql(counter)
            w("</ClinicalData>\n</ODM>\n")
            return subjects
        subjects = 0
        answers = _grouped(
            EligibilityAnswer.objects.filter(site_id__in=self.scope.site_ids)
            .order_by("screening_id", "pk")
            .values("screening_id", "criterion_code", "answer")
            .iterator(chunk_size=CHUNK),
            "screening_id",
        )
        visits = _grouped(visit_values(self.scope), "participant_id")
        adverse_events = _grouped(ae_values(self.scope), "participant_id")
        for subject in subject_values(self.scope):
            own_answers = answers.take(subject["id"])
            own_visits = visits.take(subject["id"])
            self._write_subject(subject, own_answers, own_visits, adverse_events.take(subject["id"]))
            subjects += 1
            counter.step(1 + len(own_visits))
        w("</ClinicalData>\n</ODM>\n")
        return subjects

    def _write_subjects_from_sql(self, counter: Progress) -> int:
        sql, parameters = odm_subjects_query(self.scope, [criterion.code for criterion in self.criteria])
        subjects = 0
        # A server-side cursor: the subjects are fetched a chunk at a time, and the progress
        # callback may use the connection between chunks.
        with connection.chunked_cursor() as cursor:
            cursor.execute(sql, parameters)
            while chunk := cursor.fetchmany(CHUNK):
                self.stream.write("".join(row[0] for row in chunk))
                subjects += len(chunk)
                counter.step(len(chunk))
        return subjects

    def _visit_codes(self) -> list[str]:
        """Every visit code used in scope, in schedule order (one StudyEventDef each)."""
        from django.db.models import Min

        Visit = selectors._visit_model()
        return list(
            Visit.objects.filter(site_id__in=self.scope.site_ids)
            .values("code")
            .annotate(first=Min("target_date"), cycle=Min("cycle"))
            .order_by("first", "code")
            .values_list("code", flat=True)
        )

    def _items(self) -> dict[str, list[tuple[str, str, str, int | None, str | None]]]:
        """Item groups and their items: (OID, name, data type, length, code list OID)."""
        from safety.models import Seriousness

        groups = {
            "IG.SCREENING": [
                ("IT.SITE", "Site", "text", 20, None),
                ("IT.SCREENING_DATE", "Screening date", "date", None, None),
                ("IT.SEX", "Sex", "text", 1, "CL.SEX"),
                ("IT.AGE", "Age at screening (years)", "integer", 3, None),
                ("IT.CONSENT_DATE", "Consent date", "date", None, None),
                ("IT.OUTCOME", "Screening outcome", "text", 12, "CL.OUTCOME"),
                ("IT.FAILED_CRITERIA", "Failed criteria", "text", 200, None),
                ("IT.UNANSWERED_CRITERIA", "Unanswered criteria", "text", 200, None),
            ],
            "IG.ELIGIBILITY": [
                (f"IT.ELIG.{oid_part(c.code)}", c.text[:100], "text", 3, "CL.ANSWER") for c in self.criteria
            ],
            "IG.RANDOMIZATION": [
                ("IT.SCREENING_NUMBER", "Screening number", "text", 20, None),
                ("IT.RANDOMIZATION_NUMBER", "Randomization number", "text", 20, None),
                ("IT.RANDOMIZED_AT", "Randomized at", "datetime", None, None),
                ("IT.STATUS", "Participant status", "text", 12, "CL.STATUS"),
                ("IT.WITHDRAWN_ON", "Withdrawal date", "date", None, None),
            ],
            "IG.VISIT": [
                ("IT.VISIT_KIND", "Visit kind", "text", 20, None),
                ("IT.VISIT_CYCLE", "Cycle", "integer", 3, None),
                ("IT.VISIT_TARGET_DATE", "Target date", "date", None, None),
                ("IT.VISIT_WINDOW_START", "Window opens", "date", None, None),
                ("IT.VISIT_WINDOW_END", "Window closes", "date", None, None),
                ("IT.VISIT_STATUS", "Visit status", "text", 20, "CL.VISIT_STATUS"),
                ("IT.VISIT_DATE", "Visit date", "date", None, None),
            ],
            "IG.AE": [
                ("IT.AE_SEQUENCE", "Event number", "integer", 4, None),
                ("IT.AE_FOLLOWS", "Follows (the event's first record)", "integer", 4, None),
                ("IT.AE_TERM", "CTCAE v5.0 term", "text", 40, "CL.AE_TERM"),
                ("IT.AE_MEDDRA", "MedDRA code", "integer", 8, None),
                ("IT.AE_TERM_TEXT", "Term in words", "text", 200, None),
                ("IT.AE_GRADE", "CTCAE grade", "integer", 1, None),
                ("IT.AE_ONSET_DATE", "Onset date", "date", None, None),
                ("IT.AE_RESOLUTION_DATE", "Resolution date", "date", None, None),
                ("IT.AE_SERIOUS", "Serious", "text", 3, "CL.YES_NO"),
                *[
                    (f"IT.AE_SER_{criterion.value.upper()}", str(criterion.label), "text", 3, "CL.YES_NO")
                    for criterion in Seriousness
                ],
                ("IT.AE_RELATION_INFUSION", "Relation to the study infusion", "text", 20, "CL.AE_RELATION"),
                ("IT.AE_RELATION_TABLETS", "Relation to the study tablets", "text", 20, "CL.AE_RELATION"),
                ("IT.AE_ACTION_INFUSION", "Action taken with the study infusion", "text", 20, "CL.AE_ACTION"),
                ("IT.AE_ACTION_TABLETS", "Action taken with the study tablets", "text", 20, "CL.AE_ACTION"),
                ("IT.AE_OUTCOME", "Outcome", "text", 20, "CL.AE_OUTCOME"),
                ("IT.AE_SPECIAL_INTEREST", "Adverse event of special interest", "text", 3, "CL.YES_NO"),
                # Not "PROTOCOL" in the OID: those letters contain an arm code, and blinded files are checked for those.
                ("IT.AE_VERSION", "Protocol version", "text", 40, None),
            ],
        }
        if self.scope.unblinded:
            groups["IG.RANDOMIZATION"].append(("IT.ARM", "Arm", "text", 20, "CL.ARM"))
        return groups

    def _code_lists(self) -> dict[str, list[tuple[str, str]]]:
        from enrollment.models import Answer, Outcome, ParticipantStatus, Sex
        from safety.ctcae import TERMS
        from safety.models import Action, Relation
        from safety.models import Outcome as AeOutcome

        lists = {
            "CL.SEX": [(value, str(label)) for value, label in Sex.choices],
            "CL.OUTCOME": [(value, str(label)) for value, label in Outcome.choices],
            "CL.ANSWER": [(value, str(label)) for value, label in Answer.choices],
            "CL.STATUS": [(value, str(label)) for value, label in ParticipantStatus.choices],
            "CL.VISIT_STATUS": [(value, str(label)) for value, label in _visit_status_choices()],
            "CL.AE_TERM": [(code, term.term) for code, term in TERMS.items()],
            "CL.YES_NO": [("yes", "Yes"), ("no", "No")],
            "CL.AE_RELATION": [(value, str(label)) for value, label in Relation.choices],
            "CL.AE_ACTION": [(value, str(label)) for value, label in Action.choices],
            "CL.AE_OUTCOME": [(value, str(label)) for value, label in AeOutcome.choices],
        }
        if self.scope.unblinded:
            lists["CL.ARM"] = [(arm.code, arm.name) for arm in self.scope.arms()]
        return lists

    def _write_study(self, visit_codes: list[str]) -> None:
        w = self.stream.write
        w("<Study" + _attrs(OID=self.study_oid) + ">\n<GlobalVariables>")
        w(f"<StudyName>{escape(self.trial.nct_id)}</StudyName>")
        w(f"<StudyDescription>{escape(self.trial.title)}</StudyDescription>")
        w(f"<ProtocolName>{escape(self.trial.sponsor_protocol_id)}</ProtocolName>")
        w("</GlobalVariables>\n")
        w(
            "<MetaDataVersion"
            + _attrs(OID=self.mdv_oid, Name=f"{self.trial.nct_id} {self.trial.definition_sha256[:12]}")
            + ">\n"
        )
        events = [
            (self.STUDY_EVENT_SCREENING, "Screening", ["F.SCREENING"]),
            (self.STUDY_EVENT_RANDOMIZATION, "Randomization", ["F.RANDOMIZATION"]),
        ] + [(f"SE.VISIT.{oid_part(code)}", code, ["F.VISIT"]) for code in visit_codes]
        events.append((self.STUDY_EVENT_AE, "Adverse events", ["F.AE"]))
        w("<Protocol>")
        for order, (oid, _name, _forms) in enumerate(events, start=1):
            w("<StudyEventRef" + _attrs(StudyEventOID=oid, OrderNumber=order, Mandatory="No") + "/>")
        w("</Protocol>\n")
        for oid, name, forms in events:
            # Adverse events are not a scheduled visit: CDISC's "Common" event type.
            kind = "Common" if oid == self.STUDY_EVENT_AE else "Scheduled"
            w("<StudyEventDef" + _attrs(OID=oid, Name=name, Repeating="No", Type=kind) + ">")
            for form in forms:
                w("<FormRef" + _attrs(FormOID=form, Mandatory="No") + "/>")
            w("</StudyEventDef>\n")
        forms = {
            "F.SCREENING": ("Screening", ["IG.SCREENING", "IG.ELIGIBILITY"]),
            "F.RANDOMIZATION": ("Randomization and status", ["IG.RANDOMIZATION"]),
            "F.VISIT": ("Visit", ["IG.VISIT"]),
            "F.AE": ("Adverse events", ["IG.AE"]),
        }
        for oid, (name, groups) in forms.items():
            w("<FormDef" + _attrs(OID=oid, Name=name, Repeating="No") + ">")
            for group in groups:
                w("<ItemGroupRef" + _attrs(ItemGroupOID=group, Mandatory="No") + "/>")
            w("</FormDef>\n")
        items = self._items()
        for group, members in items.items():
            # One AE record per repeat of IG.AE (ItemGroupRepeatKey 1, 2, ... within the subject).
            repeating = "Yes" if group == "IG.AE" else "No"
            w("<ItemGroupDef" + _attrs(OID=group, Name=group.removeprefix("IG.").title(), Repeating=repeating) + ">")
            for item_oid, *_rest in members:
                w("<ItemRef" + _attrs(ItemOID=item_oid, Mandatory="No") + "/>")
            w("</ItemGroupDef>\n")
        for members in items.values():
            for item_oid, name, data_type, length, code_list in members:
                w("<ItemDef" + _attrs(OID=item_oid, Name=name, DataType=data_type, Length=length) + ">")
                if code_list:
                    w("<CodeListRef" + _attrs(CodeListOID=code_list) + "/>")
                w("</ItemDef>\n")
        for oid, entries in self._code_lists().items():
            w("<CodeList" + _attrs(OID=oid, Name=oid.removeprefix("CL."), DataType="text") + ">")
            for value, label in entries:
                w("<CodeListItem" + _attrs(CodedValue=value) + "><Decode>")
                w('<TranslatedText xml:lang="en">' + escape(label) + "</TranslatedText>")
                w("</Decode></CodeListItem>")
            w("</CodeList>\n")
        w("</MetaDataVersion>\n</Study>\n")

    def _write_admin_data(self) -> None:
        w = self.stream.write
        w("<AdminData" + _attrs(StudyOID=self.study_oid) + ">\n")
        effective = self.trial.loaded_at.date().isoformat()
        for site in self.scope.sites:
            w("<Location" + _attrs(OID=f"LOC.{oid_part(site.code)}", Name=site.name, LocationType="Site") + ">")
            w(
                "<MetaDataVersionRef"
                + _attrs(StudyOID=self.study_oid, MetaDataVersionOID=self.mdv_oid, EffectiveDate=effective)
                + "/>"
            )
            w("</Location>\n")
        w("</AdminData>\n")

    def _write_subject(
        self, subject: dict, answers: list[dict], visits: list[dict], adverse_events: list[dict] = ()
    ) -> None:
        w = self.stream.write
        w("<SubjectData" + _attrs(SubjectKey=subject_key(subject)) + ">")
        w("<SiteRef" + _attrs(LocationOID=f"LOC.{oid_part(subject['site__code'])}") + "/>")
        failed, unanswered = reason_codes(subject)
        screening_items = [
            ("IT.SITE", subject["site__code"]),
            ("IT.SCREENING_DATE", subject["screening_date"].isoformat()),
            ("IT.SEX", subject["sex"]),
            ("IT.AGE", age_on(subject["date_of_birth"], subject["screening_date"])),
            ("IT.CONSENT_DATE", _iso(subject["consent_date"])),
            ("IT.OUTCOME", subject["outcome"]),
            ("IT.FAILED_CRITERIA", failed),
            ("IT.UNANSWERED_CRITERIA", unanswered),
        ]
        eligibility_items = [
            (f"IT.ELIG.{oid_part(answer['criterion_code'])}", answer["answer"])
            for answer in answers
            if answer["answer"] and any(c.code == answer["criterion_code"] for c in self.criteria)
        ]
        w(f'<StudyEventData StudyEventOID="{self.STUDY_EVENT_SCREENING}"><FormData FormOID="F.SCREENING">')
        self._item_group("IG.SCREENING", screening_items)
        if eligibility_items:
            self._item_group("IG.ELIGIBILITY", eligibility_items)
        w("</FormData></StudyEventData>")
        if subject["screening_number"]:
            randomization_items = [
                ("IT.SCREENING_NUMBER", subject["screening_number"]),
                ("IT.RANDOMIZATION_NUMBER", subject["randomization_number"] or ""),
                ("IT.RANDOMIZED_AT", _odm_datetime(subject["randomized_at"])),
                ("IT.STATUS", subject["status"]),
                ("IT.WITHDRAWN_ON", _iso(subject["withdrawn_on"])),
            ]
            if self.scope.unblinded:
                randomization_items.append(("IT.ARM", subject.get("arm") or ""))
            w(f'<StudyEventData StudyEventOID="{self.STUDY_EVENT_RANDOMIZATION}"><FormData FormOID="F.RANDOMIZATION">')
            self._item_group("IG.RANDOMIZATION", randomization_items)
            w("</FormData></StudyEventData>")
        for visit in visits:
            w(
                "<StudyEventData"
                + _attrs(StudyEventOID=f"SE.VISIT.{oid_part(visit['code'])}")
                + '><FormData FormOID="F.VISIT">'
            )
            self._item_group(
                "IG.VISIT",
                [
                    ("IT.VISIT_KIND", visit["kind"]),
                    ("IT.VISIT_CYCLE", visit["cycle"] if visit["cycle"] is not None else ""),
                    ("IT.VISIT_TARGET_DATE", _iso(visit["target_date"])),
                    ("IT.VISIT_WINDOW_START", _iso(visit["window_start"])),
                    ("IT.VISIT_WINDOW_END", _iso(visit["window_end"])),
                    ("IT.VISIT_STATUS", visit["status"]),
                    ("IT.VISIT_DATE", _iso(visit["actual_date"])),
                ],
            )
            w("</FormData></StudyEventData>")
        if adverse_events:
            w(f'<StudyEventData StudyEventOID="{self.STUDY_EVENT_AE}"><FormData FormOID="F.AE">')
            for repeat_key, event in enumerate(adverse_events, start=1):
                self._item_group("IG.AE", self._ae_items(event), repeat_key=repeat_key)
            w("</FormData></StudyEventData>")
        w("</SubjectData>\n")

    @staticmethod
    def _ae_items(event: dict) -> list[tuple[str, object]]:
        from safety.ctcae import TERMS
        from safety.models import Seriousness

        term = TERMS.get(event["term"])
        return [
            ("IT.AE_SEQUENCE", event["sequence"]),
            ("IT.AE_FOLLOWS", event["follows__sequence"]),
            ("IT.AE_TERM", event["term"]),
            ("IT.AE_MEDDRA", term.meddra_code if term else None),
            ("IT.AE_TERM_TEXT", event["term_text"]),
            ("IT.AE_GRADE", event["grade"]),
            ("IT.AE_ONSET_DATE", _iso(event["onset_date"])),
            ("IT.AE_RESOLUTION_DATE", _iso(event["resolution_date"])),
            ("IT.AE_SERIOUS", _yes_no(event["serious"])),
            *[
                (f"IT.AE_SER_{criterion.value.upper()}", _yes_no(criterion.value in event["seriousness"]))
                for criterion in Seriousness
            ],
            ("IT.AE_RELATION_INFUSION", event["relation_infusion"]),
            ("IT.AE_RELATION_TABLETS", event["relation_tablets"]),
            ("IT.AE_ACTION_INFUSION", event["action_infusion"]),
            ("IT.AE_ACTION_TABLETS", event["action_tablets"]),
            ("IT.AE_OUTCOME", event["outcome"]),
            ("IT.AE_SPECIAL_INTEREST", _yes_no(event["special_interest"])),
            ("IT.AE_VERSION", event["protocol_version__version"]),
        ]

    def _item_group(self, oid: str, items: list[tuple[str, object]], *, repeat_key: int | None = None) -> None:
        """Empty values are left out: ODM has no item rather than an empty one."""
        w = self.stream.write
        repeat = f' ItemGroupRepeatKey="{repeat_key}"' if repeat_key is not None else ""
        w(f'<ItemGroupData ItemGroupOID="{oid}"{repeat}>')
        for item_oid, value in items:
            if value is None or value == "":
                continue
            w(f'<ItemData ItemOID="{item_oid}" Value={xml_attribute(value)}/>')
        w("</ItemGroupData>")


def _odm_datetime(moment: datetime.datetime | None) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S") if moment else ""


def _visit_status_choices():
    Visit = selectors._visit_model()
    status_field = Visit._meta.get_field("status")
    return status_field.choices or []


class _grouped:
    """Rows of a stream sorted by `key`, handed out per key value in ascending key order, so
    a subject's answers or visits are read alongside the subject without holding them all."""

    def __init__(self, rows: Iterator[dict], key: str):
        self.rows = rows
        self.key = key
        self.pending: dict | None = next(self.rows, None)

    def take(self, value) -> list[dict]:
        taken = []
        while self.pending is not None and self.pending[self.key] <= value:
            if self.pending[self.key] == value:
                taken.append(self.pending)
            self.pending = next(self.rows, None)
        return taken


def write_odm(
    scope: ReportScope, stream, stamp: Stamp, progress: ProgressCallback | None = None, *, use_sql: bool = True
) -> int:
    return OdmWriter(scope, stream, stamp).write(progress, use_sql=use_sql)
