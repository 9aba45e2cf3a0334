"""Issue 16, the dosing visit through HTTP (web and API): a held infusion reads as a hold, in
words, with what happens next; repeat labs within the window can turn it into a dose (the
infusion kit is then assigned); counts are entered in the lab report's unit (/mm³ or x10^9/L)
and stored in /mm³; a wrong kit label is refused at its field, keeping what was typed."""

import datetime
import re
from decimal import Decimal

import pytest
import time_machine

from dosing.labs import CountUnit, LabValueInvalid, count_per_mm3
from dosing.models import DoseRecord, Kit, KitStatus, RepeatLabs
from schedules.models import Visit
from tests import dosing_factories as df
from trialsite.models import AuditEvent

DAY0 = datetime.date(2026, 11, 3)
AT_VISIT = datetime.datetime(2026, 11, 3, 4, 0, tzinfo=datetime.UTC)
TWO_DAYS_LATER = datetime.datetime(2026, 11, 5, 4, 0, tzinfo=datetime.UTC)
AFTER_WINDOW = datetime.datetime(2026, 11, 8, 4, 0, tzinfo=datetime.UTC)
HELD = {
    "actual_date": "2026-11-03",
    "weight_kg": "60",
    "neutrophils": "3000",
    "platelets": "90000",
    "alt_uln": "1",
    "ast_uln": "1",
}
RECOVERED = {
    "measured_on": "2026-11-05",
    "neutrophils": "3.2",
    "neutrophils_unit": "1e9_per_l",
    "platelets": "150",
    "platelets_unit": "1e9_per_l",
    "alt_uln": "1",
    "ast_uln": "1",
}


@pytest.fixture
def participant(site, cast):
    for content in ("active", "placebo", "active", "placebo"):
        df.make_kit(kit_type="INF", content=content, site=site)
        df.make_kit(kit_type="TAB", content=content, site=site)
    return df.randomized_participant(site, arm_code="COMBO", by=cast.coordinator, day0=DAY0)


def c1(participant) -> Visit:
    return participant.visits.get(code="C1")


def test_counts_convert_through_pint_to_whole_cells_per_mm3():
    assert count_per_mm3(Decimal("3.5"), CountUnit.GIGA_PER_L, field="neutrophils") == 3500
    assert count_per_mm3("150", "1e9_per_l", field="platelets") == 150_000
    assert count_per_mm3(3500, None, field="neutrophils") == 3500
    for value, unit, field in (
        ("3.5", "per_mm3", "neutrophils"),  # not a whole count
        ("1.2345", "1e9_per_l", "neutrophils"),
        ("-1", None, "neutrophils"),
        ("1001", "1e9_per_l", "neutrophils"),  # over the maximum
        ("1", "mmol", "neutrophils_unit"),
    ):
        with pytest.raises(LabValueInvalid) as refused:
            count_per_mm3(value, unit, field="neutrophils")
        assert refused.value.field == field


def test_a_held_infusion_reads_as_a_hold_and_repeat_labs_turn_it_into_a_dose(participant, cast, client_for):
    visit = c1(participant)
    with time_machine.travel(AT_VISIT, tick=False):
        recorded = client_for(cast.coordinator).post(f"/visits/{visit.pk}/record/", HELD, follow=True)
    page = recorded.content.decode()
    assert '<li class="warning">Infusion held at C1: Platelets 90,000 /mm³: below the limit of 100,000 /mm³.' in page
    assert "The daily tablets continue." in page and "success" not in page.split("<main", 1)[1].split("</ul>")[0]
    assert 'id="repeat-labs"' in page and 'class="badge flag">infusion held' in page
    assert DoseRecord.objects.get(visit=visit).decision == "hold"
    assert set(Kit.objects.filter(visit=visit).values_list("kit_type", flat=True)) == {"TAB"}

    with time_machine.travel(TWO_DAYS_LATER, tick=False):
        repeated = client_for(cast.coordinator).post(f"/visits/{visit.pk}/repeat-labs/", RECOVERED, follow=True)
    page = repeated.content.decode()
    assert "Visit C1 recorded: the infusion is given." in page
    assert "Repeat labs on" in page and "Infusion given" in page and "(after repeat labs)" in page
    repeat = RepeatLabs.objects.get(visit=visit)
    assert (repeat.neutrophils, repeat.platelets, repeat.decision) == (3200, 150_000, "give")
    assert DoseRecord.objects.get(visit=visit).decision == "give"
    assert set(Kit.objects.filter(visit=visit, status=KitStatus.ASSIGNED).values_list("kit_type", flat=True)) == {
        "INF",
        "TAB",
    }
    assert AuditEvent.objects.filter(table_name="dosing_repeatlabs").exists()
    assert AuditEvent.objects.filter(
        table_name="dosing_doserecord", reason="repeat labs after a held infusion"
    ).exists()
    # Nothing left to repeat once given.
    with time_machine.travel(TWO_DAYS_LATER, tick=False):
        again = client_for(cast.coordinator).post(f"/visits/{visit.pk}/repeat-labs/", RECOVERED)
    assert again.status_code == 400 and "whose infusion was held" in again.content.decode()


