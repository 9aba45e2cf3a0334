"""Case report forms as data: the protocol declares the forms (`[[forms]]`); the page and the
API enter them through one service; item errors at the item; a reason and an audit row per item
for every change of a saved value; status; conditions; cross checks; warnings in both languages;
unblinded-only items hidden from blinded readers everywhere; other sites see nothing."""

import datetime
import tomllib
from decimal import Decimal

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from crf import selectors, services
from crf.models import FormRecord, FormStatus, ItemValue
from tests import dosing_factories, factories
from trialsite.models import AuditEvent
from trialsite.protocol import load_protocol
from trialsite.protocol_schema import ProtocolError, parse_protocol

VITALS = {"weight": "62.5", "height": "168", "systolic": "128", "diastolic": "82", "pulse": "76", "temperature": "36.6"}
ASPIRIN_LIKE = {
    "drug_name": "Warfarin",
    "indication": "Atrial fibrillation",
    "drug_class": "anticoagulant",
    "dose": "3 mg daily",
    "start_date": "2026-10-01",
    "ongoing": "yes",
}
# A test-only form with an item only unblinded staff see, carried at every cycle visit ("C*").
TABLET_CHECK = """
[[forms]]
code = "tablets"
name = "Tablet return"
name_zh = "片剂回收"
kind = "visit"
visits = ["C*"]
items = [
    { code = "returned", label = "Tablets returned", label_zh = "回收片数", type = "integer", min = 0, max = 35, required = true },
    { code = "kit_content", label = "Kit content check", label_zh = "药盒内容核对", type = "text", unblinded_only = true },
]
"""


@pytest.fixture
def trial(db, tmp_path):
    """The trial's protocol file plus the test-only form."""
    path = tmp_path / "NCT06442709.toml"
    path.write_text(settings.PROTOCOL_FILE.read_text(encoding="utf-8") + TABLET_CHECK, encoding="utf-8")
    return load_protocol(path)


@pytest.fixture
def participant(site, cast):
    return dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)


@pytest.fixture
def unblinded(site):
    return factories.make_user_with_every_role(site, username="unblinded-pharmacist")


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def document() -> dict:
    with open(settings.PROTOCOL_FILE, "rb") as protocol_file:
        return tomllib.load(protocol_file)


# --- The protocol file ----------------------------------------------------------------------


def test_the_trials_forms_load_as_typed_objects():
    protocol = parse_protocol(document())
    vitals, conmeds = protocol.form("vitals"), protocol.form("conmeds")
    assert vitals.carried_at("C1") and vitals.carried_at("C12") and not vitals.carried_at("EOT")
    assert vitals.item("temperature").unit == "°C" and vitals.item("weight").min == Decimal(20)
    assert conmeds.kind == "log" and conmeds.item("stop_date").show_if.equals is False
    assert protocol.code_list("medication_class").entry("anticoagulant").label_zh == "抗凝药"


def test_mistakes_in_forms_are_named_by_their_path():
    broken = document()
    # The trial's vitals and con-meds only (not the pre-dose labs the dose reads), so the forms
    # appended below are forms[2] and forms[3].
    broken["forms"] = [form for form in broken["forms"] if form["code"] in ("vitals", "conmeds")]
    del broken["dosing"]["safety"]["labs_form"]
    broken["forms"].append(
        {
            "code": "broken",
            "name": "Broken",
            "kind": "visit",
            "visits": ["C1", "not a visit"],
            "items": [
                {"code": "a", "label": "A", "type": "choice", "code_list": "no_such_list"},
                {"code": "a", "label": "A again", "type": "integer", "min": 5, "max": 1},
                {"code": "b", "label": "B", "type": "text", "show_if": {"item": "zz", "equals": True}},
                {"code": "c", "label": "C", "type": "colour"},
                {"code": "d", "label": "D", "type": "date", "unit": "kg"},
            ],
            "checks": [{"item": "b", "not_before": "a"}, {"item": "a", "below": "zz", "above": "a"}],
            "warnings": [{"item": "zz", "any_of": ["x"], "text": "never"}],
        }
    )
    broken["forms"].append({**broken["forms"][0], "visits": []})
    with pytest.raises(ProtocolError) as refused:
        parse_protocol(broken)
    # Type mistakes are found first (pydantic); fix them to see the cross checks.
    assert (
        "forms[2].visits[1]: must be a visit code such as V1, or a prefix pattern such as V* (got 'not a visit')"
        in (refused.value.errors)
    )
    assert any(error.startswith("forms[2].items[3].type: ") for error in refused.value.errors)
    broken["forms"][2]["visits"] = ["C1"]
    broken["forms"][2]["items"][3]["type"] = "text"
    with pytest.raises(ProtocolError) as refused:
        parse_protocol(broken)
    errors = refused.value.errors
    for expected in (
        "forms[2].items[0].code_list: unknown code list no_such_list",
        "forms[2].items[1].code: a appears twice",
        "forms[2].items[1].max: 1 is below min 5",
        "forms[2].items[2].show_if.item: zz is not another item of form broken",
        "forms[2].items[4].unit: only integer and decimal items have a unit",
        "forms[2].checks[0].item: b is a text item; not_before compares date items",
        "forms[2].checks[1]: give exactly one of not_before, not_after, below, above",
        "forms[2].warnings[0].item: zz is not an item of form broken",
        "forms[3].code: vitals appears twice",
        "forms[3].visits: a visit form names the visits that carry it",
    ):
        assert expected in errors, (expected, errors)


