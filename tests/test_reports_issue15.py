"""Reports that hold up when read closely: the PDF builds with many exclusion reasons, marks and
numbers every page and embeds every font (Chinese too); a reason is labelled by its code in the
reader's language, never by one patient's text; unanswered is not failed; and the CONSORT
boxes (CONSORT 2010 items 13a and 13b) add up for a realistic mix of participants."""

from __future__ import annotations

import datetime
import io
import re
from decimal import Decimal
from xml.etree import ElementTree

import pypdf
import pytest
import time_machine
from django.utils import translation

from dosing.models import Decision, DoseRecord
from enrollment.models import Outcome, Participant, ParticipantStatus, Screening
from enrollment.services import participant_withdraw
from reports import charts, selectors
from schedules.models import Visit, VisitStatus
from tests import dosing_factories as df
from tests import factories
from tests import test_reports_exports as exports_tests
from trialsite.audit import audit_context

# The report data and the helpers that read the formats back, shared with the export tests.
ODM, content_of, csv_rows, run_now = (
    exports_tests.ODM,
    exports_tests.content_of,
    exports_tests.csv_rows,
    exports_tests.run_now,
)
data, frozen, media, monitor_both = (
    exports_tests.data,
    exports_tests.frozen,
    exports_tests.media,
    exports_tests.monitor_both,
)

AGE_TEXT = "Age %d on the screening date is outside 20 to 70 years"


