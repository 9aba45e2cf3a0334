"""The pharmacist's dosing visits waiting for a kit (dosing.selectors._visits_awaiting_kits, on
/pharmacy/ and /api/v1/pharmacy/queue/): a visit is listed when it has fewer kits than its dose
gives. A given dose gives every kit type, a held infusion the tablets only, a stopped dose none.
Each visit is recorded through the services, with the site's stock made to run out where a
visit should miss a kit."""

from __future__ import annotations

import dataclasses
import datetime
import re
from decimal import Decimal

import pytest
import time_machine

from dosing import selectors, services
from dosing.models import DoseRecord, Kit, KitStatus
from schedules.models import Visit
from tests import dosing_factories as df

DAY0 = datetime.date(2026, 11, 3)
C1_DAY = datetime.datetime(2026, 11, 3, 4, 0, tzinfo=datetime.UTC)
REPEAT_LABS_DAY = datetime.datetime(2026, 11, 5, 4, 0, tzinfo=datetime.UTC)
C2_DAY = datetime.datetime(2026, 12, 1, 4, 0, tzinfo=datetime.UTC)
GIVEN_LABS = {"neutrophils": 3000, "platelets": 200_000, "alt_uln": Decimal("1"), "ast_uln": Decimal("1")}
# Below the first dose's platelet limit (100,000): the infusion is held, the tablets go on.
HELD_LABS = {**GIVEN_LABS, "platelets": 90_000}
# Below a later dose's stop limit (50,000): treatment stops.
STOPPED_LABS = {**GIVEN_LABS, "platelets": 40_000}


def stock(site, *kit_types: str) -> None:
    """One kit of each content of each type named. Every participant here is in the same arm, so
    each pair serves one visit: its other content stays behind, and a packaging lot left holding
    one content serves nobody (its label would name the content). So a type is out of stock once
    as many visits took it as it was stocked for."""
    for kit_type in kit_types:
        for content in ("active", "placebo"):
            df.make_kit(kit_type=kit_type, content=content, site=site)


def record(visit: Visit, user, labs: dict, *, on: datetime.date) -> services.VisitOutcome:
    return services.visit_record(visit=visit, actual_date=on, recorded_by=user, weight_kg=Decimal("60"), **labs)


@dataclasses.dataclass
class Scene:
    given_with_all_kits: Visit
    given_while_infusion_out: Visit
    held_with_tablets: Visit
    held_while_tablets_out: Visit
    given_after_repeat_labs_while_infusion_out: Visit
    given_before_the_stop: Visit
    stopped: Visit

    def listed(self) -> set[int]:
        return {
            self.given_while_infusion_out.pk,
            self.held_while_tablets_out.pk,
            self.given_after_repeat_labs_while_infusion_out.pk,
        }


def kits_of(visit: Visit) -> dict[str, str]:
    return dict(Kit.objects.filter(visit=visit).values_list("kit_type", "status"))