def test_a_blinded_item_cannot_decide_what_blinded_staff_see():
    broken = document()
    broken["forms"][0]["items"] = [
        *broken["forms"][0]["items"],
        {"code": "secret", "label": "Secret", "type": "yes_no", "unblinded_only": True},
        {"code": "shown", "label": "Shown", "type": "text", "show_if": {"item": "secret", "equals": True}},
    ]
    with pytest.raises(ProtocolError) as refused:
        parse_protocol(broken)
    assert refused.value.errors == [
        "forms[0].items[7].show_if.item: secret is unblinded only, so it cannot decide what blinded staff see"
    ]


# --- Entry: the service ---------------------------------------------------------------------


def test_status_goes_from_not_started_to_in_progress_to_complete(participant, cast):
    assert selectors.participant_forms(participant).visits[0][1][0].status == FormStatus.NOT_STARTED
    result = services.form_save(
        user=cast.coordinator, participant=participant, form_code="vitals", visit_code="C1", values={"weight": "62.5"}
    )
    assert result.record.status == FormStatus.IN_PROGRESS
    assert result.missing == ["systolic", "diastolic", "pulse", "temperature"]
    result = services.form_save(user=cast.coordinator, record=result.record, values=VITALS)
    assert result.record.status == FormStatus.COMPLETE and result.missing == []
    assert selectors.value(participant, "vitals", "C1", "weight") == Decimal("62.5")
    assert selectors.value(participant, "vitals", "C1", "pulse") == 76
    assert selectors.value(participant, "vitals", "C2", "pulse") is None
    first = FormRecord.objects.get()
    assert first.protocol_version and first.site_id == participant.site_id


def test_every_item_error_is_named_at_its_item(participant, cast):
    with pytest.raises(services.FormInvalid) as refused:
        services.form_save(
            user=cast.coordinator,
            participant=participant,
            form_code="vitals",
            visit_code="C1",
            values={**VITALS, "weight": "heavy", "pulse": "12", "systolic": "120.5", "colour": "red"},
        )
    errors = refused.value.as_dict()
    assert errors == {
        "weight": ["Enter a number."],
        "pulse": ["Must be at least 30 /min."],
        "systolic": ["Enter a whole number."],
        "colour": ["Not an item of this form."],
    }
    assert not FormRecord.objects.exists()


def test_the_cross_check_compares_two_items(participant, cast):
    with pytest.raises(services.FormInvalid) as refused:
        services.form_save(
            user=cast.coordinator,
            participant=participant,
            form_code="vitals",
            visit_code="C2",
            values={**VITALS, "diastolic": "130", "systolic": "120"},
        )
    assert refused.value.as_dict() == {"diastolic": ["The diastolic pressure must be below the systolic."]}


def test_a_form_is_only_at_the_visits_the_protocol_names(participant, cast):
    with pytest.raises(services.UnknownForm):
        services.form_save(
            user=cast.coordinator, participant=participant, form_code="vitals", visit_code="EOT", values=VITALS
        )


