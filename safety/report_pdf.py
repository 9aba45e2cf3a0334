"""The safety reports as paginated PDF (reportlab), with the fonts and page marks of the
enrollment report (reports/pdf.py): every page carries the mark at the top and bottom and
"page x of y". The closed report's mark says it is confidential to the DSMB."""

from __future__ import annotations

import io

from django.utils.translation import gettext

from reports.pdf import _escape, _font_names, _page_canvas
from safety.selectors import GRADES, SUMMARY_LABELS, Group, SafetyReport, term_label


def report_mark(closed: bool) -> str:
    if closed:
        return gettext("CONFIDENTIAL — closed DSMB report")
    return gettext("Open safety report (blinded) — confidential")


def report_title(closed: bool) -> str:
    return gettext("Closed safety report") if closed else gettext("Open safety report")


def event_table(group: Group) -> tuple[list[str], list[list]]:
    headings = [gettext("Participant"), gettext("No."), gettext("CTCAE term"), gettext("Worst grade")]
    headings += [gettext("Serious"), gettext("Onset date"), gettext("Outcome")]
    rows = []
    for event in group.events:
        rows.append(
            [
                event.participant_number,
                event.sequence,
                term_label(event.term),
                event.worst_grade,
                gettext("yes") if event.serious else gettext("no"),
                event.onset_date.isoformat(),
                event.outcome_label,
            ]
        )
    return headings, rows


def term_rows(group: Group) -> tuple[list[str], list[list]]:
    headings = [gettext("CTCAE term")]
    headings += [gettext("Grade %(grade)s") % {"grade": grade} for grade in GRADES]
    headings += [gettext("Participants"), gettext("Events")]
    rows = [
        [row.label, *[row.by_grade[grade] for grade in GRADES], row.participants, row.events] for row in group.terms
    ]
    return headings, rows


def summary_rows(report: SafetyReport) -> tuple[list[str], list[list]]:
    headings = ["", *[group.label for group in report.arms], gettext("Total")]
    rows = [
        [str(label), *[getattr(group.summary, key) for group in report.arms], getattr(report.total.summary, key)]
        for key, label in SUMMARY_LABELS
    ]
    return headings, rows


def write_pdf(report: SafetyReport) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import CondPageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    closed = report.scope.closed
    font, bold = _font_names()
    styles = getSampleStyleSheet()
    for name in ("Title", "Heading2", "Normal"):
        styles[name].fontName = bold if name != "Normal" else font
    cell = styles["Normal"].clone("Cell", fontSize=8, leading=10)
    cell_bold = cell.clone("CellBold", fontName=bold)
    mark = report_mark(closed)
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=landscape(A4),
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        title=f"{report.scope.trial.nct_id} {report_title(closed)} ({mark})",
        initialFontName=font,
    )
    story = [Paragraph(_escape(f"{report.scope.trial.nct_id} · {report_title(closed)}"), styles["Title"])]
    story.append(Paragraph(_escape(" · ".join(site.local_name for site in report.scope.sites)), styles["Normal"]))

    def table(title: str, headings: list[str], rows: list[list]) -> None:
        data = [
            [Paragraph(_escape(str(value)), cell_bold) for value in headings],
            *[[Paragraph(_escape(str(value)), cell) for value in row] for row in rows],
        ]
        if not rows:
            data.append([Paragraph(_escape(gettext("None")), cell)] + [""] * (len(headings) - 1))
        flowable = Table(data, repeatRows=1)
        flowable.setStyle(
            TableStyle(
                [
                    ("FONTNAME", (0, 0), (-1, -1), font),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2f6")),
                    ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#d5dde6")),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ]
            )
        )
        story.extend(
            [CondPageBreak(40 * mm), Spacer(1, 6 * mm), Paragraph(_escape(title), styles["Heading2"]), flowable]
        )

    if closed:
        table(gettext("Summary by arm"), *summary_rows(report))
    groups = [*report.arms, report.total] if closed else [report.total]
    for group in groups:
        suffix = f" · {group.label}"
        table(gettext("Adverse events by term and worst grade") + suffix, *term_rows(group))
    for group in report.arms if closed else [report.total]:
        table(gettext("Adverse events by participant") + f" · {group.label}", *event_table(group))
    document.build(story, canvasmaker=_page_canvas(font, mark))
    return buffer.getvalue()
