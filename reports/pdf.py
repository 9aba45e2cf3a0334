"""The enrollment report as PDF (reportlab): the stamp, the same tables as the CSV/XLSX, the
enrollment chart and the CONSORT diagram drawn from the same layout as the SVG and PNG."""

from __future__ import annotations

from pathlib import Path

from django.utils import translation
from django.utils.translation import gettext

from reports import charts, exports, selectors
from reports.selectors import ReportScope

FONT_REGULAR, FONT_BOLD, FONT_CJK = "TrialSans", "TrialSans-Bold", "TrialSansCJK"


def _font_names() -> tuple[str, str]:
    """Fonts embedded in the file, so that it reads the same on every machine: Bitstream Vera
    (shipped with reportlab) for Latin text, and for Chinese a TrueType font with Chinese and
    Latin glyphs shipped by a pip package. Never a PDF base font or a CID font such as
    STSong-Light, which name glyphs the reader must supply (empty boxes without them)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    registered = set(pdfmetrics.getRegisteredFontNames())
    if (translation.get_language() or "").startswith("zh"):
        if FONT_CJK not in registered:
            pdfmetrics.registerFont(TTFont(FONT_CJK, str(charts.cjk_font_path()), subfontIndex=0))
        return FONT_CJK, FONT_CJK
    if FONT_REGULAR not in registered:
        pdfmetrics.registerFont(TTFont(FONT_REGULAR, "Vera.ttf"))
        pdfmetrics.registerFont(TTFont(FONT_BOLD, "VeraBd.ttf"))
    return FONT_REGULAR, FONT_BOLD


def _fitted(drawing):
    """A drawing that shrinks to the space the frame offers, both ways (never enlarged): a
    CONSORT diagram with many exclusion reasons is taller than a landscape page."""
    from reportlab.platypus import Flowable

    class Fitted(Flowable):
        def __init__(self):
            super().__init__()
            self.scale = 1.0

        def wrap(self, available_width, available_height):
            self.scale = max(min(1.0, available_width / drawing.width, available_height / drawing.height), 0.01)
            self.width, self.height = drawing.width * self.scale, drawing.height * self.scale
            return self.width, self.height

        def draw(self):
            self.canv.saveState()
            self.canv.scale(self.scale, self.scale)
            drawing.drawOn(self.canv, 0, 0)
            self.canv.restoreState()

    return Fitted()


def _page_canvas(font: str, mark: str):
    """A canvas that writes, on every page, the blinding mark at the top and "page n of N" at the
    bottom; N is known only at the end, so each page is kept until the document is saved."""
    from reportlab.lib import colors
    from reportlab.pdfgen.canvas import Canvas

    class PageCanvas(Canvas):
        def __init__(self, *args, **kwargs):
            # The default initial font is Helvetica, which would be named (not embedded) in the file.
            kwargs["initialFontName"] = font
            super().__init__(*args, **kwargs)
            self._pages: list[dict] = []

        def showPage(self):
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self):
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self._decorate(total)
                super().showPage()
            super().save()

        def _decorate(self, total: int) -> None:
            width, height = self._pagesize
            self.saveState()
            self.setFont(font, 9)
            self.setFillColor(colors.HexColor("#a12a2a"))
            self.drawRightString(width - 15 * 2.8346, height - 10 * 2.8346, mark)
            self.setFillColor(colors.HexColor("#5b6b7c"))
            self.drawString(15 * 2.8346, 8 * 2.8346, mark)
            self.drawRightString(
                width - 15 * 2.8346,
                8 * 2.8346,
                gettext("Page %(page)s of %(pages)s") % {"page": self._pageNumber, "pages": total},
            )
            self.restoreState()

    return PageCanvas


def _drawing_from_layout(layout: charts.ConsortLayout, font: str, bold: str, width: float):
    from reportlab.graphics.shapes import Drawing, Group, Line, Polygon, Rect, String
    from reportlab.lib import colors

    # Full size here; `_fitted` shrinks it to the frame both ways.
    scale = 1.0
    # initialFontName: otherwise the renderer starts in Times-Roman, a font named but not embedded.
    drawing = Drawing(layout.width, layout.height, initialFontName=font)
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
    drawing = Drawing(chart["width"] * scale, height * scale, initialFontName=font)
    group = Group()
    blue, red, ink = colors.HexColor("#9cc1e4"), colors.HexColor("#a12a2a"), colors.HexColor("#1d2733")

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
                bar["x"], flip(bar["y"] + bar["height"]), bar["width"], bar["height"], fillColor=blue, strokeColor=None
            )
        )
    target = Line(chart["left"], flip(chart["target_y"]), chart["right_edge"], flip(chart["target_y"]), strokeColor=red)
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
    # Axis titles: the x title under the month labels, the y title turned along the axis.
    group.add(
        String(
            chart["right_edge"], flip(chart["x_title_y"]), chart["x_title"], fontName=font, fontSize=9, textAnchor="end"
        )
    )
    y_title = Group(String(0, 0, chart["y_title"], fontName=font, fontSize=9, textAnchor="middle"))
    y_title.translate(chart["y_title_x"] + 3, flip(chart["y_title_y"]))
    y_title.rotate(90)
    group.add(y_title)
    legend_y = flip(chart["legend_y"])
    for entry in chart["legend"]:
        x = entry["x"]
        if entry["kind"] == "bar":
            group.add(Rect(x, legend_y, 10, 10, fillColor=blue, strokeColor=None))
        else:
            line = Line(x, legend_y + 5, x + 12, legend_y + 5, strokeColor=red if entry["kind"] == "target" else None)
            if entry["kind"] == "target":
                line.strokeDashArray = [4, 2]
            else:
                line.strokeColor, line.strokeWidth = colors.HexColor("#1f5f99"), 2
            group.add(line)
        group.add(String(x + 16, legend_y + 1, entry["text"], fontName=font, fontSize=9, fillColor=ink))
    group.scale(scale, scale)
    drawing.add(group)
    return drawing


def write_pdf(scope: ReportScope, path: Path, stamp: exports.Stamp) -> int:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        CondPageBreak,
        KeepTogether,
        PageBreak,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    font, bold = _font_names()
    styles = getSampleStyleSheet()
    for name in ("Title", "Heading2", "Normal"):
        styles[name].fontName = bold if name != "Normal" else font
    # A heading never ends a page: before a table, a conditional page break leaves room for the
    # heading and the table's first rows (keepWithNext would group the heading with the whole
    # table, and a table longer than a page then breaks the page twice, leaving one empty);
    # a figure is kept together with its heading.
    room_for_heading = 40 * mm
    cell = styles["Normal"].clone("Cell", fontSize=8, leading=10)
    cell_bold = cell.clone("CellBold", fontName=bold)
    mark = gettext("Blinded — confidential") if stamp.blinded else gettext("Unblinded — confidential")
    page_size = landscape(A4)
    document = SimpleDocTemplate(
        str(path),
        pagesize=page_size,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        title=f"{scope.trial.nct_id} {gettext('Enrollment report')} ({mark})",
        initialFontName=font,
        author=stamp.exported_by,
        subject=" | ".join(stamp.lines()),
    )
    usable_width = page_size[0] - 30 * mm
    story = [Paragraph(_escape(f"{scope.trial.nct_id} · {gettext('Enrollment report')}"), styles["Title"])]
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
        headings, body = table.headings, [list(row) for row in table.rows]
        if table.key == "consort":
            # The first column holds machine keys (for CSV readers); people read the labels.
            headings, body = headings[1:], [row[1:] for row in body]
        data = [
            [Paragraph(_escape(str(value)), cell_bold) for value in headings],
            *[[Paragraph(_escape(str(value)), cell) for value in row] for row in body],
        ]
        rows += len(data) - 1
        flowable = Table(data, repeatRows=1)
        flowable.setStyle(
            TableStyle(
                [
                    # Paragraph cells bring their own font; this keeps Helvetica out of the file.
                    ("FONTNAME", (0, 0), (-1, -1), font),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2f6")),
                    ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#d5dde6")),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ]
            )
        )
        story += [
            CondPageBreak(room_for_heading),
            Spacer(1, 6 * mm),
            Paragraph(_escape(table.title), styles["Heading2"]),
            flowable,
        ]
        if table.key == "screen_failures":
            story.append(
                Paragraph(
                    _escape(
                        gettext(
                            "A screen failure may have several reasons, so the reasons can add up to more than the people."
                        )
                    ),
                    cell,
                )
            )
    months = selectors.enrollment_by_month(scope)
    if months:
        chart = _chart_drawing(charts.enrollment_chart(months, scope.trial.target_enrollment), font, usable_width)
        story += [
            CondPageBreak(chart.height + 20 * mm),
            KeepTogether([Paragraph(gettext("Enrollment by month"), styles["Heading2"]), _fitted(chart)]),
        ]
    story += [
        PageBreak(),
        Paragraph(gettext("CONSORT 2010 flow diagram"), styles["Heading2"]),
        _fitted(_drawing_from_layout(charts.consort_layout(flow), font, bold, usable_width)),
    ]
    document.build(story, canvasmaker=_page_canvas(font, mark))
    return rows


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