def test_a_change_after_the_first_save_needs_a_reason_and_is_audited_item_by_item(participant, cast):
    record = services.form_save(
        user=cast.coordinator, participant=participant, form_code="vitals", visit_code="C1", values=VITALS
    ).record
    inserted = AuditEvent.objects.filter(table_name="crf_itemvalue", action="INSERT")
    assert inserted.count() == 6
    changed = {**VITALS, "weight": "63.0", "pulse": "80"}
    with pytest.raises(services.FormInvalid) as refused:
        services.form_save(user=cast.coordinator, record=record, values=changed)
    assert refused.value.as_dict() == {"reason": ["A reason is required to change a saved value."]}
    services.form_save(user=cast.coordinator, record=record, values=changed, reason="Scale re-read")
    updates = AuditEvent.objects.filter(table_name="crf_itemvalue", action="UPDATE").order_by("id")
    assert [
        (event.new_values["item_code"], event.old_values["value"], event.new_values["value"]) for event in updates
    ] == [
        ("weight", "62.5", "63"),
        ("pulse", 76, 80),
    ]
    assert {event.reason for event in updates} == {"Scale re-read"}
    assert {event.changed_fields[0] for event in updates} == {"value"}
    assert {event.actor_id for event in updates} == {cast.coordinator.pk}
    assert {event.subject_id for event in updates} == {participant.pk}


def test_several_forms_are_saved_at_once_all_or_none_each_audited_as_alone(participant, cast):
    """forms_save (a dosing visit's weight and labs): a refusal in the second form writes nothing
    of the first and names its form; accepted, the records and values carry the reasons a save
    of each form alone would give them."""
    labs = {"neutrophils": "2500", "platelets": "180000", "alt_uln": "0.8", "ast_uln": "0.9"}
    entries = [
        services.FormEntry(form_code="vitals", visit_code="C1", values=VITALS),
        services.FormEntry(form_code="predose_labs", visit_code="C1", values={**labs, "platelets": "-1"}),
    ]
    with pytest.raises(services.FormInvalid) as refused:
        services.forms_save(user=cast.coordinator, participant=participant, entries=entries)
    assert refused.value.form_code == "predose_labs" and list(refused.value.errors) == ["platelets"]
    assert not FormRecord.objects.filter(participant=participant).exists()

    entries[1] = services.FormEntry(form_code="predose_labs", visit_code="C1", values=labs)
    saved = services.forms_save(user=cast.coordinator, participant=participant, entries=entries)
    assert [result.record.form_code for result in saved] == ["vitals", "predose_labs"]
    assert saved[1].values["platelets"] == 180000 and saved[0].values["weight"] == "62.5"
    assert selectors.value(participant, "predose_labs", "C1", "alt_uln") == Decimal("0.8")
    records = AuditEvent.objects.filter(table_name="crf_formrecord", action="INSERT")
    values = AuditEvent.objects.filter(table_name="crf_itemvalue", action="INSERT")
    assert records.count() == 2 and {event.reason for event in records} == {"form saved"}
    assert values.count() == 10 and {event.reason for event in values} == {"first entry"}
    assert {event.actor_id for event in [*records, *values]} == {cast.coordinator.pk}

    # Saved again, one value changed on each: a reason, and an UPDATE per item.
    again = [
        services.FormEntry(form_code="vitals", visit_code="C1", values={"pulse": "80"}),
        services.FormEntry(form_code="predose_labs", visit_code="C1", values={"ast_uln": "1.1"}),
    ]
    with pytest.raises(services.FormInvalid) as refused:
        services.forms_save(user=cast.coordinator, participant=participant, entries=again)
    assert refused.value.form_code == "vitals" and list(refused.value.errors) == ["reason"]
    services.forms_save(user=cast.coordinator, participant=participant, entries=again, reason="Re-measured")
    updates = AuditEvent.objects.filter(table_name="crf_itemvalue", action="UPDATE").order_by("id")
    assert [(event.new_values["item_code"], event.reason) for event in updates] == [
        ("pulse", "Re-measured"),
        ("ast_uln", "Re-measured"),
    ]
    assert FormRecord.objects.filter(participant=participant).count() == 2