def flat(text: str) -> str:
    """Text as read: tags and line breaks (the diagram wraps its lines) become single spaces."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


def fail_with(site, *, by, reasons: list[tuple[str, str]]) -> Screening:
    screening = factories.make_screening(site, by=by, eligible=False)
    with audit_context(actor=by, reason="test screen failure"):
        Screening.objects.filter(pk=screening.pk).update(
            outcome=Outcome.INELIGIBLE, reasons=[{"code": code, "text": text} for code, text in reasons]
        )
    return screening


@pytest.fixture
def many_reasons(data, site, cast):
    """On top of the report data: screen failures on every reason the protocol has, two of them
    on age (18 and 76), so the Excluded box of the CONSORT diagram is long."""
    texts = {c.code: c.text for c in site.trial.protocol.eligibility.criteria}
    fail_with(site, by=cast.coordinator, reasons=[("AGE", AGE_TEXT % 18)])
    fail_with(site, by=cast.coordinator, reasons=[("AGE", AGE_TEXT % 76), ("CONSENT", "Written consent missing")])
    for code, text in texts.items():
        fail_with(site, by=cast.coordinator, reasons=[(code, f"Exclusion applies: {text}")])
    return data


# --- The PDF ------------------------------------------------------------------------------------


def font_problems(reader: pypdf.PdfReader) -> list[str]:
    """Every font used on any page (directly or in a form XObject) with its glyphs in the file."""
    problems = []

    def check_resources(resources, where):
        if not resources:
            return
        resources = resources.get_object()
        for name, font in (resources.get("/Font") or {}).items():
            font = font.get_object()
            base = font.get("/BaseFont")
            descriptors = []
            if font.get("/Subtype") == "/Type0":
                for descendant in font["/DescendantFonts"]:
                    descriptors.append(descendant.get_object().get("/FontDescriptor"))
            else:
                descriptors.append(font.get("/FontDescriptor"))
            for descriptor in descriptors:
                descriptor = descriptor.get_object() if descriptor is not None else {}
                if not any(key in descriptor for key in ("/FontFile", "/FontFile2", "/FontFile3")):
                    problems.append(f"{where}: font {name} ({base}) is not embedded")
        for name, xobject in (resources.get("/XObject") or {}).items():
            xobject = xobject.get_object()
            if xobject.get("/Subtype") == "/Form":
                check_resources(xobject.get("/Resources"), f"{where} {name}")

    for number, page in enumerate(reader.pages, start=1):
        check_resources(page.get("/Resources"), f"page {number}")
    return problems


@pytest.mark.parametrize(
    ("language", "user", "mark", "page_words"),
    [
        ("en", "investigator", "Blinded — confidential", "Page {page} of {pages}"),
        ("zh-hans", "investigator", "设盲 — 机密", "第 {page} 页，共 {pages} 页"),  # noqa: RUF001 - Chinese punctuation
        ("en", "statistician", "Unblinded — confidential", "Page {page} of {pages}"),
    ],
)
def test_the_pdf_builds_with_many_exclusion_reasons_marks_and_numbers_every_page_and_embeds_every_font(
    many_reasons, cast, language, user, mark, page_words
):
    with translation.override(language):
        export = run_now(getattr(cast, user), "report", "pdf")
    content = content_of(export)
    reader = pypdf.PdfReader(io.BytesIO(content))
    pages = len(reader.pages)
    assert pages >= 2
    texts = [page.extract_text() for page in reader.pages]
    for number, text in enumerate(texts, start=1):
        flat = re.sub(r"\s+", " ", text)
        assert mark in flat, f"page {number} has no blinding mark"
        assert page_words.format(page=number, pages=pages) in flat, f"page {number} has no page number"
    # No page is empty, and none ends with a heading (it goes with what it introduces).
    headings = {"Enrollment by site", "Screen failures by reason", "Enrollment by month", "CONSORT flow"}
    headings |= {"各中心入组情况", "按原因统计的筛选失败", "按月入组", "CONSORT 流程"}
    for number, text in enumerate(texts, start=1):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        content = [line for line in lines if line != mark and line != page_words.format(page=number, pages=pages)]
        assert content, f"page {number} is empty"
        assert content[-1] not in headings, f"page {number} ends with the heading {content[-1]}"
    assert font_problems(reader) == []
    assert b"STSong" not in content and b"Helvetica" not in content
    everything = " ".join(texts)
    assert "excluded_eligible_not_randomized" not in everything and "not_received_" not in everything
    if language == "zh-hans":
        assert "临床诊断为伴远处转移的鼻咽癌" in re.sub(r"\s+", "", everything)


def test_the_chart_has_axis_titles_and_a_legend(data, cast, client_for):
    page = flat(client_for(cast.investigator).get("/reports/").content.decode())
    assert "Month of randomization" in page and "Participants randomized" in page
    assert "Randomized in the month" in page and "Cumulative" in page and "Target 100" in page
    reader = pypdf.PdfReader(io.BytesIO(content_of(run_now(cast.investigator, "report", "pdf"))))
    text = flat(" ".join(one.extract_text() for one in reader.pages))
    for words in ("Month of randomization", "Randomized in the month", "Cumulative", "Target 100"):
        assert words in text


def test_the_consort_png_draws_chinese_with_a_real_font(many_reasons, cast):
    from PIL import Image, ImageDraw

    font = charts._font(24)
    assert font.path == str(charts.cjk_font_path())

    def drawn(text: str) -> bytes:
        image = Image.new("L", (200, 40), 0)
        ImageDraw.Draw(image).text((2, 2), text, fill=255, font=font)
        return image.tobytes()

    # Two Chinese characters differ from each other and from a character no font has (a box).
    assert drawn("临床") != drawn("\U000f0000\U000f0001")
    assert drawn("临") != drawn("床")
    with translation.override("zh-hans"):
        png = content_of(run_now(cast.statistician, "consort_diagram", "png"))
    assert Image.open(io.BytesIO(png)).width > 800


# --- Reason labels --------------------------------------------------------------------------------


def test_a_reason_row_is_labelled_by_its_code_in_the_readers_language(many_reasons, cast, client_for, api_for):
    report = selectors.enrollment_report(selectors.report_scope(cast.investigator))
    age = next(reason for reason in report.failure_reasons if reason["code"] == "AGE")
    assert age["total"] == 2
    assert age["text"] == "Age outside 20 to 70 years"
    page = flat(client_for(cast.investigator).get("/reports/").content.decode())
    svg = client_for(cast.investigator).post("/reports/exports/", {"kind": "consort_diagram", "format": "svg"})
    svg = flat(b"".join(svg.streaming_content).decode())
    failures_csv = "\n".join(
        ",".join(row) for row in csv_rows(content_of(run_now(cast.investigator, "screen_failures", "csv")))
    )
    consort_csv = "\n".join(",".join(row) for row in csv_rows(content_of(run_now(cast.investigator, "consort", "csv"))))
    api = api_for(cast.investigator).get("/api/v1/reports/consort/").content.decode()
    for where, text in (
        ("page", page),
        ("svg", svg),
        ("csv", failures_csv),
        ("consort csv", consort_csv),
        ("api", api),
    ):
        assert "Age outside 20 to 70 years" in text, where
        assert "Age 18" not in text and "Age 76" not in text, where
    with translation.override("zh-hans"):
        report = selectors.enrollment_report(selectors.report_scope(cast.investigator))
        chinese_csv = "\n".join(
            ",".join(row) for row in csv_rows(content_of(run_now(cast.investigator, "screen_failures", "csv")))
        )
    labels = {reason["code"]: reason["text"] for reason in report.failure_reasons}
    assert labels["EX1"] == "肝脏疾病" and labels["IN1"] == "临床诊断为伴远处转移的鼻咽癌"
    assert labels["AGE"] == "年龄不在 20 至 70 岁之间"
    assert "肝脏疾病" in chinese_csv and "Liver disease" not in chinese_csv


# --- Unanswered is not failed ---------------------------------------------------------------------


def test_an_unanswered_criterion_is_listed_as_unanswered_not_failed(data, site, cast, monitor_both):
    from enrollment.models import EligibilityAnswer

    # A second incomplete screening that also failed IN1: failed IN1, unanswered EX3.
    screening = factories.make_screening(site, by=cast.coordinator)
    with audit_context(actor=cast.coordinator, reason="test incomplete screening"):
        EligibilityAnswer.objects.filter(screening=screening, criterion_code="EX3").update(answer=None)
        EligibilityAnswer.objects.filter(screening=screening, criterion_code="IN1").update(answer="no")
        Screening.objects.filter(pk=screening.pk).update(
            outcome=Outcome.INCOMPLETE,
            reasons=[
                {"code": "EX3", "text": "Not answered: Long-term use of anticoagulants"},
                {"code": "IN1", "text": "Inclusion not met: ..."},
            ],
        )
        # The fixture's incomplete screening lists its unanswered item as its verdict does.
        Screening.objects.filter(outcome=Outcome.INCOMPLETE).exclude(pk=screening.pk).update(
            reasons=[{"code": "EX3", "text": "Not answered: Long-term use of anticoagulants"}]
        )
    rows = csv_rows(content_of(run_now(monitor_both, "subjects", "csv")))
    headings, body = rows[0], rows[1:]
    outcome, failed, unanswered = (
        headings.index(h) for h in ("Screening outcome", "Failed criteria", "Unanswered criteria")
    )
    incomplete = sorted((row[failed], row[unanswered]) for row in body if row[outcome] == "incomplete")
    assert incomplete == [("", "EX3"), ("IN1", "EX3")]
    ineligible = [row for row in body if row[outcome] == "ineligible"]
    assert all(row[failed] and not row[unanswered] for row in ineligible)
    root = ElementTree.fromstring(content_of(run_now(monitor_both, "dataset", "odm")))
    found = []
    for subject in root.iter(f"{ODM}SubjectData"):
        items = {item.get("ItemOID"): item.get("Value") for item in subject.iter(f"{ODM}ItemData")}
        if items.get("IT.OUTCOME") == "incomplete":
            found.append((items.get("IT.FAILED_CRITERIA"), items.get("IT.UNANSWERED_CRITERIA")))
    assert sorted(found, key=str) == sorted([(None, "EX3"), ("IN1", "EX3")], key=str)


# --- CONSORT ------------------------------------------------------------------------------------


def _dose(visit: Visit, decision: str, *, by) -> None:
    with audit_context(actor=by, reason="test dose"):
        Visit.objects.filter(pk=visit.pk).update(status=VisitStatus.COMPLETED, actual_date=visit.target_date)
        DoseRecord.objects.create(
            visit=visit,
            participant=visit.participant,
            site=visit.site,
            first_dose=visit.code == "C1",
            neutrophils=3000 if decision == Decision.GIVE else 400,
            platelets=200000,
            alt_uln=Decimal("1"),
            ast_uln=Decimal("1"),
            decision=decision,
            reasons=[],
            weight_kg=Decimal("60"),
            baseline_weight_kg=Decimal("60"),
            dose_mg=Decimal("240"),
            concentrate_ml=Decimal("12"),
            diluted_volume_ml=Decimal("100"),
            vial_plan=[[80, 3]],
            recorded_by=by,
        )
        if decision == Decision.STOP:
            Visit.objects.filter(participant=visit.participant, kind="dosing", status=VisitStatus.SCHEDULED).update(
                status=VisitStatus.CANCELLED
            )


def _missed(participant: Participant, code: str) -> None:
    with audit_context(reason="test missed visit"):
        Visit.objects.filter(participant=participant, code=code).update(status=VisitStatus.MISSED)


@pytest.fixture
def mixed(site, cast):
    """Nine randomized participants, one of each course a trial sees (see the expected counts)."""
    by = cast.coordinator
    day0 = datetime.date(2026, 11, 3)
    arms = ["TOC", "ASA", "COMBO", "PBO"]
    people = {
        name: df.randomized_participant(site, arm_code=arms[index % 4], by=by, day0=day0)
        for index, name in enumerate(
            [
                "on_treatment",
                "stopped",
                "lost",
                "withdrew_early",
                "withdrew_later",
                "held",
                "not_yet",
                "completed",
                "stopped_then_lost",
            ]
        )
    }

    def visit(name, code):
        return people[name].visits.get(code=code)

    for name in ("on_treatment", "stopped", "lost", "withdrew_later", "completed", "stopped_then_lost"):
        _dose(visit(name, "C1"), Decision.GIVE, by=by)
    _dose(visit("on_treatment", "C2"), Decision.GIVE, by=by)
    _dose(visit("stopped", "C2"), Decision.STOP, by=by)
    _missed(people["lost"], "C2")
    _dose(visit("held", "C1"), Decision.HOLD, by=by)
    _dose(visit("stopped_then_lost", "C2"), Decision.STOP, by=by)
    _missed(people["stopped_then_lost"], "EOT")
    with audit_context(reason="test completion"):
        Participant.objects.filter(pk=people["completed"].pk).update(status=ParticipantStatus.COMPLETED)
    with time_machine.travel(datetime.datetime(2026, 12, 15, 4, tzinfo=datetime.UTC), tick=False):
        for name in ("withdrew_early", "withdrew_later"):
            participant_withdraw(
                participant=people[name], withdrawn_by=by, withdrawn_on=datetime.date(2026, 12, 1), reason="moved away"
            )
    return people


EXPECTED = {
    "allocated": 9,
    "received": 6,
    "not_received": 3,
    "not_received_reasons": {"withdrew": 1, "died": 0, "first_dose_held": 1, "no_dose_yet": 1},
    "lost_to_follow_up": 2,
    "lost_reasons": {"missed_last_visit": 2},
    "discontinued": 3,
    "discontinued_reasons": {"withdrew": 2, "died": 0, "stopped_by_lab_gates": 1},
    "on_treatment": 3,
    "completed": 1,
    "analysed": 9,
    "excluded_from_analysis": 0,
}


def _group_numbers(group) -> dict:
    numbers = {key: getattr(group, key) for key in EXPECTED if not key.endswith("_reasons")}
    for key in ("not_received_reasons", "lost_reasons", "discontinued_reasons"):
        numbers[key] = {reason: n for reason, _label, n in getattr(group, key)}
    return numbers


def _adds_up(group) -> None:
    assert group.received + group.not_received == group.allocated
    assert group.on_treatment + group.completed + group.discontinued + group.lost_to_follow_up == group.allocated
    assert sum(n for _key, _label, n in group.not_received_reasons) == group.not_received
    assert sum(n for _key, _label, n in group.discontinued_reasons) == group.discontinued
    assert sum(n for _key, _label, n in group.lost_reasons) == group.lost_to_follow_up
    assert group.analysed + group.excluded_from_analysis == group.allocated


def test_the_consort_boxes_add_up_for_a_realistic_mix(mixed, cast, client_for, api_for):
    flow = selectors.consort_flow(selectors.report_scope(cast.investigator))
    [group] = flow.groups
    assert _group_numbers(group) == EXPECTED
    _adds_up(group)
    assert flow.assessed == flow.excluded + flow.randomized
    # Unblinded: every arm adds up, and the arms add up to the blinded totals.
    unblinded = selectors.consort_flow(selectors.report_scope(cast.statistician))
    assert len(unblinded.groups) == 4
    for arm in unblinded.groups:
        _adds_up(arm)
    for key in (
        "allocated",
        "received",
        "not_received",
        "lost_to_follow_up",
        "discontinued",
        "on_treatment",
        "completed",
    ):
        assert sum(getattr(arm, key) for arm in unblinded.groups) == getattr(group, key), key
    # The enrollment table's "on treatment" is the CONSORT one (lost to follow-up excluded).
    report = selectors.enrollment_report(selectors.report_scope(cast.investigator))
    assert report.total["on_treatment"] == 3


def test_the_consort_counts_appear_on_the_page_the_api_the_csv_and_the_pdf(mixed, cast, client_for, api_for):
    api = api_for(cast.investigator).get("/api/v1/reports/consort/").json()
    [group] = api["groups"]
    assert (group["received"], group["not_received"], group["discontinued"], group["lost_to_follow_up"]) == (6, 3, 3, 2)
    assert {r["key"]: r["n"] for r in group["discontinued_reasons"]} == {
        "withdrew": 2,
        "died": 0,
        "stopped_by_lab_gates": 1,
    }
    assert group["excluded_from_analysis"] == 0 and "no exclusion" in api["analysis_note"]
    rows = {row[0]: row for row in csv_rows(content_of(run_now(cast.investigator, "consort", "csv")))}
    assert rows["received_intervention"][3] == "6"
    assert rows["discontinued_stopped_by_lab_gates"][3] == "1"
    assert rows["lost_missed_last_visit"][3] == "2"
    assert rows["excluded_from_analysis"][3] == "0"
    page = flat(client_for(cast.investigator).get("/reports/").content.decode())
    pdf = flat(
        " ".join(
            one.extract_text()
            for one in pypdf.PdfReader(io.BytesIO(content_of(run_now(cast.investigator, "report", "pdf")))).pages
        )
    )
    for text in (page, pdf):
        assert "Received allocated intervention (n=6)" in text
        assert "Treatment stopped by the lab safety gates (n=1)" in text
        assert "Lost to follow-up (n=2)" in text
        assert "Excluded from analysis (n=0)" in text