def test_repeat_labs_still_low_keep_the_hold_and_after_the_window_are_refused_at_the_date(
    participant, cast, client_for, api_for
):
    visit = c1(participant)
    with time_machine.travel(AT_VISIT, tick=False):
        client_for(cast.coordinator).post(f"/visits/{visit.pk}/record/", HELD)
    still_low = {**RECOVERED, "platelets": "95"}
    with time_machine.travel(TWO_DAYS_LATER, tick=False):
        answer = api_for(cast.coordinator).post(f"/api/v1/visits/{visit.pk}/repeat-labs/", still_low, format="json")
    assert answer.status_code == 200
    assert answer.json()["visit"]["dose"]["decision"] == "hold"
    assert answer.json()["visit"]["repeat_labs"][0]["platelets"] == 95_000
    # A second repeat, still low: the hold is said with the latest labs.
    with time_machine.travel(TWO_DAYS_LATER, tick=False):
        again = client_for(cast.coordinator).post(
            f"/visits/{visit.pk}/repeat-labs/", {**RECOVERED, "platelets": "96"}, follow=True
        )
    assert "Infusion held at C1: Platelets 96,000 /mm³: below the limit of 100,000 /mm³." in again.content.decode()
    with time_machine.travel(AFTER_WINDOW, tick=False):
        late = api_for(cast.coordinator).post(
            f"/api/v1/visits/{visit.pk}/repeat-labs/", {**RECOVERED, "measured_on": "2026-11-08"}
        )
        web_late = client_for(cast.coordinator).post(
            f"/visits/{visit.pk}/repeat-labs/", {**RECOVERED, "measured_on": "2026-11-08"}
        )
    assert late.status_code == 400 and list(late.json()) == ["measured_on"]
    assert "window closed" in late.json()["measured_on"][0]
    assert web_late.status_code == 400 and "measured_on" in web_late.context["repeat_form"].errors
    assert DoseRecord.objects.get(visit=visit).decision == "hold"


def test_the_hold_is_said_in_chinese(participant, cast, client_for):
    visit = c1(participant)
    with time_machine.travel(AT_VISIT, tick=False):
        page = (
            client_for(cast.coordinator)
            .post(f"/visits/{visit.pk}/record/", HELD, follow=True, headers={"accept-language": "zh-hans"})
            .content.decode()
        )
    assert "暂停输注" in page and "血小板" in page and "Infusion held" not in page
    text = re.sub(r"<[^>]+>", " ", page.split("<main", 1)[-1])
    assert not re.findall(r"\b[A-Za-z]{4,}\b", text)


def test_labs_in_1e9_per_litre_on_the_page_and_in_the_api(participant, cast, client_for, api_for):
    visit = c1(participant)
    form = client_for(cast.coordinator).get(f"/visits/{visit.pk}/record/").content.decode()
    assert 'value="1e9_per_l"' in form and "\u00d710\u2079/L" in form
    in_giga = {**HELD, "neutrophils": "3.5", "neutrophils_unit": "1e9_per_l", "platelets": "200"}
    in_giga["platelets_unit"] = "1e9_per_l"
    with time_machine.travel(AT_VISIT, tick=False):
        refused = client_for(cast.coordinator).post(
            f"/visits/{visit.pk}/record/", {**in_giga, "neutrophils_unit": "per_mm3"}
        )
        assert refused.status_code == 200 and "neutrophils" in refused.context["form"].errors
        assert "whole number" in refused.context["form"].errors["neutrophils"][0]
        client_for(cast.coordinator).post(f"/visits/{visit.pk}/record/", in_giga)
    dose = DoseRecord.objects.get(visit=visit)
    assert (dose.neutrophils, dose.platelets, dose.decision) == (3500, 200_000, "give")

    other = participant.visits.get(code="C2")
    body = {**HELD, "actual_date": "2026-12-01", "neutrophils": "3.5", "platelets": "150000"}
    with time_machine.travel(datetime.datetime(2026, 12, 1, 4, 0, tzinfo=datetime.UTC), tick=False):
        api = api_for(cast.coordinator)
        bad = api.post(f"/api/v1/visits/{other.pk}/record/", body, format="json")
        assert bad.status_code == 400 and list(bad.json()) == ["neutrophils"]
        bad_unit = api.post(f"/api/v1/visits/{other.pk}/record/", {**body, "neutrophils_unit": "mmol"}, format="json")
        assert bad_unit.status_code == 400 and list(bad_unit.json()) == ["neutrophils_unit"]
        good = api.post(f"/api/v1/visits/{other.pk}/record/", {**body, "neutrophils_unit": "1e9_per_l"}, format="json")
    assert good.status_code == 200
    assert good.json()["visit"]["dose"]["neutrophils"] == 3500


def test_a_wrong_kit_label_is_refused_at_its_field_keeping_what_was_typed(participant, cast, client_for):
    visit = c1(participant)
    with time_machine.travel(AT_VISIT, tick=False):
        client_for(cast.coordinator).post(f"/visits/{visit.pk}/record/", {**HELD, "platelets": "200000"})
    kit, other = Kit.objects.filter(visit=visit, status=KitStatus.ASSIGNED).order_by("kit_type")
    pharmacist = client_for(cast.pharmacist)
    refused = pharmacist.post(f"/pharmacy/kits/{kit.pk}/dispense/", {"label_number": other.kit_number})
    page = refused.content.decode()
    assert refused.status_code == 400
    assert f'value="{other.kit_number}" class="invalid" aria-invalid="true"' in page
    assert f'<ul class="errorlist" id="label-{kit.pk}-error"><li>The number on the label does not match' in page
    assert Kit.objects.get(pk=kit.pk).status == KitStatus.ASSIGNED
