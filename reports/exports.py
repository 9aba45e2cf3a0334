"""Export formats. Every format reads the same selectors (reports/selectors.py) and the same row
iterators (below), and writes incrementally: listings are read with `.iterator(chunk_size=2000)`
over `.values()` and written row by row, so memory does not grow with the number of participants.

Blinding: the arm column, the ARM item and the arm code list exist only when the scope is
unblinded; in the blinded variant no query below even joins the arm."""

from __future__ import annotations

import csv
import datetime
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from django.db.models import OuterRef, Subquery
from django.utils import timezone
from django.utils.translation import gettext

from enrollment.models import Consent, EligibilityAnswer, Screening
from reports import selectors
from reports.selectors import ENROLLMENT_COLUMNS, ReportScope

CHUNK = 2000
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")

ProgressCallback = Callable[[int], None]


def safe_cell(value):
    """Text that a spreadsheet would run as a formula is prefixed with a quote (CSV injection)."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


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
            ["lost_to_follow_up", gettext("Lost to follow-up"), arm, group.lost_to_follow_up],
            ["discontinued", gettext("Discontinued intervention"), arm, group.discontinued],
            ["analysed", gettext("Analysed"), arm, group.analysed],
        ]
    headings = [
        gettext("Box"),
        gettext("Label"),
        gettext("Arm") if scope.unblinded else gettext("Group"),
        gettext("Participants"),
    ]
    return Table("consort", gettext("CONSORT flow"), headings, rows)


def subject_key(row: dict) -> str:
    """How an export names a person: randomization number, else screening number, else the
    screening's id (never a name or a hospital record number)."""
    return row.get("randomization_number") or row.get("screening_number") or f"SCR-{row['id']}"


