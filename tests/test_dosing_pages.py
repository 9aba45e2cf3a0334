"""The pages and the API, end to end through HTTP: who may do what, and what a blinded user
can read (never a content or an arm)."""

import datetime
import re
from decimal import Decimal

import pytest
import time_machine
from django.core.files.uploadedfile import SimpleUploadedFile

from dosing import services
from dosing.models import Kit, KitStatus
from schedules.models import Visit, VisitStatus
from tests import dosing_factories as df

DAY0 = datetime.date(2026, 11, 3)
AT_VISIT = datetime.datetime(2026, 11, 3, 4, 0, tzinfo=datetime.UTC)
LABS = {"weight_kg": "60", "neutrophils": 3000, "platelets": 200000, "alt_uln": "1", "ast_uln": "1"}
# Words that would reveal allocation on a blinded surface.
REVEALING = re.compile(r"\b(active|placebo|tocilizumab|aspirin|TOC|ASA|COMBO|PBO)\b", re.IGNORECASE)


@pytest.fixture
def two_arms(site, cast):
    """Two participants, one per opposite arm, each with both kits assigned at C1."""
    people = []
    # Stock of every content first, two of each: a site that cannot serve every content (even
    # one the visit does not need) assigns nothing.
    for content in ("active", "placebo", "active", "placebo"):
        df.make_kit(kit_type="INF", content=content, site=site)
        df.make_kit(kit_type="TAB", content=content, site=site)
    for arm in ("COMBO", "PBO"):
        participant = df.randomized_participant(site, arm_code=arm, by=cast.coordinator, day0=DAY0)
        with time_machine.travel(AT_VISIT, tick=False):
            services.visit_record(
                visit=participant.visits.get(code="C1"),
                actual_date=DAY0,
                recorded_by=cast.coordinator,
                weight_kg=Decimal("60"),
                neutrophils=3000,
                platelets=200000,
                alt_uln=Decimal("1"),
                ast_uln=Decimal("1"),
            )
        people.append(participant)
    return people


def assert_blind(text: str) -> None:
    # The menu marks the current page with the CSS class "active"; that word reveals nothing.
    text = text.replace('class="active"', "")
    found = REVEALING.findall(text)
    assert not found, [text[max(m.start() - 120, 0) : m.end() + 40] for m in REVEALING.finditer(text)]


def test_the_pharmacists_pages_and_api_never_show_content_or_arm(two_arms, cast, client_for, api_for):
    client = client_for(cast.pharmacist)
    api = api_for(cast.pharmacist)
    kits = Kit.objects.filter(status=KitStatus.ASSIGNED)
    assert {kit.content for kit in kits} == {"active", "placebo"}

    queue = client.get("/pharmacy/")
    assert queue.status_code == 200
    page = queue.content.decode()
    for kit in kits:
        assert kit.kit_number in page
    assert "240" in page and "12" in page  # the same preparation for both arms
    assert_blind(page)
    assert_blind(client.get("/pharmacy/accountability/").content.decode())
    for participant in two_arms:
        assert_blind(client.get(f"/visits/{participant.visits.get(code='C1').pk}/").content.decode())

    for url in ("/api/v1/pharmacy/queue/", "/api/v1/kits/", "/api/v1/accountability/kits/", "/api/v1/visits/"):
        response = api.get(url)
        assert response.status_code == 200, url
        assert_blind(response.content.decode())
        assert '"content"' not in response.content.decode()

    for kit in kits:
        dispensed = api.post(f"/api/v1/kits/{kit.pk}/dispense/", {"label_number": kit.kit_number}, format="json")
        assert dispensed.status_code == 200
        assert_blind(dispensed.content.decode())
    assert_blind(client.get("/pharmacy/").content.decode())


def test_the_coordinators_participant_panel_is_blind(two_arms, cast, client_for, rf):
    from django.template.loader import render_to_string

    request = rf.get("/")
    request.user = cast.coordinator
    for participant in two_arms:
        html = render_to_string("dosing/participant_panel.html", {"participant": participant}, request=request)
        assert "C12" in html and "FU4" in html
        assert participant.kits.first().kit_number in html
        assert_blind(html)


def test_the_participant_panel_lists_the_plan_in_a_constant_number_of_queries(
    two_arms, cast, rf, django_assert_max_num_queries
):
    from django.template.loader import render_to_string

    request = rf.get("/")
    request.user = cast.coordinator
    render_to_string("dosing/participant_panel.html", {"participant": two_arms[0]}, request=request)
    with django_assert_max_num_queries(5):
        render_to_string("dosing/participant_panel.html", {"participant": two_arms[1]}, request=request)


