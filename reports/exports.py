"""Export formats. Every format reads the same selectors (reports/selectors.py) and the same row
iterators (below), and writes incrementally: listings are read with `.iterator(chunk_size=2000)`
over `.values()` and written row by row, so memory does not grow with the number of participants.

Blinding: the arm column, the ARM item and the arm code list exist only when the scope is
unblinded; in the blinded variant no query below even joins the arm."""

from __future__ import annotations

import csv
import datetime
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from xml.sax.saxutils import escape

from django.db import connection
from django.db.models import OuterRef, Subquery
from django.utils import timezone, translation
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
        data_version=selectors.data_version(scope) if version is None else version,
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
    # Cells are typed: text, numbers, dates, aware datetimes, None (or "") for empty; each
    # writer formats them (`cell_text` for CSV, `xlsx_cell` for the workbook).
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


class _SqlWithoutMarkup(str):
    """An SQL expression whose text cannot hold a character XML escapes: a date or a number cast
    to text, a timestamp in `_sql_utc`'s format, an OID of `_sql_oid`. Escaping one is eight
    replace() calls for nothing, and there are a dozen such values per visit (bench/export_bench.py).
    Anything built from one with an f-string is a plain str again, so escaped."""


def _sql_text(expression: str) -> str:
    """A text cell: empty as an empty cell, and neutralized like `safe_cell`, from the same
    trigger characters."""
    return f"nullif({defuse_formula_sql(expression)}, '')"


def _sql_date(expression: str) -> str:
    # ISO (YYYY-MM-DD) because the connection's DateStyle is ISO (settings.py); a cast is
    # cheaper than to_char, which matters at a few million dates.
    return _SqlWithoutMarkup(f"({expression})::text")


def _sql_utc(expression: str) -> str:
    return _SqlWithoutMarkup(f"""to_char({expression} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')""")


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
                row["screening_date"],
                row["sex"],
                age_on(row["date_of_birth"], row["screening_date"]),
                row["outcome"],
                failed,
                unanswered,
                row["consent_date"],
                row["screening_number"] or "",
                row["randomization_number"] or "",
                row["randomized_at"],
                row["status"] or "",
                row["withdrawn_on"],
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


