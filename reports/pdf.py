"""The enrollment report as PDF (reportlab): the stamp, the same tables as the CSV/XLSX, the
enrollment chart and the CONSORT diagram drawn from the same layout as the SVG and PNG."""

from __future__ import annotations

from pathlib import Path

from django.utils import translation
from django.utils.translation import gettext

from reports import charts, exports, selectors
from reports.selectors import ReportScope


def _font_names() -> tuple[str, str]:
    """Helvetica for Latin text; for Chinese, the Adobe CID font reportlab knows without a file
    (the reader supplies the glyphs)."""
    if (translation.get_language() or "").startswith("zh"):
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.cidfonts import UnicodeCIDFont

        pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
        return "STSong-Light", "STSong-Light"
    return "Helvetica", "Helvetica-Bold"


def _drawing_from_layout(layout: charts.ConsortLayout, font: str, bold: str, width: float):
    from reportlab.graphics.shapes import Drawing, Group, Line, Polygon, Rect, String
    from reportlab.lib import colors

    scale = min(1.0, width / layout.width)
    drawing = Drawing(layout.width * scale, layout.height * scale)
    group = Group()
    ink = colors.HexColor("#1d2733")

    def flip(y: float) -> float:
        return layout.height - y

    for stage_y, stage in layout.stages:
        group.add(String(10, flip(stage_y), stage, fontName=bold, fontSize=11, fillColor=colors.HexColor("#1f5f99")))
    for box in layout.boxes:
        group.add(Rect(box.x, flip(box.y + box.height), box.width, box.height, strokeColor=ink, fillColor=None))
        for baseline, text, first in box.text_rows:
            group.add(String(box.text_x, flip(baseline), text, fontName=bold if first else font, fontSize=10))
    for arrow in layout.arrows:
        group.add(Line(arrow.x1, flip(arrow.y1), arrow.x2, flip(arrow.y2), strokeColor=ink))
        if arrow.head:
            x, y = arrow.x2, flip(arrow.y2)
            if arrow.y2 > arrow.y1:
                points = [x, y, x - 4, y + 7, x + 4, y + 7]
            else:
                points = [x, y, x - 7, y - 4, x - 7, y + 4]
            group.add(Polygon(points, fillColor=ink, strokeColor=ink))
    group.scale(scale, scale)
    drawing.add(group)
    return drawing


def _chart_drawing(chart: dict, font: str, width: float):
    from reportlab.graphics.shapes import Drawing, Group, Line, PolyLine, Rect, String
    from reportlab.lib import colors

    scale = min(1.0, width / chart["width"])
    height = chart["height"]
    drawing = Drawing(chart["width"] * scale, height * scale)
    group = Group()

    def flip(y: float) -> float:
        return height - y

    group.add(Line(chart["left"], flip(chart["baseline"]), chart["right_edge"], flip(chart["baseline"])))
    for tick in chart["ticks"]:
        group.add(
            String(
                chart["left"] - 6, flip(tick["y"]) - 3, str(tick["value"]), fontName=font, fontSize=8, textAnchor="end"
            )
        )
    for bar in chart["bars"]:
        group.add(
            Rect(
                bar["x"],
                flip(bar["y"] + bar["height"]),
                bar["width"],
                bar["height"],
                fillColor=colors.HexColor("#9cc1e4"),
                strokeColor=None,
            )
        )
    target = Line(
        chart["left"],
        flip(chart["target_y"]),
        chart["right_edge"],
        flip(chart["target_y"]),
        strokeColor=colors.HexColor("#a12a2a"),
    )
    target.strokeDashArray = [6, 4]
    group.add(target)
    group.add(
        String(
            chart["right_edge"],
            flip(chart["target_y"]) + 4,
            gettext("Target %(n)s") % {"n": chart["target"]},
            fontName=font,
            fontSize=8,
            textAnchor="end",
        )
    )
    if chart["points"]:
        points = []
        for pair in chart["points"].split():
            x, y = pair.split(",")
            points += [float(x), flip(float(y))]
        group.add(PolyLine(points, strokeColor=colors.HexColor("#1f5f99"), strokeWidth=2))
    for label in chart["labels"]:
        group.add(
            String(label["x"], flip(chart["label_y"]), label["text"], fontName=font, fontSize=8, textAnchor="middle")
        )
    group.scale(scale, scale)
    drawing.add(group)
    return drawing


def write_pdf(scope: ReportScope, path: Path, stamp: exports.Stamp) -> int:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    font, bold = _font_names()
    styles = getSampleStyleSheet()
    for name in ("Title", "Heading2", "Normal"):
        styles[name].fontName = bold if name != "Normal" else font
    page_size = landscape(A4)
    document = SimpleDocTemplate(
        str(path),
        pagesize=page_size,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        title=f"{scope.trial.nct_id} {gettext('Enrollment report')}",
        author=stamp.exported_by,
        subject=" | ".join(stamp.lines()),
    )
    usable_width = page_size[0] - 30 * mm
    story = [Paragraph(f"{scope.trial.nct_id} · {gettext('Enrollment report')}", styles["Title"])]
    story += [Paragraph(_escape(line), styles["Normal"]) for line in stamp.lines()]
    report = selectors.enrollment_report(scope)
    flow = selectors.consort_flow(scope, report)
    rows = 0
    tables = [
        exports.enrollment_table(scope, report),
        exports.screen_failures_table(scope, report),
        exports.enrollment_by_month_table(scope),
        exports.consort_table(scope, flow),
    ]
    for table in tables:
        data = [table.headings, *[[str(value) for value in row] for row in table.rows]]
        rows += len(data) - 1
        flowable = Table(data, repeatRows=1)
        flowable.setStyle(
            TableStyle(
                [
                    ("FONTNAME", (0, 0), (-1, -1), font),
                    ("FONTNAME", (0, 0), (-1, 0), bold),
                    ("FONTSIZE", (0, 0), (-1, -1), 8),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2f6")),
                    ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#d5dde6")),
                ]
            )
        )
        story += [Spacer(1, 6 * mm), Paragraph(_escape(table.title), styles["Heading2"]), flowable]
    months = selectors.enrollment_by_month(scope)
    if months:
        story += [
            Spacer(1, 6 * mm),
            Paragraph(gettext("Enrollment by month"), styles["Heading2"]),
            _chart_drawing(charts.enrollment_chart(months, scope.trial.target_enrollment), font, usable_width),
        ]
    story += [
        PageBreak(),
        Paragraph(gettext("CONSORT 2010 flow diagram"), styles["Heading2"]),
        _drawing_from_layout(charts.consort_layout(flow), font, bold, usable_width),
    ]
    document.build(story)
    return rows


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