def test_the_pharmacy_queue_is_a_constant_number_of_queries(two_arms, cast, client_for, django_assert_max_num_queries):
    client = client_for(cast.pharmacist)
    with django_assert_max_num_queries(14):
        assert client.get("/pharmacy/").status_code == 200


def test_a_label_mismatch_is_refused_on_the_page_and_in_the_api(two_arms, cast, client_for, api_for):
    kit = Kit.objects.filter(status=KitStatus.ASSIGNED).order_by("kit_number").first()
    other = Kit.objects.filter(status=KitStatus.ASSIGNED).exclude(pk=kit.pk).first()

    response = client_for(cast.pharmacist).post(
        f"/pharmacy/kits/{kit.pk}/dispense/", {"label_number": other.kit_number}, follow=True
    )
    assert "does not match" in response.content.decode()
    api_response = api_for(cast.pharmacist).post(
        f"/api/v1/kits/{kit.pk}/dispense/", {"label_number": other.kit_number}, format="json"
    )
    assert api_response.status_code == 400
    assert "label_number" in api_response.json()
    kit.refresh_from_db()
    assert kit.status == KitStatus.ASSIGNED


def test_other_sites_kits_and_visits_do_not_exist_for_a_user(two_arms, cast, other_site, api_for, client_for):
    kit = Kit.objects.filter(status=KitStatus.ASSIGNED).first()
    visit = two_arms[0].visits.get(code="C2")
    outsider = api_for(cast.other_coordinator)
    assert outsider.get(f"/api/v1/visits/{visit.pk}/").status_code == 404
    assert outsider.post(f"/api/v1/kits/{kit.pk}/dispense/", {"label_number": kit.kit_number}).status_code == 404
    assert client_for(cast.other_coordinator).get(f"/visits/{visit.pk}/record/").status_code == 404
    # A coordinator cannot dispense; a pharmacist cannot record visits.
    assert api_for(cast.coordinator).post(f"/api/v1/kits/{kit.pk}/dispense/", {}).status_code == 404
    assert client_for(cast.pharmacist).get(f"/visits/{visit.pk}/record/").status_code == 404


def test_supply_pages_need_the_unblinded_supply_role(two_arms, cast, client_for, api_for):
    for user in (cast.pharmacist, cast.coordinator, cast.monitor, cast.statistician):
        assert client_for(user).get("/supply/").status_code == 404
        assert api_for(user).get("/api/v1/supply/kits/").status_code == 404
    page = client_for(cast.supply_manager).get("/supply/")
    assert page.status_code == 200 and "placebo" in page.content.decode()
    kits = api_for(cast.supply_manager).get("/api/v1/supply/kits/").json()["results"]
    assert {kit["content"] for kit in kits} == {"active", "placebo"}


def test_the_coordinator_records_a_visit_through_the_page_and_sees_the_dose(site, cast, client_for):
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    visit = participant.visits.get(code="C1")
    client = client_for(cast.coordinator)
    with time_machine.travel(AT_VISIT, tick=False):
        response = client.post(f"/visits/{visit.pk}/record/", {"actual_date": "2026-11-03", **LABS}, follow=True)
    html = response.content.decode()
    assert response.status_code == 200
    assert "No kit available; the supply manager has been notified." in html
    assert "240" in html and "3 x 80 mg" in html
    assert_blind(html)
    visit.refresh_from_db()
    assert visit.status == VisitStatus.COMPLETED


def test_an_out_of_window_visit_without_reason_shows_the_error_at_the_field(site, cast, client_for):
    participant = df.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=DAY0)
    visit = participant.visits.get(code="C1")
    with time_machine.travel(datetime.datetime(2026, 11, 10, 4, tzinfo=datetime.UTC), tick=False):
        response = client_for(cast.coordinator).post(
            f"/visits/{visit.pk}/record/", {"actual_date": "2026-11-09", **LABS}
        )
    assert response.status_code == 200
    assert "outside the window" in response.content.decode()
    assert Visit.objects.get(pk=visit.pk).status == VisitStatus.SCHEDULED


def test_the_api_records_a_visit_and_answers_no_kit_without_naming_the_content(site, cast, api_for):
    participant = df.randomized_participant(site, arm_code="ASA", by=cast.coordinator, day0=DAY0)
    visit = participant.visits.get(code="C1")
    with time_machine.travel(AT_VISIT, tick=False):
        response = api_for(cast.coordinator).post(
            f"/api/v1/visits/{visit.pk}/record/", {"actual_date": "2026-11-03", **LABS}, format="json"
        )
    assert response.status_code == 200
    body = response.json()
    assert body["no_kit"] is True
    assert body["message"] == "No kit available; the supply manager has been notified."
    assert body["visit"]["dose"]["dose_mg"] == "240.0"
    assert_blind(response.content.decode())


