"""Pictures drawn on the server: the enrollment chart and the CONSORT 2010 flow diagram.

The CONSORT diagram is laid out once (boxes with text lines, and arrows) and that one layout is
drawn as SVG (template), PNG (Pillow) and inside the PDF (reportlab), so the three agree. No
JavaScript library, no CDN; SVG uses presentation attributes only (the CSP forbids inline style)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from django.template.loader import render_to_string
from django.utils.translation import gettext

from reports.selectors import ConsortFlow

LINE = 16
PAD = 8
CHAR_WIDTH = 6.6  # average width of a 12 px sans-serif character, for wrapping


@dataclass
class Box:
    x: float
    y: float
    width: float
    lines: list[str]
    heading: bool = True  # the first line is the box's count line

    @property
    def height(self) -> float:
        return len(self.lines) * LINE + 2 * PAD

    @property
    def text_x(self) -> float:
        return self.x + PAD

    @property
    def text_rows(self) -> list[tuple[float, str, bool]]:
        return [(self.y + PAD + (index + 1) * LINE - 4, line, index == 0) for index, line in enumerate(self.lines)]


@dataclass
class Arrow:
    x1: float
    y1: float
    x2: float
    y2: float
    head: bool = True


@dataclass
class ConsortLayout:
    width: float
    height: float
    boxes: list[Box] = field(default_factory=list)
    arrows: list[Arrow] = field(default_factory=list)
    # (y, text): the CONSORT stage names on the left.
    stages: list[tuple[float, str]] = field(default_factory=list)
    title: str = ""


NO_LINE_START = set("，。；：、！？）》」』,.;:!?)")  # noqa: RUF001 - Chinese punctuation, on purpose


def _wide(character: str) -> bool:
    return unicodedata.east_asian_width(character) in ("W", "F")


def _units(text: str) -> int:
    """Width in average Latin characters: a Chinese character (or full-width sign) is two."""
    return sum(2 if _wide(character) else 1 for character in text)


def _wrap(text: str, width: float) -> list[str]:
    """Lines that fit the box: broken at spaces, or between any two Chinese characters (Chinese
    has no spaces, and each character is about twice as wide as a Latin one)."""
    limit = max(int((width - 2 * PAD) / CHAR_WIDTH), 10)
    tokens, word = [], ""
    for character in text:
        if character.isspace() or _wide(character):
            if word:
                tokens.append(word)
                word = ""
            tokens.append(character)
        else:
            word += character
    if word:
        tokens.append(word)
    lines, line = [], ""
    for token in tokens:
        # Closing punctuation never starts a line (it stays with the character before it).
        if line.strip() and _units(line + token) > limit and token not in NO_LINE_START:
            lines.append(line.rstrip())
            line = "" if token.isspace() else token
        else:
            line += token
    if line.strip():
        lines.append(line.rstrip())
    return lines or [""]


def consort_layout(flow: ConsortFlow) -> ConsortLayout:
    groups = len(flow.groups)
    # One blinded box has the room of the whole row; arms share it.
    left, group_width, gap = 100, (200 if groups > 1 else 360), 16
    width = max(left + groups * group_width + (groups - 1) * gap + 20, 820)
    centre = left + (width - left - 20) / 2
    main_width = 240
    layout = ConsortLayout(width=width, height=0, title=gettext("CONSORT 2010 flow diagram"))

    y = 20
    assessed = Box(
        centre - main_width / 2 - 150,
        y,
        main_width,
        _wrap(gettext("Assessed for eligibility (n=%(n)s)") % {"n": flow.assessed}, main_width),
    )
    layout.boxes.append(assessed)
    layout.stages.append((y + 14, gettext("Enrollment")))

    excluded_x = assessed.x + main_width + 60
    excluded_width = width - excluded_x - 20
    excluded_lines = [gettext("Excluded (n=%(n)s)") % {"n": flow.excluded}]
    excluded_lines += _wrap(
        "• " + gettext("Not meeting inclusion criteria (n=%(n)s)") % {"n": flow.excluded_not_eligible}, excluded_width
    )
    for reason in flow.failure_reasons:
        excluded_lines += [
            "   " + line
            for line in _wrap(f"- {reason['code']} {reason['text']} (n={reason['total']})", excluded_width - 20)
        ]
    excluded_lines += _wrap(
        "• " + gettext("Screening incomplete (n=%(n)s)") % {"n": flow.excluded_incomplete}, excluded_width
    )
    excluded_lines += _wrap(
        "• " + gettext("Eligible, not randomized (n=%(n)s)") % {"n": flow.excluded_eligible_not_randomized},
        excluded_width,
    )
    if flow.failure_reasons:
        excluded_lines += _wrap(gettext("A screen failure may have several reasons."), excluded_width)
    excluded = Box(excluded_x, assessed.y + assessed.height + 10, excluded_width, excluded_lines)
    layout.boxes.append(excluded)

    trunk_x = assessed.x + main_width / 2
    randomized_y = excluded.y + excluded.height + 20
    layout.arrows.append(Arrow(trunk_x, excluded.y + excluded.height / 2, excluded.x, excluded.y + excluded.height / 2))
    randomized = Box(assessed.x, randomized_y, main_width, [gettext("Randomized (n=%(n)s)") % {"n": flow.randomized}])
    layout.boxes.append(randomized)
    layout.arrows.append(Arrow(trunk_x, assessed.y + assessed.height, trunk_x, randomized.y))

    y = randomized.y + randomized.height + 40
    layout.stages.append((y + 14, gettext("Allocation")))

    def reasons(pairs) -> list[str]:
        return [f"   - {label} (n={n})" for _key, label, n in pairs]

    rows = [
        (
            gettext("Allocation"),
            lambda g: [
                gettext("Allocated to %(arm)s (n=%(n)s)") % {"arm": g.label, "n": g.allocated}
                if g.code
                else gettext("Allocated (n=%(n)s)") % {"n": g.allocated},
                "• " + gettext("Received allocated intervention (n=%(n)s)") % {"n": g.received},
                "• " + gettext("Did not receive allocated intervention (n=%(n)s)") % {"n": g.not_received},
                *reasons(g.not_received_reasons),
            ],
        ),
        (
            gettext("Follow-up"),
            lambda g: [
                gettext("Lost to follow-up (n=%(n)s)") % {"n": g.lost_to_follow_up},
                *reasons(g.lost_reasons),
                gettext("Discontinued intervention (n=%(n)s)") % {"n": g.discontinued},
                *reasons(g.discontinued_reasons),
                gettext("On treatment (n=%(n)s)") % {"n": g.on_treatment},
                gettext("Completed (n=%(n)s)") % {"n": g.completed},
            ],
        ),
        (
            gettext("Analysis"),
            lambda g: [
                gettext("Analysed (n=%(n)s)") % {"n": g.analysed},
                gettext("Excluded from analysis (n=%(n)s)") % {"n": g.excluded_from_analysis},
                flow.analysis_note,
            ],
        ),
    ]
    group_x = [left + index * (group_width + gap) for index in range(groups)]
    if groups == 1:
        group_x = [trunk_x - group_width / 2]
    bar_y = randomized.y + randomized.height + 20
    if groups > 1:
        layout.arrows.append(Arrow(trunk_x, randomized.y + randomized.height, trunk_x, bar_y, head=False))
        layout.arrows.append(
            Arrow(group_x[0] + group_width / 2, bar_y, group_x[-1] + group_width / 2, bar_y, head=False)
        )
    above: list[Box | None] = [None] * groups
    for row_index, (stage, lines_for) in enumerate(rows):
        if row_index:
            layout.stages.append((y + 14, stage))
        boxes = [
            Box(x, y, group_width, [line for text in lines_for(group) for line in _wrap(text, group_width)])
            for x, group in zip(group_x, flow.groups, strict=True)
        ]
        for index, box in enumerate(boxes):
            middle = box.x + group_width / 2
            if above[index] is not None:
                start = above[index].y + above[index].height
            else:
                start = bar_y if groups > 1 else randomized.y + randomized.height
            layout.arrows.append(Arrow(middle, start, middle, box.y))
            above[index] = box
        layout.boxes += boxes
        y += max(box.height for box in boxes) + 30
    layout.height = y
    return layout


def consort_svg(flow: ConsortFlow, *, stamp=None) -> str:
    layout = consort_layout(flow)
    footer = [(layout.height + (index + 1) * 12, line) for index, line in enumerate(stamp.lines() if stamp else [])]
    return render_to_string(
        "reports/consort.svg",
        {"layout": layout, "footer": footer, "height": layout.height + 12 * len(footer) + (8 if footer else 0)},
    )


# --- PNG with Pillow ---------------------------------------------------------------------------


def cjk_font_path() -> Path:
    """A TrueType font with Chinese and Latin glyphs, shipped by a pip package (a dependency), so
    that the PNG and the PDF render Chinese on any machine, with no system font installed."""
    import paperang_p2_fonts_cjk

    return Path(paperang_p2_fonts_cjk.__file__).parent / "fonts" / "wqy-microhei.ttc"


FONT_CANDIDATES = [
    str(cjk_font_path()),
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
]


def _font(size: int):
    from PIL import ImageFont

    for candidate in FONT_CANDIDATES:
        if Path(candidate).exists():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size=size)


def consort_png(flow: ConsortFlow, path: Path, *, stamp=None, scale: int = 2) -> None:
    from PIL import Image, ImageDraw

    layout = consort_layout(flow)
    footer = stamp.lines() if stamp else []
    height = layout.height + len(footer) * LINE + 20
    image = Image.new("RGB", (int(layout.width * scale), int(height * scale)), "white")
    draw = ImageDraw.Draw(image)
    regular, bold = _font(12 * scale), _font(13 * scale)

    def s(value: float) -> int:
        return round(value * scale)

    for stage_y, stage in layout.stages:
        draw.text((s(10), s(stage_y - 12)), stage, fill="#1f5f99", font=bold)
    for box in layout.boxes:
        draw.rectangle(
            [s(box.x), s(box.y), s(box.x + box.width), s(box.y + box.height)], outline="#1d2733", width=scale
        )
        for baseline, text, first in box.text_rows:
            draw.text((s(box.x + PAD), s(baseline - 12)), text, fill="#1d2733", font=bold if first else regular)
    for arrow in layout.arrows:
        draw.line([s(arrow.x1), s(arrow.y1), s(arrow.x2), s(arrow.y2)], fill="#1d2733", width=scale)
        if arrow.head:
            tip_x, tip_y = s(arrow.x2), s(arrow.y2)
            if arrow.y2 > arrow.y1:
                points = [(tip_x, tip_y), (tip_x - s(4), tip_y - s(7)), (tip_x + s(4), tip_y - s(7))]
            else:
                points = [(tip_x, tip_y), (tip_x - s(7), tip_y - s(4)), (tip_x - s(7), tip_y + s(4))]
            draw.polygon(points, fill="#1d2733")
    for index, line in enumerate(footer):
        draw.text((s(10), s(layout.height + index * LINE)), line, fill="#5b6b7c", font=regular)
    image.save(path, format="PNG")


# --- Enrollment by month -----------------------------------------------------------------------


def enrollment_chart(months: list[dict], target: int) -> dict:
    """Coordinates for the enrollment chart template: a bar per month (new randomizations), the
    cumulative line, and the target as a dashed line."""
    width, height = 720, 320
    left, right, top, bottom = 60, 20, 20, 70
    plot_width, plot_height = width - left - right, height - top - bottom
    peak = max([target, *[month["cumulative"] for month in months]] or [1]) or 1
    count = max(len(months), 1)
    step = plot_width / count

    def y_of(value: float) -> float:
        return top + plot_height - value / peak * plot_height

    bars, points, labels = [], [], []
    label_every = max(1, count // 12)
    for index, month in enumerate(months):
        x = left + index * step
        bar_height = month["randomized"] / peak * plot_height
        bars.append(
            {
                "x": x + step * 0.2,
                "y": top + plot_height - bar_height,
                "width": step * 0.6,
                "height": bar_height,
                "title": f"{month['month']:%Y-%m}: {month['randomized']}",
            }
        )
        points.append(f"{x + step / 2:.1f},{y_of(month['cumulative']):.1f}")
        if index % label_every == 0:
            labels.append({"x": x + step / 2, "text": f"{month['month']:%Y-%m}"})
    ticks = sorted({0, target, peak, *[round(peak * fraction) for fraction in (0.25, 0.5, 0.75)]})
    return {
        "width": width,
        "height": height,
        "left": left,
        "top": top,
        "right_edge": width - right,
        "baseline": top + plot_height,
        "label_y": top + plot_height + 18,
        "bars": bars,
        "points": " ".join(points),
        "labels": labels,
        "target": target,
        "target_y": y_of(target),
        "ticks": [{"value": tick, "y": y_of(tick)} for tick in ticks],
        "last": months[-1]["cumulative"] if months else 0,
        # Axis titles and the legend, shared by the SVG and the PDF.
        "x_title": gettext("Month of randomization"),
        "y_title": gettext("Participants randomized"),
        "x_title_y": top + plot_height + 34,
        "y_title_x": 14,
        "y_title_y": top + plot_height / 2,
        "legend_y": height - 8,
        "legend": [
            {"kind": kind, "text": text, "x": left + index * 200}
            for index, (kind, text) in enumerate(
                [
                    ("bar", gettext("Randomized in the month")),
                    ("line", gettext("Cumulative")),
                    ("target", gettext("Target %(n)s") % {"n": target}),
                ]
            )
        ],
    }
