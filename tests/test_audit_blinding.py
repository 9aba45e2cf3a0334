"""The audit trail is blinded by an allow-list: each audited table declares the columns a
blinded reader may see (`audit_blinded_visible`), everything else is shown as blinded. These
are the attacks of issue 13 on the audit trail, replayed through the API and the page."""

from __future__ import annotations

import datetime
import re

import pytest
import time_machine
from django.core.exceptions import ImproperlyConfigured

from dosing.models import Kit, Shipment
from randomization.models import Slot
from tests import dosing_factories as df
from tests import factories
from trialsite import selectors
from trialsite.audit import audit_context, audited_models, blinded_visible_columns
from trialsite.checks import audit_blinded_visible_declarations
from trialsite.models import AuditEvent, Role, StaffRole

BLINDED = selectors.BLINDED_VALUE
KIT_SECRETS = ("content", "lot", "expiry", "shipment_id", "imported_at", "imported_by_id")
SLOT_SECRETS = ("arm_id", "block", "block_size", "sequence", "randomization_list_id")


@pytest.fixture
def kits_shipped_by_content(site, cast):
    """The landed code's shipments: one content each, the grouping the insider recovered."""
    kits = []
    with audit_context(actor=cast.supply_manager, reason="test shipments"):
        for content in ("active", "placebo"):
            shipment = Shipment.objects.create(site=site, shipped_by=cast.supply_manager)
            for _ in range(3):
                kit = df.make_kit(kit_type="INF", content=content, site=site, lot=f"MFG-{content}")
                Kit.objects.filter(pk=kit.pk).update(shipment=shipment, status=Kit.Status.SHIPPED)
                kits.append(kit)
        # A correction of the real expiry of one manufacturing lot: only hidden columns change.
        Kit.objects.filter(content="active").update(expiry=datetime.date(2027, 6, 30))
    return kits


@pytest.fixture
def slots_used_and_unused(trial, site, cast):
    df.randomized_participant(site, arm_code="COMBO", by=cast.coordinator, schedule=False)
    arms = list(trial.arms.order_by("order"))
    with audit_context(actor=cast.statistician, reason="test: the next list version"):
        randomization_list = df.allocation_list(site, by=cast.statistician)
        Slot.objects.bulk_create(
            Slot(
                randomization_list=randomization_list,
                stratum=site.code,
                site=site,
                sequence=sequence,
                block=(sequence + 3) // 4,
                block_size=4,
                arm=arms[(sequence * 3) % 4],
            )
            for sequence in range(1, 9)
        )
    assert Slot.objects.filter(site=site, participant__isnull=True).count() == 8
    assert Slot.objects.filter(site=site, participant__isnull=False).exists()


@pytest.fixture
def unblinded_reader(site, cast):
    """A statistician who also reads the audit trail (the statistician role alone does not)."""
    with audit_context(reason="test cast"):
        StaffRole.objects.create(user=cast.statistician, site=site, role=Role.MONITOR)
    return cast.statistician


def values_read(events: list[dict]) -> list[tuple[str, object]]:
    return [
        (column, value)
        for event in events
        for values in (event["old_values"], event["new_values"])
        if values
        for column, value in values.items()
    ]


def api_events(api, query: str) -> list[dict]:
    events, url = [], f"/api/v1/audit-events/?{query}"
    while url:
        answer = api.get(url)
        assert answer.status_code == 200, answer.content
        events += answer.json()["results"]
        url = answer.json()["next"]
    return events


@pytest.mark.parametrize("role", ["monitor", "investigator"])
def test_the_monitor_and_the_pi_cannot_group_kits_by_shipment_lot_or_expiry_from_the_audit_api(
    kits_shipped_by_content, cast, api_for, role
):
    events = api_events(api_for(cast[role]), "table=dosing_kit")
    assert {event["record_pk"] for event in events} >= {str(kit.pk) for kit in kits_shipped_by_content}
    read = values_read(events)
    for secret in KIT_SECRETS:
        assert {value for column, value in read if column == secret} == {BLINDED}, secret
    # The expiry correction touched the kits of one content only: not even its rows are shown.
    assert not [event for event in events if event["changed_fields"] == ["expiry"]]