def test_an_item_filled_on_a_saved_form_is_in_the_answer_of_that_save(participant, cast):
    url = f"/api/v1/participants/{participant.pk}/forms/vitals/C1/"
    first = api(cast.coordinator).put(url, {"values": {"weight": "62.5"}}, format="json")
    assert first.status_code == 200 and "pulse" in first.json()["missing"]
    added = api(cast.coordinator).put(url, {"values": {"pulse": "76"}}, format="json")
    assert added.status_code == 200
    assert added.json()["values"]["pulse"] == 76 and added.json()["values"]["weight"] == "62.5"
    assert "pulse" not in added.json()["missing"]
    assert added.json() == api(cast.coordinator).get(url).json()


def test_a_batch_of_forms_is_refused_when_it_cannot_be_saved_as_one(participant, cast):
    vitals = services.FormEntry(form_code="vitals", visit_code="C1", values=VITALS)
    with pytest.raises(ValueError):
        services.forms_save(user=cast.coordinator, participant=participant, entries=[vitals, vitals])
    record = services.form_save(
        user=cast.coordinator, participant=participant, form_code="vitals", visit_code="C1", values=VITALS
    ).record
    labs = services.FormEntry(form_code="predose_labs", visit_code="C1", values={"platelets": "180000"})
    with pytest.raises(ValueError):
        services.forms_save(user=cast.coordinator, participant=participant, entries=[labs], record=record)


def test_the_database_refuses_a_changed_value_without_a_reason(participant, cast):
    from django.db import DatabaseError

    from trialsite.audit import audit_context

    services.form_save(
        user=cast.coordinator, participant=participant, form_code="vitals", visit_code="C1", values=VITALS
    )
    with pytest.raises(DatabaseError), audit_context(actor=cast.coordinator):
        ItemValue.objects.filter(item_code="weight").update(value="99")


def test_show_if_asks_the_stop_date_only_of_a_stopped_medicine(participant, cast):
    entry = services.form_save(user=cast.coordinator, participant=participant, form_code="conmeds", values=ASPIRIN_LIKE)
    assert entry.record.status == FormStatus.COMPLETE and entry.record.sequence == 1
    with pytest.raises(services.FormInvalid) as refused:
        services.form_save(
            user=cast.coordinator,
            participant=participant,
            form_code="conmeds",
            values={**ASPIRIN_LIKE, "stop_date": "2026-11-01"},
        )
    assert refused.value.as_dict() == {"stop_date": ["Leave this empty: it is asked only when Ongoing is no."]}
    stopped = services.form_save(
        user=cast.coordinator, participant=participant, form_code="conmeds", values={**ASPIRIN_LIKE, "ongoing": "no"}
    )
    assert stopped.record.sequence == 2 and stopped.record.status == FormStatus.IN_PROGRESS
    assert stopped.missing == ["stop_date"]
    with pytest.raises(services.FormInvalid) as refused:
        services.form_save(user=cast.coordinator, record=stopped.record, values={"stop_date": "2026-09-30"})
    assert refused.value.as_dict() == {"stop_date": ["The stop date cannot be before the start date."]}
    done = services.form_save(user=cast.coordinator, record=stopped.record, values={"stop_date": "2026-10-20"})
    assert done.record.status == FormStatus.COMPLETE


def test_an_anticoagulant_warns_without_blocking_and_the_warning_is_recorded(participant, cast):
    result = services.form_save(
        user=cast.coordinator, participant=participant, form_code="conmeds", values=ASPIRIN_LIKE
    )
    assert [warning["text"] for warning in result.warnings] == [
        "Anticoagulant entered: long-term anticoagulant use is exclusion criterion EX3, and the study tablet may be "
        "aspirin, which adds to the bleeding risk. Tell the investigator."
    ]
    assert result.warnings[0]["text_zh"] == (
        "已录入抗凝药：长期使用抗凝药物属于排除标准EX3，且研究用片剂可能是阿司匹林，合用会增加出血风险，请告知研究者。"  # noqa: RUF001
    )
    assert FormRecord.objects.get().warnings == result.warnings
    antiplatelet = services.form_save(
        user=cast.coordinator,
        participant=participant,
        form_code="conmeds",
        values={**ASPIRIN_LIKE, "drug_class": "antiplatelet"},
    )
    assert "aspirin" in antiplatelet.warnings[0]["text"] and "阿司匹林" in antiplatelet.warnings[0]["text_zh"]
    other = services.form_save(
        user=cast.coordinator,
        participant=participant,
        form_code="conmeds",
        values={**ASPIRIN_LIKE, "drug_class": "other"},
    )
    assert other.warnings == []