def cell_text(value):
    """A listing cell as CSV text. The listings' rows hold typed values (a date, an aware
    datetime, a number, None for empty) so that the workbook can write real dates and numbers;
    as text a date is ISO 8601 and a moment UTC with `Z`, as the COPY path formats them."""
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        return _utc(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


VISIT_FIELDS = [
    "id",
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
                row["cycle"],
                row["target_date"],
                row["window_start"],
                row["window_end"],
                row["status"],
                row["actual_date"],
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
                row["follows__sequence"],
                row["term"],
                # English whatever the reader's language: the term is coded data.
                term.term if term else "",
                term.meddra_code if term and term.meddra_code else None,
                row["term_text"],
                row["grade"],
                row["onset_date"],
                row["resolution_date"],
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
            writer.writerow([safe_cell(cell_text(value)) for value in row])
            rows_written += 1
            counter.step()
    return rows_written


# --- XLSX --------------------------------------------------------------------------------------


# Typed cells (issue 19), as the analysis package's workbook writes them: a date is a date cell, a
# moment a date-and-time cell in UTC to the second (Excel has no time zone: the CSV writes the
# same moment with `Z`, and the column's heading says "(UTC)"), a number a number, and an empty
# value no cell at all.
XLSX_DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"


def xlsx_cell(sheet, value):
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        from openpyxl.cell import WriteOnlyCell

        moment = value.astimezone(datetime.UTC).replace(tzinfo=None, microsecond=0)
        cell = WriteOnlyCell(sheet, value=moment)
        cell.number_format = XLSX_DATETIME_FORMAT
        return cell
    if isinstance(value, datetime.date):
        # openpyxl formats a date cell "yyyy-mm-dd" itself; a WriteOnlyCell per date made a
        # listing of dates 40% slower to write.
        return value
    return safe_cell(value)


def write_xlsx(tables: list[Table], path, stamp: Stamp, progress: ProgressCallback | None = None) -> int:
    """A write-only workbook (rows go to disk as they come): an "Export" sheet with the stamp,
    then one sheet per table, its cells typed (`xlsx_cell`)."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    workbook.properties.creator = stamp.exported_by
    workbook.properties.title = f"{stamp.trial} export {stamp.export_id or ''}".strip()
    workbook.properties.description = " | ".join(stamp.lines())
    about = workbook.create_sheet(gettext("Export")[:31])
    for line in stamp.lines():
        about.append([safe_cell(line)])
    about.append([gettext("Dates are date cells; times are in UTC, as the headings marked (UTC) say.")])
    counter = Progress(expected_rows(tables), progress)
    rows_written = 0
    for table in tables:
        sheet = workbook.create_sheet(_sheet_title(table.title))
        sheet.append([safe_cell(heading) for heading in table.headings])
        for row in table.rows:
            sheet.append([xlsx_cell(sheet, value) for value in row])
            rows_written += 1
            counter.step()
    workbook.save(path)
    return rows_written


def _sheet_title(title: str) -> str:
    for character in "[]:*?/\\":
        title = title.replace(character, " ")
    return title[:31]


# --- CDISC ODM 1.3.2 ---------------------------------------------------------------------------
#
# What the file holds, and the rules it keeps (issue 19):
# - One MetaDataVersion per loaded protocol version (MDV.<version>), each complete in itself:
#   the criteria and forms of that version. A ClinicalData names one MetaDataVersion, so there is
#   one ClinicalData per version, holding the participants whose screening was recorded under it
#   (a screening from before versions were kept counts as the first version's). A participant
#   stays whole in one ClinicalData: records made later under an amendment stay with them, and
#   each AE record names its own version (IT.AE_VERSION).
# - Every datetime carries its zone (UTC, "Z"); dates are plain dates.
# - Texts in both of the system's languages: one TranslatedText per language (en, zh-Hans),
#   where the protocol or the message catalogue has the Chinese.
# - A snapshot of the current values. Each screening, randomization, visit and AE record carries
#   the last AuditRecord of its row (who, when, why, which row and columns), the investigator's
#   e-signature where one was given (eligibility; each signed SAE report version), and each
#   ClinicalData ends with the whole audit trail of its participants' rows (AuditRecords).
#   A blinded file holds only what the blinded audit trail shows (trialsite.selectors
#   `audit_events_for`): no update that changed hidden columns only, only visible column names,
#   and no row of a table that is not in the file (slots, kits, unblindings).
# - The subject key is the permanent key given at first screening; the screening and
#   randomization numbers are items of the randomization form.
# - A death is the IG.DEATH group of the AE form, after the AE records (it is recorded with its
#   fatal event, whose number IT.DEATH_AE gives).

ODM_NAMESPACE = "http://www.cdisc.org/ns/odm/v1.3"
# xml:lang of each language the system speaks, and Django's name for it.
ODM_LANGUAGES = (("en", "en"), ("zh-Hans", "zh-hans"))
ODM_SYSTEM_USER = "USR.SYSTEM"
SIGNATURE_ELIGIBILITY = "SD.ELIGIBILITY"
SIGNATURE_SAE_REPORT = "SD.SAE_REPORT"


def oid_part(value: str) -> str:
    """Visit codes and site codes as OID-safe (ASCII) text."""
    return "".join(
        character if (character.isascii() and character.isalnum()) or character in "._-" else "_" for character in value
    )


# Attribute values are always double-quoted, with the same escapes in Python and in SQL (below).
# A backslash is written as a character reference too, so that nothing in a subject's XML is
# special to any transport it passes through. Element text uses the same escapes.
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


def xml_text(value) -> str:
    text = str(value)
    for character, reference in _XML_ATTRIBUTE_ESCAPES:
        if character in text:
            text = text.replace(character, reference)
    return text


def xml_attribute(value) -> str:
    return '"' + xml_text(value) + '"'


def _attrs(**attributes) -> str:
    return "".join(
        f" {name.replace('__', ':')}={xml_attribute(value)}" for name, value in attributes.items() if value is not None
    )


def _odm_utc(moment: datetime.datetime | None) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def _texts(english: str, chinese: str | None = None) -> dict[str, str]:
    """A text in each language it exists in: `chinese` when given, else the message catalogue's
    translation of `english` when it has one."""
    if chinese is None:
        with translation.override("zh-hans"):
            chinese = gettext(english)
    texts = {"en": english}
    if chinese and chinese != english:
        texts["zh-Hans"] = chinese
    return texts


def _label_texts(label) -> dict[str, str]:
    """A lazily translated label (a model choice) in each language."""
    with translation.override("en"):
        english = str(label)
    with translation.override("zh-hans"):
        chinese = str(label)
    return _texts(english, chinese)


def _translated(texts: dict[str, str]) -> str:
    return "".join(
        f'<TranslatedText xml:lang="{language}">{xml_text(text)}</TranslatedText>' for language, text in texts.items()
    )


def _sql_literal(text: str) -> str:
    # Only our own identifiers (table and column names, codes) are inlined this way.
    return "'" + text.replace("'", "''") + "'"


def _sql_text_array(values: Iterable[str]) -> str:
    return "ARRAY[" + ", ".join(_sql_literal(value) for value in values) + "]::text[]"


# The person's permanent key, given at first screening and never changed: repeated imports of
# successive files find the same person under the same key.
_SQL_ODM_SUBJECT_KEY = "s.subject_key"


@dataclass(frozen=True)
class OdmVersion:
    """A protocol version as a MetaDataVersion: its OID, name, row id and typed protocol."""

    oid: str
    name: str
    pk: int | None
    effective: str
    protocol: object


# --- Audit records and signatures, in SQL and in Python alike --------------------------------


def odm_audited_tables() -> list[str]:
    """The tables whose rows are in the file, so whose audit trail is."""
    return [
        "enrollment_screening",
        "enrollment_consent",
        "enrollment_eligibilityanswer",
        "enrollment_participant",
        "enrollment_withdrawal",
        selectors._visit_model()._meta.db_table,
        "safety_adverseevent",
        "safety_saereport",
        "safety_death",
        "crf_formrecord",
        "crf_itemvalue",
    ]


def _blinded_columns() -> dict[str, frozenset[str]]:
    from trialsite.selectors import UNDECLARED_VISIBLE, blinded_visible_columns_by_table

    by_table = blinded_visible_columns_by_table()
    return {table: by_table.get(table, UNDECLARED_VISIBLE) for table in odm_audited_tables()}


def _sql_visible_event(scope: ReportScope) -> str:
    """The events a reader of the scope's audit trail sees: all when unblinded; for a blinded
    reader not an update that changed only columns hidden from them (as `audit_events_for`)."""
    if scope.unblinded:
        return "TRUE"
    cases = " ".join(
        f"WHEN {_sql_literal(table)} THEN e.changed_fields && {_sql_text_array(sorted(columns - {'id'}))}"
        for table, columns in _blinded_columns().items()
    )
    return f"(e.action <> 'UPDATE' OR CASE e.table_name {cases} ELSE false END)"


def _sql_shown_fields(scope: ReportScope) -> str:
    if scope.unblinded:
        return "array_to_string(e.changed_fields, ',')"
    cases = " ".join(
        f"WHEN {_sql_literal(table)} THEN array_to_string(ARRAY(SELECT changed.field FROM unnest(e.changed_fields)"
        f" WITH ORDINALITY AS changed(field, position) WHERE changed.field = ANY({_sql_text_array(sorted(columns))})"
        " ORDER BY changed.position), ',')"
        for table, columns in _blinded_columns().items()
    )
    return f"CASE e.table_name {cases} ELSE '' END"


def _sql_xml_text(expression: str) -> str:
    escaped = expression
    for character, reference in _XML_ATTRIBUTE_ESCAPES:
        literal = {"\n": "E'\\n'", "\r": "E'\\r'", "\t": "E'\\t'", "\\": "E'\\\\'"}.get(character)
        literal = literal or "'" + character.replace("'", "''") + "'"
        escaped = f"replace({escaped}, {literal}, '{reference}')"
    return escaped


def _sql_audit_record(scope: ReportScope, location_oid: str, *, record_id: str | None = None) -> str:
    """One <AuditRecord> of audit event `e`; `location_oid` is an SQL expression of the quoted OID,
    `record_id` an SQL expression of the number in its ID (no ID without one)."""
    fields = _sql_shown_fields(scope)
    source = f"e.table_name || '#' || e.record_pk || ' ' || e.action || CASE WHEN ({fields}) <> '' THEN ' ' || ({fields}) ELSE '' END"
    identifier = f"""' ID="AR.' || {record_id} || '"'""" if record_id else "''"
    return (
        f"""'<AuditRecord' || {identifier} || '><UserRef UserOID="USR.' || coalesce(e.actor_id::text, 'SYSTEM') || '"/>'"""
        f" || '<LocationRef LocationOID=' || {location_oid} || '/><DateTimeStamp>' || {_sql_utc('e.occurred_at')}"
        " || '</DateTimeStamp>' || CASE WHEN e.reason <> '' THEN '<ReasonForChange>' || "
        f"{_sql_xml_text('e.reason')} || '</ReasonForChange>' ELSE '' END"
        f" || '<SourceID>' || {_sql_xml_text(source)} || '</SourceID></AuditRecord>'"
    )


def _sql_latest_audit(scope: ReportScope, table: str, record_pk: str, location_oid: str) -> str:
    """The row's last audit record the reader may see, or nothing. Uses the (table, pk) index."""
    return (
        f"coalesce((SELECT {_sql_audit_record(scope, location_oid)} FROM trialsite_auditevent e"
        f" WHERE e.table_name = {_sql_literal(table)} AND e.record_pk = ({record_pk})::text"
        f" AND {_sql_visible_event(scope)} ORDER BY e.occurred_at DESC, e.id DESC LIMIT 1), '')"
    )


def _sql_signature(signature_id: str, definition: str) -> str:
    location = _sql_xml_attribute(_sql_oid("LOC.", "ss.code"))
    return (
        f"""coalesce((SELECT '<Signature ID="SG.' || sg.id || '"><UserRef UserOID="USR.' || sg.signer_id || '"/><LocationRef LocationOID='"""
        f""" || {location} || '/><SignatureRef SignatureOID="{definition}"/><DateTimeStamp>' || {_sql_utc("sg.signed_at")}"""
        " || '</DateTimeStamp></Signature>' FROM trialsite_signature sg JOIN trialsite_site ss ON ss.id = sg.site_id"
        f" WHERE sg.id = ({signature_id})), '')"
    )


class _OdmAudit:
    """The same audit records and signatures as the SQL above, from the ORM: the reference the
    SQL is tested against (one query per record, so for tests only)."""

    def __init__(self, scope: ReportScope):
        self.scope = scope
        self.columns = None if scope.unblinded else _blinded_columns()

    def visible(self, event: dict) -> bool:
        if self.columns is None or event["action"] != "UPDATE":
            return True
        return bool(set(event["changed_fields"]) & (self.columns.get(event["table_name"], frozenset()) - {"id"}))

    def record(self, event: dict, location_oid: str, *, record_id: int | None = None) -> str:
        fields = event["changed_fields"]
        if self.columns is not None:
            shown = self.columns.get(event["table_name"], frozenset())
            fields = [field for field in fields if field in shown]
        source = f"{event['table_name']}#{event['record_pk']} {event['action']}" + (
            f" {','.join(fields)}" if fields else ""
        )
        identifier = f' ID="AR.{record_id}"' if record_id is not None else ""
        reason = f"<ReasonForChange>{xml_text(event['reason'])}</ReasonForChange>" if event["reason"] else ""
        return (
            f'<AuditRecord{identifier}><UserRef UserOID="USR.{event["actor_id"] or "SYSTEM"}"/>'
            f"<LocationRef LocationOID={xml_attribute(location_oid)}/><DateTimeStamp>{_odm_utc(event['occurred_at'])}"
            f"</DateTimeStamp>{reason}<SourceID>{xml_text(source)}</SourceID></AuditRecord>"
        )

    def latest(self, table: str, record_pk, location_oid: str) -> str:
        from trialsite.models import AuditEvent

        events = AuditEvent.objects.filter(table_name=table, record_pk=str(record_pk)).order_by("-occurred_at", "-id")
        fields = ["id", "table_name", "record_pk", "action", "changed_fields", "actor_id", "reason", "occurred_at"]
        for event in events.values(*fields):
            if self.visible(event):
                return self.record(event, location_oid)
        return ""

    @staticmethod
    def signature(signature_id: int | None, definition: str) -> str:
        from trialsite.models import Signature

        if signature_id is None:
            return ""
        signature = Signature.objects.select_related("site").get(pk=signature_id)
        return (
            f'<Signature ID="SG.{signature.pk}"><UserRef UserOID="USR.{signature.signer_id}"/>'
            f"<LocationRef LocationOID={xml_attribute('LOC.' + oid_part(signature.site.code))}/>"
            f'<SignatureRef SignatureOID="{definition}"/><DateTimeStamp>{_odm_utc(signature.signed_at)}'
            "</DateTimeStamp></Signature>"
        )


# --- Case report forms ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CrfLayout:
    """Which form records and item values of a protocol version the file holds, in what order:
    visit forms at the visits that carry them, log forms as repeats of their own event, and
    the items a reader of the scope may see (an unblinded-only item only unblinded, from its
    unblinded value)."""

    form_order: tuple[str, ...] = ()
    visit_forms: tuple[str, ...] = ()  # "visit code|form code"
    log_forms: tuple[str, ...] = ()
    items: tuple[str, ...] = ()  # "form code|item code", in form and item order
    unblinded_items: tuple[str, ...] = ()

    @classmethod
    def of(cls, protocol, visit_codes: list[str], unblinded: bool) -> CrfLayout:
        forms = list(protocol.forms)
        items = [(form.code, item) for form in forms for item in form.items if unblinded or not item.unblinded_only]
        return cls(
            form_order=tuple(form.code for form in forms),
            visit_forms=tuple(f"{code}|{form.code}" for code in visit_codes for form in forms if form.carried_at(code)),
            log_forms=tuple(form.code for form in forms if form.kind == "log"),
            items=tuple(f"{form}|{item.code}" for form, item in items),
            unblinded_items=tuple(f"{form}|{item.code}" for form, item in items if item.unblinded_only),
        )


def _crf_value(value) -> str:
    """An item value as PostgreSQL's `#>> '{}'` gives it: JSON scalars as text, booleans as true/false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _sql_crf_form(scope: ReportScope, layout: CrfLayout, location_oid: str, repeat_key: bool) -> str:
    """One <FormData> of form record `r`: its last audit record and its item values."""
    pair = "r.form_code || '|' || iv.item_code"
    value = "iv.value"
    if layout.unblinded_items:
        value = f"CASE WHEN {pair} = ANY({_sql_text_array(layout.unblinded_items)}) THEN iv.unblinded_value ELSE iv.value END"
    item_oid = f"'IT.CRF.' || {_sql_oid_part('r.form_code')} || '.' || {_sql_oid_part('iv.item_code')}"
    text = f"(({value}) #>> '{{}}')"
    # Each value with the last audit record of its row: who entered or changed it, and why.
    item = (
        f"CASE WHEN nullif({text}, '') IS NULL THEN '' "
        f"""ELSE '<ItemData ItemOID="' || {item_oid} || '" Value=' || {_sql_xml_attribute(text)} || '>' || """
        f"{_sql_latest_audit(scope, 'crf_itemvalue', 'iv.id', location_oid)} || '</ItemData>' END"
    )
    items = (
        f"coalesce((SELECT string_agg({item}, ''"
        f" ORDER BY array_position({_sql_text_array(layout.items)}, {pair})) FROM crf_itemvalue iv"
        f" WHERE iv.record_id = r.id AND {pair} = ANY({_sql_text_array(layout.items)})), '')"
    )
    form_oid = _sql_xml_attribute(_sql_oid("F.CRF.", "r.form_code"))
    group_oid = _sql_xml_attribute(_sql_oid("IG.CRF.", "r.form_code"))
    repeat = """ || ' FormRepeatKey="' || r.sequence || '"'""" if repeat_key else ""
    return (
        f"'<FormData FormOID=' || {form_oid}{repeat} || '>' || "
        f"{_sql_latest_audit(scope, 'crf_formrecord', 'r.id', location_oid)}"
        f" || '<ItemGroupData ItemGroupOID=' || {group_oid} || '>' || {items} || '</ItemGroupData></FormData>'"
    )


def _sql_visit_forms(scope: ReportScope, layout: CrfLayout, location_oid: str) -> str:
    """The visit forms of visit `v`, in the protocol's form order."""
    if not layout.visit_forms:
        return "''"
    return (
        f"coalesce((SELECT string_agg({_sql_crf_form(scope, layout, location_oid, False)}, ''"
        f" ORDER BY array_position({_sql_text_array(layout.form_order)}, r.form_code), r.id) FROM crf_formrecord r"
        " WHERE r.participant_id = v.participant_id AND r.visit_code = v.code"
        f" AND (r.visit_code || '|' || r.form_code) = ANY({_sql_text_array(layout.visit_forms)})), '')"
    )


def _sql_log_forms(scope: ReportScope, layout: CrfLayout, location_oid: str) -> str:
    """Subject `s`'s log entries: one SE.LOG.<form> event per log form, an entry per repeat."""
    if not layout.log_forms:
        return "''"
    event_oid = _sql_xml_attribute(_sql_oid("SE.LOG.", "r.form_code"))
    return (
        "coalesce((SELECT string_agg(logged.xml, '' ORDER BY logged.position) FROM ("
        f"SELECT array_position({_sql_text_array(layout.form_order)}, r.form_code) AS position,"
        f" '<StudyEventData StudyEventOID=' || {event_oid} || '>' || string_agg("
        f"{_sql_crf_form(scope, layout, location_oid, True)}, '' ORDER BY r.sequence, r.id) || '</StudyEventData>' AS xml"
        " FROM crf_formrecord r WHERE r.participant_id = s.id AND r.visit_code IS NULL"
        f" AND r.form_code = ANY({_sql_text_array(layout.log_forms)}) GROUP BY r.form_code) AS logged), '')"
    )


# --- ODM subjects as SQL -------------------------------------------------------------------------
#
# Writing 100,000 subjects with their answers and visits element by element in Python took a
# minute. PostgreSQL builds each subject's <SubjectData> instead, with the same escapes and the
# same element order as `OdmWriter._write_subject`; a test holds the two outputs equal.


def _sql_xml_attribute(expression: str) -> str:
    if isinstance(expression, _SqlWithoutMarkup):
        return f"""('"' || {expression} || '"')"""
    return f"""('"' || {_sql_xml_text(expression)} || '"')"""


def _sql_oid_part(expression: str) -> str:
    return f"regexp_replace({expression}, '[^A-Za-z0-9._-]', '_', 'g')"


def _sql_oid(prefix: str, expression: str) -> _SqlWithoutMarkup:
    """`prefix` (an OID's own letters) and the expression's text as `oid_part` makes it."""
    if not re.fullmatch(r"[A-Za-z0-9._-]*", prefix):
        raise ValueError(f"not an OID prefix: {prefix!r}")
    return _SqlWithoutMarkup(f"'{prefix}' || {_sql_oid_part(expression)}")


def _sql_number(expression: str) -> _SqlWithoutMarkup:
    """A number column as text."""
    return _SqlWithoutMarkup(f"({expression})::text")


def _sql_item(item_oid_sql: str, value: str) -> str:
    """One <ItemData>, or nothing for an empty value (as `_item_group`)."""
    return (
        f"CASE WHEN nullif({value}, '') IS NULL THEN '' "
        f"""ELSE '<ItemData ItemOID="' || {item_oid_sql} || '" Value=' || {_sql_xml_attribute(value)} || '/>' END"""
    )


def _sql_group(oid: str, items: list[tuple[str, str]]) -> str:
    inner = " || ".join(_sql_item(f"'{item_oid}'", value) for item_oid, value in items)
    return f"""'<ItemGroupData ItemGroupOID="{oid}">' || {inner} || '</ItemGroupData>'"""


def odm_subjects_query(
    scope: ReportScope,
    criteria_codes: list[str],
    version: OdmVersion | None = None,
    first_version_pk: int | None = None,
    layout: CrfLayout | None = None,
) -> tuple[str, list]:
    """One row per screening in scope (of `version`, when given), in id order: its whole
    <SubjectData> element and a newline."""
    visit_table = selectors._visit_model()._meta.db_table
    location_oid = _sql_xml_attribute(_sql_oid("LOC.", "st.code"))
    screening = _sql_group(
        "IG.SCREENING",
        [
            ("IT.SITE", "st.code"),
            ("IT.SCREENING_DATE", _sql_date("s.screening_date")),
            ("IT.SEX", "s.sex"),
            ("IT.AGE", _sql_number(_SQL_AGE)),
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
        ("IT.RANDOMIZED_AT", _sql_utc("p.randomized_at")),
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
        f" || {_sql_latest_audit(scope, 'enrollment_participant', 'p.screening_id', location_oid)}"
        f" || {_sql_group('IG.RANDOMIZATION', randomization_items)} || '</FormData></StudyEventData>' END"
    )
    visit_group = _sql_group(
        "IG.VISIT",
        [
            ("IT.VISIT_KIND", "v.kind"),
            ("IT.VISIT_CYCLE", _sql_number("v.cycle")),
            ("IT.VISIT_TARGET_DATE", _sql_date("v.target_date")),
            ("IT.VISIT_WINDOW_START", _sql_date("v.window_start")),
            ("IT.VISIT_WINDOW_END", _sql_date("v.window_end")),
            ("IT.VISIT_STATUS", "v.status"),
            ("IT.VISIT_DATE", _sql_date("v.actual_date")),
        ],
    )
    visit_event_oid = _sql_xml_attribute(_sql_oid("SE.VISIT.", "v.code"))
    visit_audit = _sql_latest_audit(scope, visit_table, "v.id", location_oid)
    layout = layout or CrfLayout()
    visit_forms = _sql_visit_forms(scope, layout, location_oid)
    visits = (
        "coalesce((SELECT string_agg('<StudyEventData StudyEventOID=' || "
        f"{visit_event_oid}"
        f"""|| '><FormData FormOID="F.VISIT">' || {visit_audit} || {visit_group} || '</FormData>' || {visit_forms}"""
        " || '</StudyEventData>', '' "
        f"ORDER BY v.target_date, v.id) FROM {visit_table} v WHERE v.participant_id = s.id AND v.site_id = ANY(%s)), '')"
    )
    adverse_events = _sql_adverse_events(scope, location_oid)
    subject = (
        f"'<SubjectData SubjectKey=' || {_sql_xml_attribute(_SQL_ODM_SUBJECT_KEY)} || '>'"
        f" || '<SiteRef LocationOID=' || {location_oid} || '/>'"
        f"""|| '<StudyEventData StudyEventOID="{OdmWriter.STUDY_EVENT_SCREENING}"><FormData FormOID="F.SCREENING">'"""
        f" || {_sql_latest_audit(scope, 'enrollment_screening', 's.id', location_oid)}"
        f" || {_sql_signature('p.eligibility_signature_id', SIGNATURE_ELIGIBILITY)}"
        f" || {screening} || {eligibility} || '</FormData></StudyEventData>'"
        f" || {randomization} || {visits} || {adverse_events} || {_sql_log_forms(scope, layout, location_oid)}"
        " || '</SubjectData>' || E'\\n'"
    )
    site_ids = list(scope.site_ids)
    # The eligibility criteria, then the site ids of the visits, SAE reports, AE records and subjects.
    parameters = [criteria_codes, site_ids, site_ids, site_ids, site_ids]
    condition = ""
    if version is not None and version.pk is not None:
        # Not coalesce(...) = %s: the planner cannot estimate an expression, guessed 0.5% of the
        # screenings, and sorted 20,000 finished SubjectData elements on disk (bench/export_bench.py).
        if version.pk == first_version_pk:
            condition = " AND (s.protocol_version_id = %s OR s.protocol_version_id IS NULL)"
        else:
            condition = " AND s.protocol_version_id = %s"
        parameters += [version.pk]
    sql = (
        f"SELECT {subject} FROM enrollment_screening s {' '.join(joins)} WHERE s.site_id = ANY(%s)"
        f"{condition} ORDER BY s.id"
    )
    return sql, parameters


def _sql_meddra_codes() -> str:
    """The CTCAE table's MedDRA codes as a jsonb literal (our own constants: term codes and
    numbers), so the term's code is looked up in the query without a parameter per use."""
    from safety.ctcae import TERMS

    codes = json.dumps({code: str(term.meddra_code) for code, term in TERMS.items() if term.meddra_code})
    return "'" + codes.replace("'", "''") + "'::jsonb"


def _sql_yes_no(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 'yes' ELSE 'no' END"


def _sql_adverse_events(scope: ReportScope, location_oid: str) -> str:
    """The subject's AE records as one repeating item group each, in `OdmWriter._ae_items`'s
    order, then their SAE report versions and the death, inside one SE.AE event; nothing when the
    subject has no AE record. Parameters: the site ids (of the SAE reports, then of the AEs)."""
    from safety.models import Seriousness

    items = [
        ("IT.AE_SEQUENCE", _sql_number("ae.sequence")),
        ("IT.AE_FOLLOWS", _sql_number("f.sequence")),
        ("IT.AE_TERM", "ae.term"),
        ("IT.AE_MEDDRA", f"({_sql_meddra_codes()} ->> ae.term)"),
        ("IT.AE_TERM_TEXT", "ae.term_text"),
        ("IT.AE_GRADE", _sql_number("ae.grade")),
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
        f"|| {_sql_latest_audit(scope, 'safety_adverseevent', 'ae.id', location_oid)}"
        f" || {inner} || '</ItemGroupData>'"
    )
    return (
        f"""coalesce((SELECT '<StudyEventData StudyEventOID="{OdmWriter.STUDY_EVENT_AE}"><FormData FormOID="F.AE">'"""
        f" || string_agg({group}, '' ORDER BY ae.repeat_key) || {_sql_sae_reports(scope, location_oid)}"
        f" || {_sql_death(scope, location_oid)}"
        " || '</FormData></StudyEventData>'"
        " FROM (SELECT *, row_number() OVER (ORDER BY sequence, id) AS repeat_key FROM safety_adverseevent"
        " WHERE participant_id = s.id AND site_id = ANY(%s)) AS ae"
        " LEFT JOIN safety_adverseevent f ON f.id = ae.follows_id"
        " LEFT JOIN trialsite_protocolversion pv ON pv.id = ae.protocol_version_id), '')"
    )


def _sql_sae_reports(scope: ReportScope, location_oid: str) -> str:
    """Subject `s`'s SAE report versions as repeats of IG.SAE_REPORT, each with its row's last
    audit record and, when the PI signed it, its signature: ODM allows one Signature per
    ItemGroupData, so a version of its own is where each signature goes. Parameter: the site ids."""
    items = [
        ("IT.SAE_AE", _sql_number("r.event_sequence")),
        ("IT.SAE_VERSION", _sql_number("r.version")),
        ("IT.SAE_COMPLETE", _sql_yes_no("r.complete")),
        ("IT.SAE_WRITTEN_AT", _sql_utc("r.written_at")),
    ]
    inner = " || ".join(_sql_item(f"'{item_oid}'", value) for item_oid, value in items)
    group = (
        """'<ItemGroupData ItemGroupOID="IG.SAE_REPORT" ItemGroupRepeatKey="' || r.repeat_key || '">' """
        f"|| {_sql_latest_audit(scope, 'safety_saereport', 'r.id', location_oid)}"
        f" || {_sql_signature('r.signature_id', SIGNATURE_SAE_REPORT)} || {inner} || '</ItemGroupData>'"
    )
    return (
        f"coalesce((SELECT string_agg({group}, '' ORDER BY r.repeat_key) FROM (SELECT report.*,"
        " event.sequence AS event_sequence,"
        " row_number() OVER (ORDER BY event.sequence, report.version, report.id) AS repeat_key"
        " FROM safety_saereport report JOIN safety_adverseevent event ON event.id = report.adverse_event_id"
        " WHERE report.participant_id = s.id AND report.site_id = ANY(%s)) AS r), '')"
    )


def _sql_death(scope: ReportScope, location_oid: str) -> str:
    """Subject `s`'s death as the IG.DEATH group of the AE form (a death is recorded with its
    fatal event, so the form is there), with its row's last audit record; nothing without one."""
    items = [
        ("IT.DEATH_DATE", _sql_date("d.died_on")),
        ("IT.DEATH_CAUSE", "d.cause"),
        ("IT.DEATH_AE", _sql_number("fatal.sequence")),
    ]
    inner = " || ".join(_sql_item(f"'{item_oid}'", value) for item_oid, value in items)
    return (
        f"""coalesce((SELECT '<ItemGroupData ItemGroupOID="IG.DEATH">' || """
        f"{_sql_latest_audit(scope, 'safety_death', 'd.id', location_oid)} || {inner} || '</ItemGroupData>'"
        " FROM safety_death d JOIN safety_adverseevent fatal ON fatal.id = d.adverse_event_id"
        " WHERE d.participant_id = s.id), '')"
    )


# Item data types of the protocol's form items in ODM's words.
_ODM_DATA_TYPES = {
    "text": "text",
    "integer": "integer",
    "decimal": "float",
    "date": "date",
    "choice": "text",
    "yes_no": "boolean",
}


class OdmWriter:
    """Writes ODM incrementally to a text stream: metadata first, then one SubjectData per
    screening, merged in id order with its eligibility answers and visits."""

    STUDY_EVENT_SCREENING = "SE.SCREENING"
    STUDY_EVENT_RANDOMIZATION = "SE.RANDOMIZATION"
    STUDY_EVENT_AE = "SE.AE"

    def __init__(self, scope: ReportScope, stream, stamp: Stamp, *, extension=None):
        self.scope = scope
        self.stream = stream
        self.stamp = stamp
        # Writes vendor-extension elements at the end of the ODM element (reports/archive.py).
        self.extension = extension
        self.trial = scope.trial
        self.study_oid = f"ST.{oid_part(self.trial.nct_id)}"
        self.versions = self._versions()
        self.first_version_pk = self.versions[0].pk
        # AuditRecords written so far: a blinded file numbers them on across its ClinicalData.
        self.audit_records = 0

    def _versions(self) -> list[OdmVersion]:
        from trialsite.protocol_schema import protocol_for

        rows = list(self.trial.protocol_versions.order_by("loaded_at", "id"))
        if not rows:
            effective = self.trial.loaded_at.date().isoformat()
            name = f"{self.trial.nct_id} {self.trial.definition_sha256[:12]}"
            return [OdmVersion("MDV.1", name, None, effective, self.trial.protocol)]
        return [
            OdmVersion(
                oid=f"MDV.{oid_part(row.version)}",
                name=f"{self.trial.nct_id} protocol version {row.version} ({row.sha256[:12]})",
                pk=row.pk,
                effective=(row.effective_date or row.loaded_at.date()).isoformat(),
                protocol=protocol_for(row.definition),
            )
            for row in rows
        ]

    @property
    def mdv_oid(self) -> str:
        """The version in force's MetaDataVersion (the last loaded)."""
        return self.versions[-1].oid

    def file_oid(self, export_id: int | None, data_version: int) -> str:
        # From the export's own row and data version: the same file always has the same OID.
        return f"FILE.{oid_part(self.trial.nct_id)}.EXPORT{export_id or 0}.V{data_version}"

    def _prior_file_oid(self) -> str | None:
        """The FileOID of this trial's previous ODM export of the same sites and blinding."""
        from reports.models import Export, ExportStatus

        if not self.stamp.export_id:
            return None
        prior = (
            Export.objects.filter(
                trial=self.trial,
                format="odm",
                status=ExportStatus.DONE,
                blinded=not self.scope.unblinded,
                # The same sites in any order.
                site_ids__contains=list(self.scope.site_ids),
                site_ids__contained_by=list(self.scope.site_ids),
                pk__lt=self.stamp.export_id,
            )
            .order_by("-pk")
            .values("pk", "data_version")
            .first()
        )
        return self.file_oid(prior["pk"], prior["data_version"] or 0) if prior else None

    def write(self, progress: ProgressCallback | None = None, *, use_sql: bool = True) -> int:
        """`use_sql` False builds the subjects in Python (the reference the SQL is tested against)."""
        visit_codes = self.visit_codes = self._visit_codes()
        expected = subject_count(self.scope) + (0 if use_sql else visit_count(self.scope))
        counter = Progress(expected, progress)
        w = self.stream.write
        created = _odm_utc(self.stamp.exported_at)
        w('<?xml version="1.0" encoding="UTF-8"?>\n')
        w("<!-- " + escape(" | ".join(self.stamp.lines())).replace("--", "- -") + " -->\n")
        w(
            "<ODM"
            + _attrs(
                xmlns=ODM_NAMESPACE,
                FileType="Snapshot",
                Granularity="All",
                Archival="Yes",
                FileOID=self.file_oid(self.stamp.export_id, self.stamp.data_version),
                PriorFileOID=self._prior_file_oid(),
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
        subjects = 0
        audit = None if use_sql else _OdmAudit(self.scope)
        version_of = None
        if not use_sql and self.first_version_pk is not None:
            version_of = {
                pk: version or self.first_version_pk
                for pk, version in Screening.objects.filter(site_id__in=self.scope.site_ids).values_list(
                    "pk", "protocol_version_id"
                )
            }
        for version in self.versions:
            w("<ClinicalData" + _attrs(StudyOID=self.study_oid, MetaDataVersionOID=version.oid) + ">\n")
            if use_sql:
                subjects += self._write_subjects_from_sql(version, counter)
            else:
                subjects += self._write_subjects_from_python(version, version_of, audit, counter)
            self._write_audit_trail(version)
            w("</ClinicalData>\n")
        if self.extension is not None:
            self.extension(self.stream)
        w("</ODM>\n")
        return subjects

    def _write_subjects_from_python(self, version: OdmVersion, version_of, audit: _OdmAudit, counter) -> int:
        criteria = list(version.protocol.eligibility.criteria)
        layout = CrfLayout.of(version.protocol, self.visit_codes, self.scope.unblinded)
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
        keys = dict(Screening.objects.filter(site_id__in=self.scope.site_ids).values_list("pk", "subject_key"))
        for subject in subject_values(self.scope):
            own_answers = answers.take(subject["id"])
            own_visits = visits.take(subject["id"])
            own_events = adverse_events.take(subject["id"])
            if version_of is not None and version_of[subject["id"]] != version.pk:
                continue
            self._write_subject(
                subject,
                own_answers,
                own_visits,
                own_events,
                key=keys[subject["id"]],
                criteria=criteria,
                audit=audit,
                layout=layout,
            )
            subjects += 1
            counter.step(1 + len(own_visits))
        return subjects

    def _write_subjects_from_sql(self, version: OdmVersion, counter: Progress) -> int:
        criteria = [criterion.code for criterion in version.protocol.eligibility.criteria]
        layout = CrfLayout.of(version.protocol, self.visit_codes, self.scope.unblinded)
        sql, parameters = odm_subjects_query(self.scope, criteria, version, self.first_version_pk, layout)
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

    def _audit_trail_query(self, version: OdmVersion, first: int = 1) -> tuple[str, list]:
        """`first`: the number of the version's first AuditRecord in a blinded file."""
        location_oid = _sql_xml_attribute(_sql_oid("LOC.", "st.code"))
        if self.scope.unblinded:
            record_id, parameters = "e.id", []
        else:
            # The record's place in the file, not the event's id: the ids come from one sequence
            # shared with the updates a blinded file leaves out (a SUSAR's expedited report, sent
            # for active product only), so the gap after a participant's records would count them.
            record_id, parameters = "(row_number() OVER (ORDER BY e.occurred_at, e.id) + %s - 1)", [first]
        parameters += [list(self.scope.site_ids), odm_audited_tables()]
        condition = ""
        if version.pk is not None:
            condition = " AND coalesce(s.protocol_version_id, %s) = %s"
            parameters += [self.first_version_pk, version.pk]
        sql = (
            f"SELECT {_sql_audit_record(self.scope, location_oid, record_id=record_id)} FROM trialsite_auditevent e"
            " JOIN enrollment_screening s ON s.id = e.subject_id JOIN trialsite_site st ON st.id = s.site_id"
            f" WHERE s.site_id = ANY(%s) AND e.table_name = ANY(%s) AND {_sql_visible_event(self.scope)}{condition}"
            " ORDER BY e.occurred_at, e.id"
        )
        return sql, parameters

    def _write_audit_trail(self, version: OdmVersion) -> None:
        """Every audit record of the version's participants' rows in the file, oldest first."""
        sql, parameters = self._audit_trail_query(version, first=self.audit_records + 1)
        self.stream.write("<AuditRecords>")
        with connection.chunked_cursor() as cursor:
            cursor.execute(sql, parameters)
            while chunk := cursor.fetchmany(CHUNK):
                self.stream.write("".join(row[0] for row in chunk))
                self.audit_records += len(chunk)
        self.stream.write("</AuditRecords>\n")

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

    def _crf_forms(self, protocol) -> list:
        return list(protocol.forms)

    def _crf_items(self, form) -> list:
        # An unblinded-only item is not even declared in a blinded file.
        return [item for item in form.items if self.scope.unblinded or not item.unblinded_only]

    @staticmethod
    def _unit_oid(unit: str) -> str:
        return f"MU.{oid_part(unit)}"

    def _units(self) -> dict[str, dict[str, str]]:
        """The measurement units of every version's items, by OID."""
        units = {"MU.YEARS": _texts("years", "岁")}
        for version in self.versions:
            for form in self._crf_forms(version.protocol):
                for item in self._crf_items(form):
                    if item.unit:
                        units.setdefault(self._unit_oid(item.unit), _texts(item.unit, item.unit_zh or item.unit))
        return units

    def _items(
        self, protocol
    ) -> tuple[dict[str, list[tuple[str, str, str, int | None, str | None]]], dict[str, dict], dict[str, str]]:
        """Item groups and their items: (OID, name, data type, length, code list OID); each
        item's question in both languages; the unit OID of items that have one."""
        from safety.models import Seriousness

        criteria = list(protocol.eligibility.criteria)
        groups = {
            "IG.SCREENING": [
                ("IT.SITE", "Site", "text", 20, None),
                ("IT.SCREENING_DATE", "Screening date", "date", None, None),
                ("IT.SEX", "Sex", "text", 1, "CL.SEX"),
                ("IT.AGE", "Age at screening", "integer", 3, None),
                ("IT.CONSENT_DATE", "Consent date", "date", None, None),
                ("IT.OUTCOME", "Screening outcome", "text", 12, "CL.OUTCOME"),
                ("IT.FAILED_CRITERIA", "Failed criteria", "text", 200, None),
                ("IT.UNANSWERED_CRITERIA", "Unanswered criteria", "text", 200, None),
            ],
            "IG.ELIGIBILITY": [(f"IT.ELIG.{oid_part(c.code)}", c.text[:100], "text", 3, "CL.ANSWER") for c in criteria],
            "IG.RANDOMIZATION": [
                ("IT.SCREENING_NUMBER", "Screening number", "text", 20, None),
                ("IT.RANDOMIZATION_NUMBER", "Randomization number", "text", 20, None),
                ("IT.RANDOMIZED_AT", "Randomized at (UTC)", "datetime", None, None),
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
                    (f"IT.AE_SER_{criterion.value.upper()}", criterion.label, "text", 3, "CL.YES_NO")
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
            # The SAE report's versions (initial, follow-ups), each with the PI's signature if signed.
            "IG.SAE_REPORT": [
                ("IT.SAE_AE", "Event number (the event's first record)", "integer", 4, None),
                ("IT.SAE_VERSION", "SAE report version", "integer", 3, None),
                ("IT.SAE_COMPLETE", "Report complete", "text", 3, "CL.YES_NO"),
                ("IT.SAE_WRITTEN_AT", "Written at (UTC)", "datetime", None, None),
            ],
            # The participant's death (CDASH's death details), recorded with its fatal event.
            "IG.DEATH": [
                ("IT.DEATH_DATE", "Date of death", "date", None, None),
                ("IT.DEATH_CAUSE", "Cause of death", "text", 2000, None),
                ("IT.DEATH_AE", "Fatal event (its first record's event number)", "integer", 4, None),
            ],
        }
        if self.scope.unblinded:
            groups["IG.RANDOMIZATION"].append(("IT.ARM", "Arm", "text", 20, "CL.ARM"))
        questions = {}
        for members in groups.values():
            for index, (oid, name, *rest) in enumerate(members):
                if isinstance(name, str):
                    questions[oid] = _texts(name)
                else:
                    questions[oid] = _label_texts(name)
                    members[index] = (oid, questions[oid]["en"], *rest)
        for criterion in criteria:
            questions[f"IT.ELIG.{oid_part(criterion.code)}"] = _texts(criterion.text, criterion.text_zh or "")
        units = {"IT.AGE": "MU.YEARS"}
        for form in self._crf_forms(protocol):
            members = []
            for item in self._crf_items(form):
                oid = self._crf_item_oid(form.code, item.code)
                length = item.max_length if item.type == "text" else None
                if item.type == "integer" and item.max is not None:
                    length = len(str(int(abs(item.max)))) + (1 if item.min is not None and item.min < 0 else 0)
                code_list = f"CL.CRF.{oid_part(item.code_list)}" if item.type == "choice" and item.code_list else None
                members.append((oid, item.label[:100], _ODM_DATA_TYPES[item.type], length, code_list))
                questions[oid] = _texts(item.label, item.label_zh or "")
                if item.unit:
                    units[oid] = self._unit_oid(item.unit)
            groups[self._crf_group_oid(form.code)] = members
        return groups, questions, units

    @staticmethod
    def _crf_item_oid(form_code: str, item_code: str) -> str:
        # The codes as the protocol spells them (lower case): upper case could spell an arm code.
        return f"IT.CRF.{oid_part(form_code)}.{oid_part(item_code)}"

    @staticmethod
    def _crf_group_oid(form_code: str) -> str:
        return f"IG.CRF.{oid_part(form_code)}"

    @staticmethod
    def _crf_form_oid(form_code: str) -> str:
        return f"F.CRF.{oid_part(form_code)}"

    def _code_lists(self, protocol) -> dict[str, list[tuple[str, dict[str, str]]]]:
        from enrollment.models import Answer, Outcome, ParticipantStatus, Sex
        from safety.ctcae import TERMS
        from safety.models import Action, Relation
        from safety.models import Outcome as AeOutcome

        def choices(pairs):
            return [(value, _label_texts(label)) for value, label in pairs]

        lists = {
            "CL.SEX": choices(Sex.choices),
            "CL.OUTCOME": choices(Outcome.choices),
            "CL.ANSWER": choices(Answer.choices),
            "CL.STATUS": choices(ParticipantStatus.choices),
            "CL.VISIT_STATUS": choices(_visit_status_choices()),
            "CL.AE_TERM": [(code, _texts(term.term, term.term_zh or "")) for code, term in TERMS.items()],
            "CL.YES_NO": [("yes", _texts("Yes")), ("no", _texts("No"))],
            "CL.AE_RELATION": choices(Relation.choices),
            "CL.AE_ACTION": choices(Action.choices),
            "CL.AE_OUTCOME": choices(AeOutcome.choices),
        }
        for code_list in protocol.code_lists:
            lists[f"CL.CRF.{oid_part(code_list.code)}"] = [
                (str(entry.code), _texts(entry.label, entry.label_zh or "")) for entry in code_list.entries
            ]
        if self.scope.unblinded:
            names_zh = {arm.code: arm.name_zh for arm in protocol.arms}
            lists["CL.ARM"] = [(arm.code, _texts(arm.name, names_zh.get(arm.code) or "")) for arm in self.scope.arms()]
        return lists

    def _write_study(self, visit_codes: list[str]) -> None:
        w = self.stream.write
        w("<Study" + _attrs(OID=self.study_oid) + ">\n<GlobalVariables>")
        w(f"<StudyName>{escape(self.trial.nct_id)}</StudyName>")
        w(f"<StudyDescription>{escape(self.trial.title)}</StudyDescription>")
        w(f"<ProtocolName>{escape(self.trial.sponsor_protocol_id)}</ProtocolName>")
        w("</GlobalVariables>\n<BasicDefinitions>")
        for oid, texts in self._units().items():
            w("<MeasurementUnit" + _attrs(OID=oid, Name=texts["en"]) + "><Symbol>" + _translated(texts) + "</Symbol>")
            w("</MeasurementUnit>")
        w("</BasicDefinitions>\n")
        for version in self.versions:
            self._write_metadata_version(version, visit_codes)
        w("</Study>\n")

    def _write_metadata_version(self, version: OdmVersion, visit_codes: list[str]) -> None:
        w = self.stream.write
        protocol = version.protocol
        forms = self._crf_forms(protocol)
        w("<MetaDataVersion" + _attrs(OID=version.oid, Name=version.name) + ">\n")
        crf_at_visit = {
            code: [self._crf_form_oid(form.code) for form in forms if form.carried_at(code)] for code in visit_codes
        }
        events = [
            (self.STUDY_EVENT_SCREENING, _texts("Screening"), ["F.SCREENING"]),
            (self.STUDY_EVENT_RANDOMIZATION, _texts("Randomization"), ["F.RANDOMIZATION"]),
        ] + [(f"SE.VISIT.{oid_part(code)}", {"en": code}, ["F.VISIT", *crf_at_visit[code]]) for code in visit_codes]
        events.append((self.STUDY_EVENT_AE, _texts("Adverse events"), ["F.AE"]))
        events += [
            (f"SE.LOG.{oid_part(form.code)}", _texts(form.name, form.name_zh or ""), [self._crf_form_oid(form.code)])
            for form in forms
            if form.kind == "log"
        ]
        w("<Protocol>")
        for order, (oid, _name, _forms) in enumerate(events, start=1):
            w("<StudyEventRef" + _attrs(StudyEventOID=oid, OrderNumber=order, Mandatory="No") + "/>")
        w("</Protocol>\n")
        for oid, names, form_oids in events:
            # Adverse events and logs are not a scheduled visit: CDISC's "Common" event type.
            kind = "Common" if oid == self.STUDY_EVENT_AE or oid.startswith("SE.LOG.") else "Scheduled"
            w("<StudyEventDef" + _attrs(OID=oid, Name=names["en"], Repeating="No", Type=kind) + ">")
            if len(names) > 1:
                w("<Description>" + _translated(names) + "</Description>")
            for form in form_oids:
                w("<FormRef" + _attrs(FormOID=form, Mandatory="No") + "/>")
            w("</StudyEventDef>\n")
        form_defs = {
            "F.SCREENING": (_texts("Screening"), ["IG.SCREENING", "IG.ELIGIBILITY"], "No"),
            "F.RANDOMIZATION": (_texts("Randomization and status"), ["IG.RANDOMIZATION"], "No"),
            "F.VISIT": (_texts("Visit"), ["IG.VISIT"], "No"),
            "F.AE": (_texts("Adverse events"), ["IG.AE", "IG.SAE_REPORT", "IG.DEATH"], "No"),
        }
        for form in forms:
            form_defs[self._crf_form_oid(form.code)] = (
                _texts(form.name, form.name_zh or ""),
                [self._crf_group_oid(form.code)],
                "Yes" if form.kind == "log" else "No",
            )
        for oid, (names, groups, repeating) in form_defs.items():
            w("<FormDef" + _attrs(OID=oid, Name=names["en"], Repeating=repeating) + ">")
            w("<Description>" + _translated(names) + "</Description>")
            for group in groups:
                w("<ItemGroupRef" + _attrs(ItemGroupOID=group, Mandatory="No") + "/>")
            w("</FormDef>\n")
        items, questions, units = self._items(protocol)
        for group, members in items.items():
            # One AE record per repeat of IG.AE, one SAE report version per repeat of IG.SAE_REPORT
            # (ItemGroupRepeatKey 1, 2, ... within the subject).
            repeating = "Yes" if group in ("IG.AE", "IG.SAE_REPORT") else "No"
            w("<ItemGroupDef" + _attrs(OID=group, Name=group.removeprefix("IG.").title(), Repeating=repeating) + ">")
            for item_oid, *_rest in members:
                w("<ItemRef" + _attrs(ItemOID=item_oid, Mandatory="No") + "/>")
            w("</ItemGroupDef>\n")
        for members in items.values():
            for item_oid, name, data_type, length, code_list in members:
                w("<ItemDef" + _attrs(OID=item_oid, Name=name, DataType=data_type, Length=length) + ">")
                w("<Question>" + _translated(questions[item_oid]) + "</Question>")
                if item_oid in units:
                    w("<MeasurementUnitRef" + _attrs(MeasurementUnitOID=units[item_oid]) + "/>")
                if code_list:
                    w("<CodeListRef" + _attrs(CodeListOID=code_list) + "/>")
                w("</ItemDef>\n")
        for oid, entries in self._code_lists(protocol).items():
            w("<CodeList" + _attrs(OID=oid, Name=oid.removeprefix("CL."), DataType="text") + ">")
            for value, texts in entries:
                w(
                    "<CodeListItem"
                    + _attrs(CodedValue=value)
                    + "><Decode>"
                    + _translated(texts)
                    + "</Decode></CodeListItem>"
                )
            w("</CodeList>\n")
        w("</MetaDataVersion>\n")

    def _users(self) -> list[dict]:
        """The staff who appear in the file: whoever made a visible audited change to its rows, and
        the signers of its signatures. Names only: no e-mail, no password."""
        from django.contrib.auth import get_user_model

        site_ids = list(self.scope.site_ids)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT e.actor_id FROM trialsite_auditevent e JOIN enrollment_screening s ON s.id = e.subject_id"
                f" WHERE s.site_id = ANY(%s) AND e.table_name = ANY(%s) AND e.actor_id IS NOT NULL AND {_sql_visible_event(self.scope)}"
                " UNION SELECT sg.signer_id FROM trialsite_signature sg WHERE sg.id IN"
                " (SELECT eligibility_signature_id FROM enrollment_participant WHERE site_id = ANY(%s)"
                " UNION SELECT signature_id FROM safety_saereport WHERE site_id = ANY(%s))",
                [site_ids, odm_audited_tables(), site_ids, site_ids],
            )
            ids = [row[0] for row in cursor.fetchall()]
        User = get_user_model()
        return list(User.objects.filter(pk__in=ids).order_by("pk").values("pk", "username", "first_name", "last_name"))

    def _write_admin_data(self) -> None:
        w = self.stream.write
        w("<AdminData" + _attrs(StudyOID=self.study_oid) + ">\n")
        w("<User" + _attrs(OID=ODM_SYSTEM_USER, UserType="Other") + "><LoginName>system</LoginName>")
        w("<FullName>trialsite (database triggers and scheduled jobs)</FullName></User>\n")
        for user in self._users():
            full_name = f"{user['first_name']} {user['last_name']}".strip()
            w("<User" + _attrs(OID=f"USR.{user['pk']}") + f"><LoginName>{xml_text(user['username'])}</LoginName>")
            if full_name:
                w(f"<FullName>{xml_text(full_name)}</FullName>")
            w("</User>\n")
        for site in self.scope.sites:
            w("<Location" + _attrs(OID=f"LOC.{oid_part(site.code)}", Name=site.name, LocationType="Site") + ">")
            for version in self.versions:
                w(
                    "<MetaDataVersionRef"
                    + _attrs(StudyOID=self.study_oid, MetaDataVersionOID=version.oid, EffectiveDate=version.effective)
                    + "/>"
                )
            w("</Location>\n")
        signature_defs = [
            (
                SIGNATURE_ELIGIBILITY,
                "The investigator confirms the participant's eligibility verdict.",
            ),
            (
                SIGNATURE_SAE_REPORT,
                "The investigator signs a complete version of the serious adverse event report.",
            ),
        ]
        for oid, meaning in signature_defs:
            w("<SignatureDef" + _attrs(OID=oid, Methodology="Electronic") + f"><Meaning>{xml_text(meaning)}</Meaning>")
            w(
                "<LegalReason>Electronic signature under 21 CFR Part 11: the signer re-entered their password;"
                " the meaning signed is stored with the signature.</LegalReason></SignatureDef>\n"
            )
        w("</AdminData>\n")

    def _write_subject(
        self,
        subject: dict,
        answers: list[dict],
        visits: list[dict],
        adverse_events: list[dict] = (),
        *,
        key: str,
        criteria: list,
        audit: _OdmAudit,
        layout: CrfLayout,
    ) -> None:
        w = self.stream.write
        location = f"LOC.{oid_part(subject['site__code'])}"
        w("<SubjectData" + _attrs(SubjectKey=key) + ">")
        w("<SiteRef" + _attrs(LocationOID=location) + "/>")
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
            if answer["answer"] and any(c.code == answer["criterion_code"] for c in criteria)
        ]
        from enrollment.models import Participant

        signature_id = (
            Participant.objects.filter(pk=subject["id"]).values_list("eligibility_signature_id", flat=True).first()
        )
        w(f'<StudyEventData StudyEventOID="{self.STUDY_EVENT_SCREENING}"><FormData FormOID="F.SCREENING">')
        w(audit.latest("enrollment_screening", subject["id"], location))
        w(audit.signature(signature_id, SIGNATURE_ELIGIBILITY))
        self._item_group("IG.SCREENING", screening_items)
        if eligibility_items:
            self._item_group("IG.ELIGIBILITY", eligibility_items)
        w("</FormData></StudyEventData>")
        if subject["screening_number"]:
            randomization_items = [
                ("IT.SCREENING_NUMBER", subject["screening_number"]),
                ("IT.RANDOMIZATION_NUMBER", subject["randomization_number"] or ""),
                ("IT.RANDOMIZED_AT", _odm_utc(subject["randomized_at"])),
                ("IT.STATUS", subject["status"]),
                ("IT.WITHDRAWN_ON", _iso(subject["withdrawn_on"])),
            ]
            if self.scope.unblinded:
                randomization_items.append(("IT.ARM", subject.get("arm") or ""))
            w(f'<StudyEventData StudyEventOID="{self.STUDY_EVENT_RANDOMIZATION}"><FormData FormOID="F.RANDOMIZATION">')
            w(audit.latest("enrollment_participant", subject["id"], location))
            self._item_group("IG.RANDOMIZATION", randomization_items)
            w("</FormData></StudyEventData>")
        visit_table = selectors._visit_model()._meta.db_table
        for visit in visits:
            w(
                "<StudyEventData"
                + _attrs(StudyEventOID=f"SE.VISIT.{oid_part(visit['code'])}")
                + '><FormData FormOID="F.VISIT">'
            )
            w(audit.latest(visit_table, visit["id"], location))
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
            w("</FormData>")
            for record in self._crf_records(subject["id"], visit["code"], layout):
                if f"{visit['code']}|{record.form_code}" in layout.visit_forms:
                    self._write_crf_form(record, layout, audit, location, repeat_key=None)
            w("</StudyEventData>")
        if adverse_events:
            w(f'<StudyEventData StudyEventOID="{self.STUDY_EVENT_AE}"><FormData FormOID="F.AE">')
            for repeat_key, event in enumerate(adverse_events, start=1):
                header = audit.latest("safety_adverseevent", event["id"], location)
                self._item_group("IG.AE", self._ae_items(event), repeat_key=repeat_key, header=header)
            self._write_sae_reports(subject["id"], audit, location)
            self._write_death(subject["id"], audit, location)
            w("</FormData></StudyEventData>")
        logged = [
            record for record in self._crf_records(subject["id"], None, layout) if record.form_code in layout.log_forms
        ]
        for form_code in layout.form_order:
            entries = [record for record in logged if record.form_code == form_code]
            if entries:
                w("<StudyEventData" + _attrs(StudyEventOID=f"SE.LOG.{oid_part(form_code)}") + ">")
                for record in sorted(entries, key=lambda record: (record.sequence, record.pk)):
                    self._write_crf_form(record, layout, audit, location, repeat_key=record.sequence)
                w("</StudyEventData>")
        w("</SubjectData>\n")

    @staticmethod
    def _crf_records(participant_id: int, visit_code: str | None, layout: CrfLayout) -> list:
        from crf.models import FormRecord

        records = FormRecord.objects.filter(participant_id=participant_id, visit_code=visit_code).prefetch_related(
            "values"
        )
        order = {code: position for position, code in enumerate(layout.form_order)}
        return sorted(
            (record for record in records if record.form_code in order),
            key=lambda record: (order[record.form_code], record.pk),
        )

    def _write_crf_form(self, record, layout: CrfLayout, audit: _OdmAudit, location: str, *, repeat_key) -> None:
        w = self.stream.write
        form_code = record.form_code
        repeat = f" FormRepeatKey={xml_attribute(repeat_key)}" if repeat_key is not None else ""
        w(f"<FormData FormOID={xml_attribute('F.CRF.' + oid_part(form_code))}{repeat}>")
        w(audit.latest("crf_formrecord", record.pk, location))
        order = {pair: position for position, pair in enumerate(layout.items)}
        values = sorted(
            (value for value in record.values.all() if f"{form_code}|{value.item_code}" in order),
            key=lambda value: order[f"{form_code}|{value.item_code}"],
        )
        w(f"<ItemGroupData ItemGroupOID={xml_attribute('IG.CRF.' + oid_part(form_code))}>")
        for value in values:
            pair = f"{form_code}|{value.item_code}"
            text = _crf_value(value.unblinded_value if pair in layout.unblinded_items else value.value)
            if text == "":
                continue
            w(
                f"<ItemData ItemOID={xml_attribute(f'IT.CRF.{oid_part(form_code)}.{oid_part(value.item_code)}')}"
                f" Value={xml_attribute(text)}>{audit.latest('crf_itemvalue', value.pk, location)}</ItemData>"
            )
        w("</ItemGroupData></FormData>")

    def _write_sae_reports(self, participant_id: int, audit: _OdmAudit, location: str) -> None:
        from safety.models import SaeReport

        reports = (
            SaeReport.objects.filter(participant_id=participant_id, site_id__in=self.scope.site_ids)
            .order_by("adverse_event__sequence", "version", "pk")
            .values("id", "version", "complete", "signature_id", "written_at", "adverse_event__sequence")
        )
        for repeat_key, report in enumerate(reports, start=1):
            items = [
                ("IT.SAE_AE", report["adverse_event__sequence"]),
                ("IT.SAE_VERSION", report["version"]),
                ("IT.SAE_COMPLETE", _yes_no(report["complete"])),
                ("IT.SAE_WRITTEN_AT", _odm_utc(report["written_at"])),
            ]
            header = audit.latest("safety_saereport", report["id"], location) + audit.signature(
                report["signature_id"], SIGNATURE_SAE_REPORT
            )
            self._item_group("IG.SAE_REPORT", items, repeat_key=repeat_key, header=header)

    def _write_death(self, participant_id: int, audit: _OdmAudit, location: str) -> None:
        from safety.models import Death

        death = (
            Death.objects.filter(participant_id=participant_id)
            .values("id", "died_on", "cause", "adverse_event__sequence")
            .first()
        )
        if death is None:
            return
        items = [
            ("IT.DEATH_DATE", _iso(death["died_on"])),
            ("IT.DEATH_CAUSE", death["cause"]),
            ("IT.DEATH_AE", death["adverse_event__sequence"]),
        ]
        self._item_group("IG.DEATH", items, header=audit.latest("safety_death", death["id"], location))

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

    def _item_group(
        self, oid: str, items: list[tuple[str, object]], *, repeat_key: int | None = None, header: str = ""
    ) -> None:
        """Empty values are left out: ODM has no item rather than an empty one. `header`: the
        group's audit record and signature."""
        w = self.stream.write
        repeat = f' ItemGroupRepeatKey="{repeat_key}"' if repeat_key is not None else ""
        w(f'<ItemGroupData ItemGroupOID="{oid}"{repeat}>{header}')
        for item_oid, value in items:
            if value is None or value == "":
                continue
            w(f'<ItemData ItemOID="{item_oid}" Value={xml_attribute(value)}/>')
        w("</ItemGroupData>")


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