@pytest.mark.parametrize("role", ["monitor", "investigator"])
def test_the_monitor_and_the_pi_cannot_read_arm_or_block_of_any_slot_from_the_audit_api(
    slots_used_and_unused, cast, api_for, role
):
    events = api_events(api_for(cast[role]), "table=randomization_slot")
    assert len({event["record_pk"] for event in events}) == Slot.objects.filter(site__code="NT").count()
    read = values_read(events)
    for secret in SLOT_SECRETS:
        assert {value for column, value in read if column == secret} == {BLINDED}, secret
    # What they may see is still there: the stratum and who was allocated when.
    assert {value.split("|")[0] for column, value in read if column == "stratum"} == {"NT"}
    assert any(column == "participant_id" and value not in (None, BLINDED) for column, value in read)


@pytest.mark.parametrize("role", ["monitor", "investigator"])
def test_the_audit_page_hides_kit_and_slot_secrets_from_the_monitor_and_the_pi(
    kits_shipped_by_content, slots_used_and_unused, site, cast, client_for, role
):
    client = client_for(cast[role])
    kit_page = client.get("/audit/?table=dosing_kit").content.decode()
    slot_page = client.get("/audit/?table=randomization_slot").content.decode()

    # Each change reads "<span class="field" title="column">Its name</span>: value".
    def shown(page, column, value) -> bool:
        return re.search(rf'title="{column}">[^<]*</span>: {re.escape(value)}', page) is not None

    for page, secrets in ((kit_page, KIT_SECRETS), (slot_page, SLOT_SECRETS)):
        for secret in secrets:
            assert shown(page, secret, BLINDED), secret
    shipment_ids = {str(pk) for pk in Shipment.objects.values_list("pk", flat=True)}
    lots = {kit.lot for kit in kits_shipped_by_content}
    for secret in lots:
        assert secret not in kit_page
    for pk in shipment_ids:
        assert not shown(kit_page, "shipment_id", pk)
    for column in ("block", "block_size", "sequence", "arm_id"):
        assert not shown(slot_page, column, "1")


def test_the_unblinded_statistician_still_reads_every_value(
    kits_shipped_by_content, slots_used_and_unused, unblinded_reader, api_for
):
    kit_events = api_events(api_for(unblinded_reader), "table=dosing_kit")
    read = values_read(kit_events)
    assert {value for column, value in read if column == "content"} == {"active", "placebo"}
    assert {value for column, value in read if column == "shipment_id"} >= set(
        Shipment.objects.values_list("pk", flat=True)
    )
    assert any(event["changed_fields"] == ["expiry"] for event in kit_events)
    slot_events = api_events(api_for(unblinded_reader), "table=randomization_slot")
    assert BLINDED not in {value for column, value in values_read(slot_events) if column in SLOT_SECRETS}


def test_the_table_pk_and_subject_filters_still_work_for_a_blinded_reader(
    slots_used_and_unused, site, cast, api_for, client_for
):
    slot = Slot.objects.filter(site=site, participant__isnull=False).get()
    [created] = api_events(api_for(cast.monitor), f"table=randomization_slot&pk={slot.pk}")
    assert created["action"] == "INSERT" and created["new_values"]["participant_id"] == slot.participant_id
    by_subject = api_events(api_for(cast.monitor), f"subject={slot.participant_id}&table=randomization_slot")
    assert [event["record_pk"] for event in by_subject] == [str(slot.pk)]
    page = client_for(cast.monitor).get(f"/audit/?table=randomization_slot&pk={slot.pk}")
    assert page.status_code == 200 and f"randomization_slot #{slot.pk}".encode() in page.content


def test_every_declared_column_is_a_concrete_field_and_the_rest_are_hidden(db):
    undeclared = set()
    for model in audited_models():
        declared = model.audit_blinded_visible
        if declared is None:
            undeclared.add(model._meta.label)
            continue
        assert isinstance(declared, tuple), model
        columns = {field.column for field in model._meta.concrete_fields}
        visible = blinded_visible_columns(model)
        assert visible <= columns, model
        assert model._meta.pk.column in visible
    # Undeclared would be safe (only the id shows) but useless to a monitor: each says what it shows.
    assert not undeclared
    assert not [problem for problem in audit_blinded_visible_declarations(None) if problem.level >= 40]