# --- The page and the API -------------------------------------------------------------------


def test_the_participant_page_lists_the_forms_by_visit_and_the_logs(participant, cast, client_for):
    page = client_for(cast.coordinator).get(f"/participants/{participant.pk}/").content.decode()
    assert f'href="/participants/{participant.pk}/forms/vitals/C1/"' in page
    assert f'href="/participants/{participant.pk}/forms/vitals/C12/"' in page
    assert f'href="/participants/{participant.pk}/logs/conmeds/new/"' in page


def test_the_page_and_the_api_enter_the_same_form(participant, cast, client_for):
    client = client_for(cast.coordinator)
    url = f"/participants/{participant.pk}/forms/vitals/C1/"
    response = client.post(url, VITALS)
    assert response.status_code == 302
    body = api(cast.coordinator).get(f"/api/v1{url}").json()
    assert body["status"] == "complete"
    assert body["values"] == {
        "weight": "62.5",
        "height": "168",
        "systolic": 128,
        "diastolic": 82,
        "pulse": 76,
        "temperature": "36.6",
    }
    # The API changes it through the same service: a reason, or an error at "reason".
    refused = api(cast.coordinator).put(f"/api/v1{url}", {"values": {"weight": 64}}, format="json")
    assert refused.status_code == 400 and refused.json() == {
        "reason": ["A reason is required to change a saved value."]
    }
    changed = api(cast.coordinator).put(
        f"/api/v1{url}", {"values": {"weight": 64}, "reason": "Weighed again"}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["values"]["weight"] == "64"
    page = client.get(url).content.decode()
    assert 'name="weight" id="id_weight" value="64"' in page and 'name="reason"' in page


def test_item_errors_are_shown_at_the_item_on_the_page_and_in_the_api(participant, cast, client_for):
    url = f"/participants/{participant.pk}/forms/vitals/C1/"
    page = client_for(cast.coordinator).post(url, {**VITALS, "temperature": "48"}).content.decode()
    assert '<ul class="errorlist" id="errors-temperature"><li>Must be at most 42 °C.</li></ul>' in page
    refused = api(cast.coordinator).put(
        f"/api/v1{url}", {"values": {**VITALS, "temperature": 48, "systolic": "x"}}, format="json"
    )
    assert refused.status_code == 400
    assert refused.json() == {"temperature": ["Must be at most 42 °C."], "systolic": ["Enter a number."]}
    assert not FormRecord.objects.exists()


def test_a_log_entry_is_added_and_warns_on_the_page_in_chinese(participant, cast, client_for):
    client = client_for(cast.coordinator)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    response = client.post(
        f"/participants/{participant.pk}/logs/conmeds/new/", ASPIRIN_LIKE, HTTP_ACCEPT_LANGUAGE="zh-hans", follow=True
    )
    page = response.content.decode()
    assert response.redirect_chain[-1][0] == f"/participants/{participant.pk}/logs/conmeds/1/"
    assert "长期使用抗凝药物属于排除标准EX3" in page
    assert "药物类别" in page and "抗凝药" in page


def test_the_api_adds_log_entries_and_returns_the_warning_in_both_languages(participant, cast):
    created = api(cast.coordinator).post(
        f"/api/v1/participants/{participant.pk}/logs/conmeds/",
        {"values": {**ASPIRIN_LIKE, "ongoing": True}},
        format="json",
    )
    assert created.status_code == 201
    body = created.json()
    assert body["sequence"] == 1 and body["values"]["ongoing"] is True
    assert body["warnings"][0]["item"] == "drug_class" and "EX3" in body["warnings"][0]["text_zh"]
    listed = api(cast.coordinator).get(f"/api/v1/participants/{participant.pk}/forms/").json()
    assert {"form": "conmeds", "kind": "log", "visit_code": None, "sequence": 1, "status": "complete"} in listed


def test_another_sites_participant_does_not_exist(participant, cast, client_for):
    client = client_for(cast.other_coordinator)
    for url in (
        f"/participants/{participant.pk}/forms/",
        f"/participants/{participant.pk}/forms/vitals/C1/",
        f"/participants/{participant.pk}/logs/conmeds/new/",
    ):
        assert client.get(url).status_code == 404
        assert client.post(url, VITALS).status_code == 404
    other = api(cast.other_coordinator)
    assert other.get(f"/api/v1/participants/{participant.pk}/forms/vitals/C1/").status_code == 404
    assert (
        other.put(
            f"/api/v1/participants/{participant.pk}/forms/vitals/C1/", {"values": VITALS}, format="json"
        ).status_code
        == 404
    )
    assert not FormRecord.objects.exists()


def test_an_unknown_form_or_visit_is_404(participant, cast, client_for):
    client = client_for(cast.coordinator)
    assert client.get(f"/participants/{participant.pk}/forms/vitals/EOT/").status_code == 404
    assert client.get(f"/participants/{participant.pk}/forms/nothing/C1/").status_code == 404
    assert api(cast.coordinator).get(f"/api/v1/participants/{participant.pk}/logs/vitals/").status_code == 404


def test_a_pharmacist_reads_forms_but_does_not_enter_them(participant, cast, client_for):
    url = f"/participants/{participant.pk}/forms/vitals/C1/"
    assert client_for(cast.pharmacist).get(url).status_code == 200
    assert client_for(cast.pharmacist).post(url, VITALS).status_code == 404
    assert api(cast.pharmacist).put(f"/api/v1{url}", {"values": VITALS}, format="json").status_code == 404


# --- Blinding -------------------------------------------------------------------------------


def test_unblinded_only_items_are_hidden_from_blinded_users_on_the_page_the_api_and_the_trail(
    participant, cast, unblinded, client_for
):
    url = f"/participants/{participant.pk}/forms/tablets/C3/"
    saved = api(unblinded).put(
        f"/api/v1{url}", {"values": {"returned": 4, "kit_content": "matches the arm"}}, format="json"
    )
    assert saved.status_code == 200 and saved.json()["values"]["kit_content"] == "matches the arm"
    api(unblinded).put(
        f"/api/v1{url}", {"values": {"kit_content": "checked twice"}, "reason": "Re-checked"}, format="json"
    )
    assert 'name="kit_content"' in client_for(unblinded).get(url).content.decode()

    page = client_for(cast.coordinator).get(url).content.decode()
    assert 'name="returned"' in page and "kit_content" not in page and "matches" not in page
    body = api(cast.coordinator).get(f"/api/v1{url}").json()
    assert body["values"] == {"returned": 4} and body["status"] == "complete"
    # To a blinded user the item does not exist: entering it is refused like an unknown item.
    refused = api(cast.coordinator).put(f"/api/v1{url}", {"values": {"kit_content": "x"}}, format="json")
    assert refused.json() == {"kit_content": ["Not an item of this form."]}
    # The blinded user's own save leaves the unblinded value as it is.
    api(cast.coordinator).put(f"/api/v1{url}", {"values": {"returned": 5}, "reason": "Recounted"}, format="json")
    assert selectors.value(participant, "tablets", "C3", "kit_content") == "checked twice"

    events = api(cast.monitor).get("/api/v1/audit-events/", {"table": "crf_itemvalue"}).json()["results"]
    assert "matches the arm" not in str(events) and "checked twice" not in str(events)
    inserted = [event for event in events if event["new_values"]["item_code"] == "kit_content"]
    assert [event["action"] for event in inserted] == ["INSERT"]  # its update is not shown at all
    assert inserted[0]["new_values"]["unblinded_value"] == "■ blinded"
    trail = client_for(cast.monitor).get("/audit/", {"table": "crf_itemvalue"}).content.decode()
    assert "matches the arm" not in trail and "checked twice" not in trail
    # An unblinded reader of the trail sees both.
    everything = api(unblinded).get("/api/v1/audit-events/", {"table": "crf_itemvalue"}).json()["results"]
    assert "matches the arm" in str(everything) and "checked twice" in str(everything)


def test_a_save_returns_the_form_values_its_user_may_see_and_nothing_hidden(participant, cast, unblinded):
    """What a save returns (read by the dosing visit instead of the form again) keeps the blind."""
    tablets = {"participant": participant, "form_code": "tablets", "visit_code": "C3"}
    first = services.form_save(user=unblinded, values={"returned": 4, "kit_content": "matches the arm"}, **tablets)
    assert first.values["returned"] == 4 and first.values["kit_content"] == "matches the arm"
    second = services.form_save(user=cast.coordinator, values={"returned": 5}, reason="Recounted", **tablets)
    assert second.values["returned"] == 5 and "kit_content" not in second.values


def test_the_tablet_form_is_carried_at_every_cycle_visit_by_its_pattern(participant, cast):
    visits = {
        visit_code: [entry.form.code for entry in entries]
        for visit_code, entries in selectors.participant_forms(participant).visits
    }
    # The trial's own visit forms (vitals, the pre-dose labs), then the one this test adds.
    assert visits["C1"] == visits["C12"] == ["vitals", "predose_labs", "tablets"]
    assert "EOT" not in visits


def test_dates_are_stored_as_iso_text_and_read_as_dates(participant, cast):
    services.form_save(user=cast.coordinator, participant=participant, form_code="conmeds", values=ASPIRIN_LIKE)
    assert selectors.value(participant, "conmeds", None, "start_date") == datetime.date(2026, 10, 1)
    assert selectors.value(participant, "conmeds", None, "ongoing") is True


def test_a_chinese_reader_gets_the_labels_units_and_errors_in_chinese(participant, cast, client_for):
    client = client_for(cast.coordinator)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    url = f"/participants/{participant.pk}/forms/vitals/C1/"
    page = client.post(url, {**VITALS, "systolic": "300"}, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "收缩压 (毫米汞柱)" in page and "脉搏 (次/分)" in page
    assert '<ul class="errorlist" id="errors-systolic"><li>不能高于260 毫米汞柱。</li></ul>' in page
    page = client.get(f"/participants/{participant.pk}/logs/conmeds/new/", HTTP_ACCEPT_LANGUAGE="zh-hans").content
    assert "仅当仍在使用为否时填写。" in page.decode()


def test_numbers_no_measurement_needs_and_nul_characters_are_refused_at_the_item(participant, cast):
    with pytest.raises(services.FormInvalid) as refused:
        services.form_save(
            user=cast.coordinator,
            participant=participant,
            form_code="conmeds",
            values={**ASPIRIN_LIKE, "drug_name": "War\x00farin"},
        )
    assert refused.value.as_dict() == {"drug_name": ["Enter text without a NUL character."]}
    for huge in ("1e999999999", "0.00000000001", "NaN", "Infinity", True):
        with pytest.raises(services.FormInvalid) as refused:
            services.form_save(
                user=cast.coordinator,
                participant=participant,
                form_code="vitals",
                visit_code="C1",
                values={"height": huge},
            )
        assert refused.value.as_dict() == {"height": ["Enter a number."]}


def test_a_save_of_unblinded_only_items_leaves_no_trace_a_blinded_reader_can_see(participant, cast, unblinded):
    """Neither the record (its updated_at, a reason on its event) nor a new item row tells a
    blinded reader that, when or why an unblinded user entered something only they see."""
    url = f"/api/v1/participants/{participant.pk}/forms/tablets/C3/"
    # Alone, an unblinded-only value cannot make the record: its existence would tell.
    refused = api(unblinded).put(url, {"values": {"kit_content": "matches"}}, format="json")
    assert refused.status_code == 400 and "non_field_errors" in refused.json()
    assert not FormRecord.objects.filter(participant=participant, form_code="tablets").exists()

    api(cast.coordinator).put(url, {"values": {"returned": 4}}, format="json")
    record = FormRecord.objects.get(participant=participant, form_code="tablets", visit_code="C3")
    seen_before = api(cast.monitor).get("/api/v1/audit-events/", {"subject": participant.pk}).json()["count"]
    api(unblinded).put(url, {"values": {"kit_content": "was placebo, corrected"}}, format="json")
    api(unblinded).put(
        url, {"values": {"kit_content": "checked twice"}, "reason": "kit was placebo, corrected"}, format="json"
    )
    assert FormRecord.objects.get(pk=record.pk).updated_at == record.updated_at
    seen_after = api(cast.monitor).get("/api/v1/audit-events/", {"subject": participant.pk}).json()
    assert seen_after["count"] == seen_before
    assert "placebo" not in str(seen_after)
    everything = api(unblinded).get("/api/v1/audit-events/", {"table": "crf_itemvalue"}).json()
    assert "kit was placebo, corrected" in str(everything)