@pytest.fixture
def scene(site, cast) -> Scene:
    # A blinded trial: the list is the query's alone (an open-label one filters it by arm after).
    assert site.trial.protocol.blinded
    coordinator = cast.coordinator

    def c1_of_a_new_participant() -> Visit:
        participant = df.randomized_participant(site, arm_code="COMBO", by=coordinator, day0=DAY0)
        return participant.visits.get(code="C1")

    with time_machine.travel(C1_DAY, tick=False):
        stock(site, "INF", "TAB")
        given_with_all_kits = c1_of_a_new_participant()
        assert not record(given_with_all_kits, coordinator, GIVEN_LABS, on=DAY0).no_kit
        # One of its kits dispensed: a dispensed kit still counts as the visit's.
        infusion = Kit.objects.get(visit=given_with_all_kits, kit_type="INF")
        services.kit_dispense(kit=infusion, label_number=infusion.kit_number, dispensed_by=cast.pharmacist)

        stock(site, "INF", "TAB")
        given_before_the_stop = c1_of_a_new_participant()
        assert not record(given_before_the_stop, coordinator, GIVEN_LABS, on=DAY0).no_kit

        stock(site, "TAB", "TAB")
        held_with_tablets = c1_of_a_new_participant()
        assert not record(held_with_tablets, coordinator, HELD_LABS, on=DAY0).no_kit
        given_after_repeat_labs_while_infusion_out = c1_of_a_new_participant()
        assert not record(given_after_repeat_labs_while_infusion_out, coordinator, HELD_LABS, on=DAY0).no_kit

        # No fit tablet kit left.
        held_while_tablets_out = c1_of_a_new_participant()
        assert record(held_while_tablets_out, coordinator, HELD_LABS, on=DAY0).no_kit

        # Tablets again, the infusion still out: a visit gets all its kits or none.
        stock(site, "TAB")
        given_while_infusion_out = c1_of_a_new_participant()
        assert record(given_while_infusion_out, coordinator, GIVEN_LABS, on=DAY0).no_kit

    with time_machine.travel(REPEAT_LABS_DAY, tick=False):
        repeat = services.visit_repeat_labs(
            visit=given_after_repeat_labs_while_infusion_out,
            recorded_by=coordinator,
            measured_on=REPEAT_LABS_DAY.date(),
            **GIVEN_LABS,
        )
        assert repeat.no_kit

    with time_machine.travel(C2_DAY, tick=False):
        stopped = given_before_the_stop.participant.visits.get(code="C2")
        record(stopped, coordinator, STOPPED_LABS, on=C2_DAY.date())

    made = Scene(
        given_with_all_kits=given_with_all_kits,
        given_while_infusion_out=given_while_infusion_out,
        held_with_tablets=held_with_tablets,
        held_while_tablets_out=held_while_tablets_out,
        given_after_repeat_labs_while_infusion_out=given_after_repeat_labs_while_infusion_out,
        given_before_the_stop=given_before_the_stop,
        stopped=stopped,
    )
    # What each visit's dose and kits came to: the cases the list must tell apart.
    expected = {
        "given_with_all_kits": ("give", {"INF": KitStatus.DISPENSED, "TAB": KitStatus.ASSIGNED}),
        "given_while_infusion_out": ("give", {}),
        "held_with_tablets": ("hold", {"TAB": KitStatus.ASSIGNED}),
        "held_while_tablets_out": ("hold", {}),
        "given_after_repeat_labs_while_infusion_out": ("give", {"TAB": KitStatus.ASSIGNED}),
        "given_before_the_stop": ("give", {"INF": KitStatus.ASSIGNED, "TAB": KitStatus.ASSIGNED}),
        "stopped": ("stop", {}),
    }
    found = {
        field.name: (
            DoseRecord.objects.get(visit=getattr(made, field.name)).decision,
            kits_of(getattr(made, field.name)),
        )
        for field in dataclasses.fields(made)
    }
    assert found == expected
    return made


def test_the_queue_lists_the_visits_short_of_what_their_dose_gives(scene, cast):
    with time_machine.travel(C2_DAY, tick=False):
        awaiting = selectors.pharmacy_queue(cast.pharmacist).awaiting_kits
    # Every visit on DAY0, so in the order they were made.
    assert [visit.pk for visit in awaiting] == sorted(scene.listed())


def test_the_api_names_the_same_visits(scene, cast, api_for):
    with time_machine.travel(C2_DAY, tick=False):
        answer = api_for(cast.pharmacist).get("/api/v1/pharmacy/queue/")
    assert answer.status_code == 200
    rows = answer.json()["awaiting_kits"]
    assert [row["id"] for row in rows] == sorted(scene.listed())
    listed = Visit.objects.filter(pk__in=scene.listed()).select_related("participant").order_by("pk")
    assert [(row["participant"], row["code"], row["actual_date"]) for row in rows] == [
        (visit.participant.label, "C1", DAY0.isoformat()) for visit in listed
    ]


def test_the_page_offers_to_assign_kits_again_to_those_visits_only(scene, cast, client_for):
    with time_machine.travel(C2_DAY, tick=False):
        response = client_for(cast.pharmacist).get("/pharmacy/")
    assert response.status_code == 200
    page = response.content.decode()
    # The section's table: its rows name the participant and the visit, and post to assign again.
    section = page.split("<h2>Dosing visits waiting for a kit</h2>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td>\s*<td><form method=\"post\" action=\"([^\"]*)\"", section)
    listed = Visit.objects.filter(pk__in=scene.listed()).select_related("participant").order_by("pk")
    assert [(label, visit_words.split(" · ")[0], action) for label, visit_words, action in rows] == [
        (visit.participant.label, "C1", f"/visits/{visit.pk}/assign-kits/") for visit in listed
    ]
    # Nowhere else on the page either.
    offered = {int(pk) for pk in re.findall(r"/visits/(\d+)/assign-kits/", page)}
    assert offered == scene.listed()