def test_weight_out_of_bounds_is_refused_by_the_api_at_the_field(site, cast, api_for):
    participant = df.randomized_participant(site, arm_code="ASA", by=cast.coordinator, day0=DAY0)
    visit = participant.visits.get(code="C1")
    with time_machine.travel(AT_VISIT, tick=False):
        response = api_for(cast.coordinator).post(
            f"/api/v1/visits/{visit.pk}/record/", {"actual_date": "2026-11-03", **LABS, "weight_kg": "0"}, format="json"
        )
    assert response.status_code == 400
    assert "weight_kg" in response.json()


def test_a_supply_manager_imports_ships_and_the_pharmacist_receives(site, cast, client_for, api_for):
    csv_text = (
        "kit_number,kit_type,content,lot,expiry,packaging_lot\n"
        "A1B2-0001,INF,active,L1,2028-01-31,P1\n"
        "C3D4-0002,INF,placebo,L2,2028-02-29,P1\n"
    )
    response = client_for(cast.supply_manager).post(
        "/supply/",
        {"action": "import", "file": SimpleUploadedFile("kits.csv", csv_text.encode(), content_type="text/csv")},
        follow=True,
    )
    assert "2 kits imported" in response.content.decode()
    # The label of both shows the packaging lot's earliest expiry.
    assert set(Kit.objects.values_list("label_expiry", flat=True)) == {datetime.date(2028, 1, 31)}
    shipped = api_for(cast.supply_manager).post(
        "/api/v1/supply/shipments/", {"site": "NT", "per_content": {"INF": 1}}, format="json"
    )
    assert shipped.status_code == 201
    shipment_id = shipped.json()["id"]
    assert set(Kit.objects.values_list("status", "shipment_id")) == {(KitStatus.SHIPPED, shipment_id)}
    received = api_for(cast.pharmacist).post(f"/api/v1/shipments/{shipment_id}/receive/")
    assert received.status_code == 200
    assert_blind(received.content.decode())
    assert Kit.objects.get(kit_number="A1B2-0001").status == KitStatus.AT_SITE
    stock = api_for(cast.supply_manager).get("/api/v1/supply/stock/").json()
    line = next(row for row in stock if row["kit_type"] == "INF" and row["content"] == "active")
    assert (line["available"], line["low"]) == (1, True)


def test_the_excursion_quarantine_and_release_go_through_the_api(site, cast, api_for):
    kit = df.make_kit(site=site)
    quarantined = api_for(cast.pharmacist).post(
        f"/api/v1/kits/{kit.pk}/excursion/", {"description": "fridge 11 °C for 2 h"}, format="json"
    )
    assert quarantined.json()["status"] == "quarantined"
    released = api_for(cast.supply_manager).post(
        f"/api/v1/supply/kits/{kit.pk}/release/", {"reason": "within stability data"}, format="json"
    )
    assert released.json()["status"] == "at_site"
    again = api_for(cast.supply_manager).post(
        f"/api/v1/supply/kits/{kit.pk}/release/", {"reason": "twice"}, format="json"
    )
    assert again.status_code == 409


def test_accountability_counts_returned_tablets_and_adherence(two_arms, cast, api_for):
    tablets = Kit.objects.filter(participant=two_arms[0], kit_type="TAB").get()
    with time_machine.travel(AT_VISIT, tick=False):
        services.kit_dispense(kit=tablets, label_number=tablets.kit_number, dispensed_by=cast.pharmacist)
    with time_machine.travel(datetime.datetime(2026, 12, 1, 4, tzinfo=datetime.UTC), tick=False):
        response = api_for(cast.pharmacist).post(
            f"/api/v1/kits/{tablets.pk}/return/", {"returned_on": "2026-12-01", "tablets_returned": 14}, format="json"
        )
    assert response.status_code == 200
    rows = api_for(cast.pharmacist).get("/api/v1/accountability/participants/").json()
    row = next(row for row in rows if row["participant"] == two_arms[0].label)
    # 35 - 14 = 21 tablets taken over 28 days.
    assert (row["tablets_taken"], row["days_elapsed"], row["adherence"]) == (21, 28, "0.75")


def test_the_audit_trail_blinds_kit_content_for_the_monitor(two_arms, cast, api_for):
    kit = Kit.objects.filter(status=KitStatus.ASSIGNED).first()
    events = api_for(cast.monitor).get(f"/api/v1/audit-events/?table=dosing_kit&pk={kit.pk}").json()["results"]
    assert events
    assert all(event["new_values"]["content"] == "■ blinded" for event in events if event["new_values"])
    assert_blind(str(events))