def test_a_misspelt_declaration_is_refused_at_startup(db, monkeypatch):
    monkeypatch.setattr(Slot, "audit_blinded_visible", ("stratum", "partcipant"))
    with pytest.raises(ImproperlyConfigured, match="partcipant"):
        blinded_visible_columns(Slot)
    [problem] = [problem for problem in audit_blinded_visible_declarations(None) if problem.id == "trialsite.E010"]
    assert "randomization.Slot" in problem.msg


@pytest.mark.parametrize("model", audited_models(), ids=lambda model: model._meta.label)
def test_a_column_nobody_declared_is_hidden_from_a_blinded_reader(model, site, cast):
    """As if a column had been added to the table since its declaration was written."""
    visible = sorted(blinded_visible_columns(model))
    row = {column: f"value of {column}" for column in visible} | {"added_later_id": 7}
    event = AuditEvent(
        table_name=model._meta.db_table,
        record_pk="1",
        action=AuditEvent.Action.UPDATE,
        old_values=dict(row, added_later_id=6),
        new_values=row,
        changed_fields=["added_later_id"],
        site_id=site.pk,
    )
    [redacted] = selectors.redact_for(cast.monitor, [event])
    assert redacted.new_values["added_later_id"] == BLINDED
    assert redacted.old_values["added_later_id"] == BLINDED
    assert redacted.changes == [("added_later_id", BLINDED, BLINDED)]
    assert all(redacted.new_values[column] == f"value of {column}" for column in visible)


def test_a_table_without_any_model_shows_a_blinded_reader_only_its_id(site, cast):
    event = AuditEvent(
        table_name="dropped_table",
        record_pk="3",
        action=AuditEvent.Action.INSERT,
        new_values={"id": 3, "secret": "x"},
        changed_fields=["id", "secret"],
        site_id=site.pk,
    )
    [redacted] = selectors.redact_for(cast.monitor, [event])
    assert redacted.new_values == {"id": 3, "secret": BLINDED}


def test_the_audit_trail_still_shows_a_monitor_what_they_verify(site, cast, api_for):
    screening = factories.make_screening(site, by=cast.coordinator)
    [created] = api_events(api_for(cast.monitor), f"subject={screening.pk}&table=enrollment_screening")
    assert BLINDED not in created["new_values"].values()


@pytest.fixture
def susars_reported_on_active_only(site, cast):
    with time_machine.travel(datetime.datetime(2026, 11, 21, 1, 0, tzinfo=datetime.UTC), tick=False):
        yield _susars_reported_on_active_only(site, cast)


def _susars_reported_on_active_only(site, cast):
    """What a real sponsor does after breaking the blind of a SUSAR: the expedited report goes to
    the regulators when the participant is on active product; a placebo case is not expedited."""
    from safety import services as safety

    assessments = {}
    for arm in ("TOC", "PBO"):
        participant = df.randomized_participant(site, arm_code=arm, by=cast.coordinator)
        event = safety.ae_record(
            participant=participant,
            recorded_by=cast.coordinator,
            details=safety.AeDetails(
                term="sepsis",
                grade=4,
                onset_date=datetime.date(2026, 11, 20),
                serious=True,
                seriousness=("life_threatening",),
                awareness_at=datetime.datetime(2026, 11, 20, 3, 0, tzinfo=datetime.UTC),
            ),
        )
        assessments[arm] = safety.sae_assess(
            event=event, assessed_by=cast.sponsor_safety, related=True, expectedness="unexpected", reference="IB"
        )
    safety.susar_report_done(assessment=assessments["TOC"], reported_by=cast.sponsor_safety, reference="CIOMS-1")
    return assessments


@pytest.mark.parametrize("role", ["monitor", "investigator"])
def test_the_sponsors_expedited_report_is_not_in_a_blinded_readers_trail(
    susars_reported_on_active_only, cast, api_for, role
):
    events = api_events(api_for(cast[role]), "table=safety_susarassessment")
    by_record = {}
    for event in events:
        by_record.setdefault(event["record_pk"], []).append(
            (event["action"], sorted((event["new_values"] or {}).items()))
        )
    # Both assessments read alike: the same actions, the same values but their own ids.
    shapes = [
        [
            (action, [(column, value) for column, value in values if not column.endswith("_id") and column != "id"])
            for action, values in rows
        ]
        for rows in by_record.values()
    ]
    assert len(shapes) == 2
    assert shapes[0] == shapes[1]