def age_on(birth: datetime.date, day: datetime.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def subject_values(scope: ReportScope) -> Iterator[dict]:
    """One dict per screening in scope, in id order, streamed from a server-side cursor."""
    latest_consent = Consent.objects.filter(screening=OuterRef("pk")).order_by("-signed_on", "-pk")
    fields = [
        "id",
        "site__code",
        "screening_date",
        "date_of_birth",
        "sex",
        "outcome",
        "reasons",
        "consent_date",
        "screening_number",
        "randomization_number",
        "randomized_at",
        "status",
        "withdrawn_on",
    ]
    rows = Screening.objects.filter(site_id__in=scope.site_ids).annotate(
        consent_date=Subquery(latest_consent.values("signed_on")[:1]),
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
            line = [
                subject_key(row),
                row["site__code"],
                row["screening_date"].isoformat(),
                row["sex"],
                age_on(row["date_of_birth"], row["screening_date"]),
                row["outcome"],
                ";".join(reason.get("code", "") for reason in row["reasons"] if isinstance(reason, dict)),
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

    return Table("subjects", gettext("Subjects"), headings, rows(), expected_rows=subject_count(scope))


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

    return Table("visits", gettext("Visits"), headings, rows(), expected_rows=visit_count(scope))


def _iso(day) -> str:
    return day.isoformat() if day else ""


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
            tables += [subjects_table(scope), visits_table(scope)]
        return tables
    builders = {
        "enrollment": enrollment_table,
        "screen_failures": screen_failures_table,
        "enrollment_by_month": enrollment_by_month_table,
        "consort": consort_table,
        "subjects": subjects_table,
        "visits": visits_table,
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


def write_csv(tables: list[Table], stream, stamp: Stamp, progress: ProgressCallback | None = None) -> int:
    """Stamp lines (starting with '#'), then per table its heading row and rows. Returns the
    number of data rows written."""
    writer = csv.writer(stream)
    counter = Progress(expected_rows(tables), progress)
    for line in stamp.lines():
        # Written as they are (not as a CSV cell), so every stamp line starts with '#'.
        stream.write("# " + line.replace("\r", " ").replace("\n", " ") + "\r\n")
    rows_written = 0
    for index, table in enumerate(tables):
        if len(tables) > 1:
            if index:
                writer.writerow([])
            stream.write("# " + table.title + "\r\n")
        writer.writerow([safe_cell(heading) for heading in table.headings])
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
    """Visit codes and site codes as OID-safe text."""
    return "".join(character if character.isalnum() or character in "._-" else "_" for character in value)


def _attrs(**attributes) -> str:
    return "".join(
        f" {name.replace('__', ':')}={quoteattr(str(value))}" for name, value in attributes.items() if value is not None
    )


class OdmWriter:
    """Writes ODM incrementally to a text stream: metadata first, then one SubjectData per
    screening, merged in id order with its eligibility answers and visits."""

    STUDY_EVENT_SCREENING = "SE.SCREENING"
    STUDY_EVENT_RANDOMIZATION = "SE.RANDOMIZATION"

    def __init__(self, scope: ReportScope, stream, stamp: Stamp):
        self.scope = scope
        self.stream = stream
        self.stamp = stamp
        self.trial = scope.trial
        self.study_oid = f"ST.{oid_part(self.trial.nct_id)}"
        self.mdv_oid = "MDV.1"
        self.criteria = list(self.trial.eligibility.get("criteria", []))

    def write(self, progress: ProgressCallback | None = None) -> int:
        visit_codes = self._visit_codes()
        expected = subject_count(self.scope) + visit_count(self.scope)
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
        subjects = 0
        answers = _grouped(
            EligibilityAnswer.objects.filter(site_id__in=self.scope.site_ids)
            .order_by("screening_id", "pk")
            .values("screening_id", "criterion_code", "answer")
            .iterator(chunk_size=CHUNK),
            "screening_id",
        )
        visits = _grouped(visit_values(self.scope), "participant_id")
        for subject in subject_values(self.scope):
            own_answers = answers.take(subject["id"])
            own_visits = visits.take(subject["id"])
            self._write_subject(subject, own_answers, own_visits)
            subjects += 1
            counter.step(1 + len(own_visits))
        w("</ClinicalData>\n</ODM>\n")
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
        groups = {
            "IG.SCREENING": [
                ("IT.SITE", "Site", "text", 20, None),
                ("IT.SCREENING_DATE", "Screening date", "date", None, None),
                ("IT.SEX", "Sex", "text", 1, "CL.SEX"),
                ("IT.AGE", "Age at screening (years)", "integer", 3, None),
                ("IT.CONSENT_DATE", "Consent date", "date", None, None),
                ("IT.OUTCOME", "Screening outcome", "text", 12, "CL.OUTCOME"),
                ("IT.FAILED_CRITERIA", "Failed criteria", "text", 200, None),
            ],
            "IG.ELIGIBILITY": [
                (f"IT.ELIG.{oid_part(c['code'])}", c["text"][:100], "text", 3, "CL.ANSWER") for c in self.criteria
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
                ("IT.VISIT_STATUS", "Visit status", "text", 12, "CL.VISIT_STATUS"),
                ("IT.VISIT_DATE", "Visit date", "date", None, None),
            ],
        }
        if self.scope.unblinded:
            groups["IG.RANDOMIZATION"].append(("IT.ARM", "Arm", "text", 20, "CL.ARM"))
        return groups

    def _code_lists(self) -> dict[str, list[tuple[str, str]]]:
        from enrollment.models import Answer, Outcome, ParticipantStatus, Sex

        lists = {
            "CL.SEX": [(value, str(label)) for value, label in Sex.choices],
            "CL.OUTCOME": [(value, str(label)) for value, label in Outcome.choices],
            "CL.ANSWER": [(value, str(label)) for value, label in Answer.choices],
            "CL.STATUS": [(value, str(label)) for value, label in ParticipantStatus.choices],
            "CL.VISIT_STATUS": [(value, str(label)) for value, label in _visit_status_choices()],
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
        w("<Protocol>")
        for order, (oid, _name, _forms) in enumerate(events, start=1):
            w("<StudyEventRef" + _attrs(StudyEventOID=oid, OrderNumber=order, Mandatory="No") + "/>")
        w("</Protocol>\n")
        for oid, name, forms in events:
            w("<StudyEventDef" + _attrs(OID=oid, Name=name, Repeating="No", Type="Scheduled") + ">")
            for form in forms:
                w("<FormRef" + _attrs(FormOID=form, Mandatory="No") + "/>")
            w("</StudyEventDef>\n")
        forms = {
            "F.SCREENING": ("Screening", ["IG.SCREENING", "IG.ELIGIBILITY"]),
            "F.RANDOMIZATION": ("Randomization and status", ["IG.RANDOMIZATION"]),
            "F.VISIT": ("Visit", ["IG.VISIT"]),
        }
        for oid, (name, groups) in forms.items():
            w("<FormDef" + _attrs(OID=oid, Name=name, Repeating="No") + ">")
            for group in groups:
                w("<ItemGroupRef" + _attrs(ItemGroupOID=group, Mandatory="No") + "/>")
            w("</FormDef>\n")
        items = self._items()
        for group, members in items.items():
            w("<ItemGroupDef" + _attrs(OID=group, Name=group.removeprefix("IG.").title(), Repeating="No") + ">")
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

    def _write_subject(self, subject: dict, answers: list[dict], visits: list[dict]) -> None:
        w = self.stream.write
        w("<SubjectData" + _attrs(SubjectKey=subject_key(subject)) + ">")
        w("<SiteRef" + _attrs(LocationOID=f"LOC.{oid_part(subject['site__code'])}") + "/>")
        failed = ";".join(reason.get("code", "") for reason in subject["reasons"] if isinstance(reason, dict))
        screening_items = [
            ("IT.SITE", subject["site__code"]),
            ("IT.SCREENING_DATE", subject["screening_date"].isoformat()),
            ("IT.SEX", subject["sex"]),
            ("IT.AGE", age_on(subject["date_of_birth"], subject["screening_date"])),
            ("IT.CONSENT_DATE", _iso(subject["consent_date"])),
            ("IT.OUTCOME", subject["outcome"]),
            ("IT.FAILED_CRITERIA", failed),
        ]
        eligibility_items = [
            (f"IT.ELIG.{oid_part(answer['criterion_code'])}", answer["answer"])
            for answer in answers
            if answer["answer"] and any(c["code"] == answer["criterion_code"] for c in self.criteria)
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
        w("</SubjectData>\n")

    def _item_group(self, oid: str, items: list[tuple[str, object]]) -> None:
        """Empty values are left out: ODM has no item rather than an empty one."""
        w = self.stream.write
        w(f'<ItemGroupData ItemGroupOID="{oid}">')
        for item_oid, value in items:
            if value is None or value == "":
                continue
            w(f'<ItemData ItemOID="{item_oid}" Value={quoteattr(str(value))}/>')
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


def write_odm(scope: ReportScope, stream, stamp: Stamp, progress: ProgressCallback | None = None) -> int:
    return OdmWriter(scope, stream, stamp).write(progress)