def test_api_lists_take_the_same_number_of_queries_for_more_rows(two_arms, site, cast, api_for):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    pharmacist, supply = api_for(cast.pharmacist), api_for(cast.supply_manager)
    urls = [
        (pharmacist, "/api/v1/visits/"),
        (pharmacist, "/api/v1/pharmacy/queue/"),
        (pharmacist, "/api/v1/accountability/kits/"),
        (pharmacist, "/api/v1/accountability/participants/"),
        (supply, "/api/v1/supply/kits/"),
        (supply, "/api/v1/supply/stock/"),
    ]

    def counts():
        result = []
        for client, url in urls:
            with CaptureQueriesContext(connection) as queries:
                assert client.get(url).status_code == 200, url
            # The session's idle-timeout refresh and its savepoints come and go with the clock.
            result.append(
                sum(
                    1
                    for q in queries.captured_queries
                    if "django_session" not in q["sql"] and "SAVEPOINT" not in q["sql"]
                )
            )
        return result

    def dispense_all():
        for kit in Kit.objects.filter(status=KitStatus.ASSIGNED):
            with time_machine.travel(AT_VISIT, tick=False):
                services.kit_dispense(kit=kit, label_number=kit.kit_number, dispensed_by=cast.pharmacist)

    dispense_all()
    counts()  # warm up: the first request of a login also loads the user's roles once more
    before = counts()
    for arm in ("TOC", "ASA"):
        participant = df.randomized_participant(site, arm_code=arm, by=cast.coordinator, day0=DAY0)
        df.make_kit(kit_type="INF", content="active" if arm == "TOC" else "placebo", site=site)
        df.make_kit(kit_type="TAB", content="placebo" if arm == "TOC" else "active", site=site)
        with time_machine.travel(AT_VISIT, tick=False):
            services.visit_record(
                visit=participant.visits.get(code="C1"),
                actual_date=DAY0,
                recorded_by=cast.coordinator,
                weight_kg=Decimal("70"),
                neutrophils=3000,
                platelets=200000,
                alt_uln=Decimal("1"),
                ast_uln=Decimal("1"),
            )
    dispense_all()
    assert counts() == before


def test_the_pharmacy_speaks_simplified_chinese(two_arms, cast, client_for):
    client = client_for(cast.pharmacist)
    client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    page = client.get("/pharmacy/").content.decode()
    assert "待发放药盒" in page and "从 100.0 mL 0.9% 氯化钠注射液袋中抽出 12.0 mL" in page
    assert_blind(page)


def test_supply_stock_warns_of_low_stock_and_near_expiry_per_content(site, cast, api_for):
    today = datetime.date.today()
    for _ in range(4):
        df.make_kit(kit_type="TAB", content="active", site=site, expiry=today + datetime.timedelta(days=400))
    df.make_kit(kit_type="TAB", content="placebo", site=site, expiry=today + datetime.timedelta(days=30))
    stock = {
        (row["kit_type"], row["content"]): row
        for row in api_for(cast.supply_manager).get("/api/v1/supply/stock/").json()
    }
    assert (stock["TAB", "active"]["available"], stock["TAB", "active"]["low"]) == (4, False)
    assert (stock["TAB", "placebo"]["low"], stock["TAB", "placebo"]["expiring_soon"]) == (True, 1)
    assert stock["INF", "active"]["low"] and stock["INF", "active"]["available"] == 0


def test_the_pharmacy_queue_is_paged_oldest_first_on_the_page_and_in_the_api(
    two_arms, cast, client_for, api_for, monkeypatch
):
    from dosing import selectors

    monkeypatch.setattr(selectors, "PHARMACY_PAGE_SIZE", 1)
    assigned = list(Kit.objects.filter(status=KitStatus.ASSIGNED).order_by("assigned_at", "visit_id", "kit_type", "id"))
    assert len(assigned) >= 2
    client = client_for(cast.pharmacist)
    first = client.get("/pharmacy/").content.decode()
    assert assigned[0].kit_number in first and assigned[1].kit_number not in first
    assert f"Page 1 of {len(assigned)} ({len(assigned)} kits, oldest first)" in first
    second = client.get("/pharmacy/?dispense_page=2").content.decode()
    assert assigned[1].kit_number in second and assigned[0].kit_number not in second

    queue = api_for(cast.pharmacist).get("/api/v1/pharmacy/queue/?dispense_page=2").json()
    assert [kit["kit_number"] for kit in queue["to_dispense"]] == [assigned[1].kit_number]
    assert queue["to_dispense_total"] == len(assigned)
    # A page number that is not one gives the first page, not an error.
    assert client.get("/pharmacy/?dispense_page=abc").status_code == 200
