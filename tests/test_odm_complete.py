"""The ODM export is complete ODM 1.3.2 (issue 19): valid against the official schema, every OID
reference resolves, odmlib reads it, every datetime has its zone, texts come in English and
Chinese tagged by language, units are declared, one MetaDataVersion and ClinicalData per protocol
version, the staff, the PI's e-signatures and the audit trail are there, and a blinded file holds
no arm and no audit value the blinded audit trail hides. Both protocols."""

from __future__ import annotations

import datetime
import io
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest
import time_machine
import xmlschema
from django.conf import settings

from enrollment.models import Participant, Screening
from reports import exports, selectors
from tests import factories, reports_data
from tests.test_reports_exports import run_now
from tests.test_safety_exports import content_of
from trialsite.audit import audit_context, blinded_visible_columns
from trialsite.models import AuditEvent, Role, Signature
from trialsite.protocol import load_protocol, load_protocol_file

ODM = "{http://www.cdisc.org/ns/odm/v1.3}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
PROTOCOLS = Path(settings.PROTOCOL_FILE).parent
CJK = re.compile(r"[\u3400-\u9fff]")
ZONED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


@pytest.fixture(scope="module")
def odm_schema() -> xmlschema.XMLSchema:
    import odmlib

    path = Path(odmlib.__file__).parent / "schemas" / "odm" / "1.3.2" / "ODM1-3-2.xsd"
    return xmlschema.XMLSchema(str(path))


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def frozen():
    with time_machine.travel(datetime.datetime(2026, 12, 15, 4, tzinfo=datetime.UTC), tick=False):
        yield


@pytest.fixture
def data(trial, site, other_site, cast, frozen):
    return reports_data.build(trial, site, other_site, cast)


@pytest.fixture
def statistician_both(site, other_site):
    user = factories.make_user(Role.STATISTICIAN, site, username="statistician-both")
    with audit_context(reason="second site"):
        user.trial_roles.create(site=other_site, role=Role.STATISTICIAN)
    return user


@pytest.fixture
def monitor_both(site, other_site):
    user = factories.make_user(Role.MONITOR, site, username="monitor-both")
    with audit_context(reason="second site"):
        user.trial_roles.create(site=other_site, role=Role.MONITOR)
    return user


# --- reading the file back ------------------------------------------------------------------


def reference_problems(root: ElementTree.Element) -> list[str]:
    """Every OID reference names a definition of its kind: within its MetaDataVersion for the
    metadata, in the file for units, users, locations, signature definitions and versions."""
    problems = []

    def oids(parent, kind) -> set[str]:
        found = [element.get("OID") for element in parent.iter(f"{ODM}{kind}")]
        if len(found) != len(set(found)):
            problems.append(f"duplicate {kind} OIDs")
        return set(found)

    versions = {version.get("OID"): version for version in root.iter(f"{ODM}MetaDataVersion")}
    file_wide = {kind: oids(root, kind) for kind in ("MeasurementUnit", "User", "Location", "SignatureDef", "Study")}
    for version in versions.values():
        defined = {
            kind: oids(version, kind) for kind in ("StudyEventDef", "FormDef", "ItemGroupDef", "ItemDef", "CodeList")
        }
        for element_name, attribute, kind in [
            ("StudyEventRef", "StudyEventOID", "StudyEventDef"),
            ("FormRef", "FormOID", "FormDef"),
            ("ItemGroupRef", "ItemGroupOID", "ItemGroupDef"),
            ("ItemRef", "ItemOID", "ItemDef"),
            ("CodeListRef", "CodeListOID", "CodeList"),
        ]:
            for element in version.iter(f"{ODM}{element_name}"):
                if element.get(attribute) not in defined[kind]:
                    problems.append(f"{version.get('OID')}: {element_name} {element.get(attribute)} has no {kind}")
    for element_name, attribute, kind in [
        ("MeasurementUnitRef", "MeasurementUnitOID", "MeasurementUnit"),
        ("UserRef", "UserOID", "User"),
        ("LocationRef", "LocationOID", "Location"),
        ("SiteRef", "LocationOID", "Location"),
        ("SignatureRef", "SignatureOID", "SignatureDef"),
    ]:
        for element in root.iter(f"{ODM}{element_name}"):
            if element.get(attribute) not in file_wide[kind]:
                problems.append(f"{element_name} {element.get(attribute)} has no {kind}")
    for element in [*root.iter(f"{ODM}ClinicalData"), *root.iter(f"{ODM}MetaDataVersionRef")]:
        if element.get("MetaDataVersionOID") not in versions or element.get("StudyOID") not in file_wide["Study"]:
            problems.append(f"{element.tag} names an unknown study or metadata version")
    # The clinical data of each ClinicalData follows its own MetaDataVersion.
    for clinical in root.iter(f"{ODM}ClinicalData"):
        version = versions.get(clinical.get("MetaDataVersionOID"))
        if version is None:
            continue
        children = {
            (kind, element.get("OID")): {child.get(attribute) for child in element.iter(f"{ODM}{child_name}")}
            for kind, child_name, attribute in [
                ("StudyEventDef", "FormRef", "FormOID"),
                ("FormDef", "ItemGroupRef", "ItemGroupOID"),
                ("ItemGroupDef", "ItemRef", "ItemOID"),
            ]
            for element in version.iter(f"{ODM}{kind}")
        }
        code_lists = {
            code_list.get("OID"): {item.get("CodedValue") for item in code_list.iter(f"{ODM}CodeListItem")}
            for code_list in version.iter(f"{ODM}CodeList")
        }
        item_lists = {
            item.get("OID"): item.find(f"{ODM}CodeListRef").get("CodeListOID")
            for item in version.iter(f"{ODM}ItemDef")
            if item.find(f"{ODM}CodeListRef") is not None
        }
        for parent_name, parent_attribute, kind, child_name, child_attribute in [
            ("StudyEventData", "StudyEventOID", "StudyEventDef", "FormData", "FormOID"),
            ("FormData", "FormOID", "FormDef", "ItemGroupData", "ItemGroupOID"),
            ("ItemGroupData", "ItemGroupOID", "ItemGroupDef", "ItemData", "ItemOID"),
        ]:
            for parent in clinical.iter(f"{ODM}{parent_name}"):
                for child in parent.findall(f"{ODM}{child_name}"):
                    if child.get(child_attribute) not in children.get((kind, parent.get(parent_attribute)), set()):
                        problems.append(
                            f"{child_name} {child.get(child_attribute)} not in {parent.get(parent_attribute)}"
                        )
        for item in clinical.iter(f"{ODM}ItemData"):
            code_list = item_lists.get(item.get("ItemOID"))
            if code_list and item.get("Value") not in code_lists[code_list]:
                problems.append(f"{item.get('ItemOID')}={item.get('Value')} not in {code_list}")
    return problems


def unzoned_datetimes(root: ElementTree.Element) -> list[str]:
    """Every datetime of the file: the file's own attributes, audit and signature stamps, and
    the values of datetime items."""
    moments = [root.get("CreationDateTime"), root.get("AsOfDateTime")]
    moments += [stamp.text for stamp in root.iter(f"{ODM}DateTimeStamp")]
    datetime_items = {
        item.get("OID")
        for item in root.iter(f"{ODM}ItemDef")
        if item.get("DataType") in ("datetime", "partialDatetime")
    }
    assert "IT.RANDOMIZED_AT" in datetime_items
    moments += [item.get("Value") for item in root.iter(f"{ODM}ItemData") if item.get("ItemOID") in datetime_items]
    assert len(moments) > 3
    return [moment for moment in moments if not ZONED.match(moment or "")]


def language_problems(root: ElementTree.Element) -> list[str]:
    problems = []
    for text in root.iter(f"{ODM}TranslatedText"):
        language = text.get(XML_LANG)
        if language not in ("en", "zh-Hans"):
            problems.append(f"{language}: {text.text}")
        elif bool(CJK.search(text.text or "")) != (language == "zh-Hans"):
            problems.append(f"{text.text!r} tagged {language}")
    return problems


def load_with_odmlib(document: str):
    from odmlib import loader, odm_loader

    odm = loader.ODMLoader(
        odm_loader.XMLODMLoader(model_package="odm_1_3_2", ns_uri="http://www.cdisc.org/ns/odm/v1.3")
    )
    odm.load_odm_string(document.encode("utf-8").decode("utf-8"))
    return odm.root()


def check_complete(document: str, odm_schema) -> ElementTree.Element:
    odm_schema.validate(document)
    root = ElementTree.fromstring(document)
    assert reference_problems(root) == []
    assert unzoned_datetimes(root) == []
    assert language_problems(root) == []
    loaded = load_with_odmlib(document)
    assert loaded.Study[0].OID == root.find(f"{ODM}Study").get("OID")
    assert root.get("Granularity") == "All" and root.get("Archival") == "Yes"
    return root


def subjects_by_number(root) -> dict[str, ElementTree.Element]:
    found = {}
    for subject in root.iter(f"{ODM}SubjectData"):
        for item in subject.iter(f"{ODM}ItemData"):
            if item.get("ItemOID") == "IT.SCREENING_NUMBER":
                found[item.get("Value")] = subject
    return found


# --- the first trial --------------------------------------------------------------------------


def test_the_odm_is_complete_valid_and_its_references_resolve(data, statistician_both, monitor_both, odm_schema):
    for user in (statistician_both, monitor_both):
        root = check_complete(content_of(run_now(user, "dataset", "odm")).decode("utf-8"), odm_schema)
        # The permanent key, and the numbers as items.
        keys = {subject.get("SubjectKey") for subject in root.iter(f"{ODM}SubjectData")}
        assert keys == set(Screening.objects.values_list("subject_key", flat=True))
        for number, subject in subjects_by_number(root).items():
            participant = Participant.objects.get(screening_number=number)
            assert subject.get("SubjectKey") == participant.screening.subject_key
        # Both languages of a code list, and the units of the forms the protocol declares.
        [female] = [item for item in root.iter(f"{ODM}CodeListItem") if item.get("CodedValue") == "F"]
        assert {text.get(XML_LANG) for text in female.iter(f"{ODM}TranslatedText")} == {"en", "zh-Hans"}
        units = {unit.get("OID"): unit for unit in root.iter(f"{ODM}MeasurementUnit")}
        weight = next(item for item in root.iter(f"{ODM}ItemDef") if item.get("OID") == "IT.CRF.vitals.weight")
        assert (
            units[weight.find(f"{ODM}MeasurementUnitRef").get("MeasurementUnitOID")]
            .find(f"{ODM}Symbol/{ODM}TranslatedText")
            .text
            == "kg"
        )
        assert {text.text for text in weight.iter(f"{ODM}TranslatedText")} == {"Weight", "体重"}
        # The staff who appear, without their e-mail.
        assert root.find(f"{ODM}AdminData/{ODM}User/{ODM}Email") is None
        logins = {login.text for login in root.iter(f"{ODM}LoginName")}
        assert {"coordinator", "other_coordinator"} <= logins


def test_the_pis_eligibility_signatures_are_on_the_screening_forms(data, statistician_both, odm_schema):
    root = check_complete(content_of(run_now(statistician_both, "dataset", "odm")).decode("utf-8"), odm_schema)
    by_number = subjects_by_number(root)
    signed = Participant.objects.exclude(eligibility_signature=None).select_related("eligibility_signature")
    assert signed.count() > 5
    for participant in signed:
        form = next(
            form
            for form in by_number[participant.screening_number].iter(f"{ODM}FormData")
            if form.get("FormOID") == "F.SCREENING"
        )
        signature = form.find(f"{ODM}Signature")
        assert signature.find(f"{ODM}SignatureRef").get("SignatureOID") == exports.SIGNATURE_ELIGIBILITY
        assert signature.find(f"{ODM}UserRef").get("UserOID") == f"USR.{participant.eligibility_signature.signer_id}"
        stamp = participant.eligibility_signature.signed_at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert signature.find(f"{ODM}DateTimeStamp").text == stamp
    unsigned = Participant.objects.filter(eligibility_signature=None).first()
    if unsigned is not None:
        form = next(
            f for f in by_number[unsigned.screening_number].iter(f"{ODM}FormData") if f.get("FormOID") == "F.SCREENING"
        )
        assert form.find(f"{ODM}Signature") is None
    assert Signature.objects.count() >= signed.count()


def test_audit_records_come_from_the_audit_trail(data, cast, statistician_both, odm_schema):
    participant = data.randomized[2]
    with audit_context(actor=cast.coordinator, reason="status corrected"):
        Participant.objects.filter(pk=participant.pk).update(status="completed")
    event = AuditEvent.objects.filter(table_name="enrollment_participant", record_pk=str(participant.pk)).latest("id")
    root = check_complete(content_of(run_now(statistician_both, "dataset", "odm")).decode("utf-8"), odm_schema)
    subject = subjects_by_number(root)[participant.screening_number]
    form = next(form for form in subject.iter(f"{ODM}FormData") if form.get("FormOID") == "F.RANDOMIZATION")
    record = form.find(f"{ODM}AuditRecord")
    assert record.find(f"{ODM}UserRef").get("UserOID") == f"USR.{cast.coordinator.pk}"
    assert record.find(f"{ODM}DateTimeStamp").text == event.occurred_at.astimezone(datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert record.find(f"{ODM}ReasonForChange").text == "status corrected"
    assert record.find(f"{ODM}SourceID").text == f"enrollment_participant#{participant.pk} UPDATE status"
    location = subject.find(f"{ODM}SiteRef").get("LocationOID")
    assert record.find(f"{ODM}LocationRef").get("LocationOID") == location
    # The whole trail of the file's rows, each event once, oldest first.
    trail = [record.get("ID") for record in root.iter(f"{ODM}AuditRecord") if record.get("ID")]
    expected = AuditEvent.objects.filter(
        subject_id__in=Screening.objects.values("pk"), table_name__in=exports.odm_audited_tables()
    ).order_by("occurred_at", "id")
    assert trail == [f"AR.{pk}" for pk in expected.values_list("pk", flat=True)]
    assert f"AR.{event.pk}" in trail


def test_a_blinded_odm_has_no_arm_and_no_audit_value_the_blinded_trail_hides(
    data, forms, cast, monitor_both, statistician_both, odm_schema, monkeypatch
):
    # Every column of the file's tables is visible to a blinded reader today; a column hidden
    # from them (as one added later without a declaration would be) must stay out of the file.
    monkeypatch.setattr(
        Participant,
        "audit_blinded_visible",
        tuple(name for name in Participant.audit_blinded_visible if name != "status"),
    )
    participant = data.randomized[3]
    with audit_context(actor=cast.coordinator, reason="hidden column only"):
        Participant.objects.filter(pk=participant.pk).update(status="completed")
    hidden = AuditEvent.objects.filter(table_name="enrollment_participant", record_pk=str(participant.pk)).latest("id")
    assert hidden.changed_fields == ["status"]

    document = content_of(run_now(monitor_both, "dataset", "odm")).decode("utf-8")
    root = check_complete(document, odm_schema)
    arm_names_zh = [arm.name_zh for arm in data_trial(participant).protocol.arms if arm.name_zh]
    assert arm_names_zh
    for word in [*reports_data.ARM_WORDS, *arm_names_zh]:
        assert word not in document, word
    assert "IT.ARM" not in document and "CL.ARM" not in document
    # A form item's unblinded value is a hidden column: never named to a blinded reader.
    assert "crf_itemvalue#" in document and "unblinded_value" not in document
    # The trail's records are numbered by their place in the file, not by the trail's event ids,
    # whose gap where the update was left out would count it.
    ids = [record.get("ID") for record in root.iter(f"{ODM}AuditRecord") if record.get("ID")]
    assert ids == [f"AR.{number}" for number in range(1, len(ids) + 1)]
    assert "hidden column only" not in document
    visible = {table: blinded_visible_columns(model) for table, model in _models_by_table().items()}
    sources = [record.find(f"{ODM}SourceID").text for record in root.iter(f"{ODM}AuditRecord")]
    assert len(sources) > 20
    for source in sources:
        table = source.split("#")[0]
        assert table in exports.odm_audited_tables(), source
        fields = source.split(" ")[2].split(",") if source.count(" ") >= 2 else []
        assert set(fields) <= visible[table], source
    # The unblinded file has the update and names its column.
    unblinded = content_of(run_now(statistician_both, "dataset", "odm")).decode("utf-8")
    assert f'ID="AR.{hidden.pk}"' in unblinded and f"enrollment_participant#{participant.pk} UPDATE status" in unblinded


def data_trial(participant):
    return participant.site.trial


def _models_by_table():
    from trialsite.audit import audited_models

    return {model._meta.db_table: model for model in audited_models()}


def test_a_protocol_amendment_gives_a_metadata_version_and_clinical_data_of_its_own(
    data, trial, site, cast, statistician_both, tmp_path, odm_schema
):
    text = settings.PROTOCOL_FILE.read_text()
    for old, new in (
        ('protocol_version = "1.0"', 'protocol_version = "2.0"'),
        ("target_enrollment = 100", "target_enrollment = 120"),
        ("[[sites]]\n", '[[sites]]\ncode = "SH"\nname = "Hospital SH"\ntime_zone = "Asia/Shanghai"\n\n[[sites]]\n'),
    ):
        assert old in text, old
        text = text.replace(old, new, 1)
    amended = tmp_path / "amended.toml"
    amended.write_text(text)
    assert load_protocol_file(amended).new_version
    trial.refresh_from_db()
    later = factories.make_participant(site, by=cast.coordinator)
    assert Screening.objects.get(pk=later.pk).protocol_version_id == trial.current_version_id

    root = check_complete(content_of(run_now(statistician_both, "dataset", "odm")).decode("utf-8"), odm_schema)
    versions = [version.get("OID") for version in root.iter(f"{ODM}MetaDataVersion")]
    assert versions == ["MDV.1.0", "MDV.2.0"]
    clinical = {data.get("MetaDataVersionOID"): data for data in root.iter(f"{ODM}ClinicalData")}
    assert set(clinical) == set(versions)
    under_second = {subject.get("SubjectKey") for subject in clinical["MDV.2.0"].iter(f"{ODM}SubjectData")}
    assert under_second == {later.screening.subject_key}
    under_first = {subject.get("SubjectKey") for subject in clinical["MDV.1.0"].iter(f"{ODM}SubjectData")}
    assert len(under_first) == Screening.objects.count() - 1
    for location in root.iter(f"{ODM}Location"):
        assert [ref.get("MetaDataVersionOID") for ref in location.iter(f"{ODM}MetaDataVersionRef")] == versions


def test_a_second_export_names_the_first_as_its_prior_file(data, statistician_both, monitor_both, odm_schema):
    first = ElementTree.fromstring(content_of(run_now(statistician_both, "dataset", "odm")))
    assert first.get("PriorFileOID") is None
    ElementTree.fromstring(content_of(run_now(monitor_both, "dataset", "odm")))  # blinded: another chain
    second = ElementTree.fromstring(content_of(run_now(statistician_both, "dataset", "odm")))
    assert second.get("PriorFileOID") == first.get("FileOID") != second.get("FileOID")


def test_postgresql_and_python_build_the_same_file_with_audit_records_and_signatures(
    data, cast, statistician_both, monitor_both
):
    with audit_context(actor=cast.coordinator, reason='a "quoted" <reason> & more'):
        Participant.objects.filter(pk=data.randomized[4].pk).update(status="completed")
    for user in (statistician_both, monitor_both):
        scope = selectors.report_scope(user)
        stamp = exports.make_stamp(scope, export_id=3)
        written = {}
        for use_sql in (True, False):
            stream = io.StringIO()
            count = exports.write_odm(scope, stream, stamp, use_sql=use_sql)
            written[use_sql] = (count, stream.getvalue())
        assert written[True] == written[False], user.username
        assert (
            "<Signature ID=" in written[True][1] and "&quot;quoted&quot; &lt;reason&gt; &amp; more" in written[True][1]
        )


def test_only_oid_characters_are_written_unescaped():
    """What the SQL writes without XML escapes is limited to what cannot need them."""
    with pytest.raises(ValueError):
        exports._sql_oid('LOC."', "st.code")
    assert "&amp;" not in exports._sql_xml_attribute(exports._sql_oid("LOC.", "st.code"))
    assert "&amp;" in exports._sql_xml_attribute("'LOC.' || st.code")
    assert "&amp;" in exports._sql_xml_attribute(f"{exports._sql_date('v.target_date')} || v.code")


# --- the second trial -------------------------------------------------------------------------


def test_the_second_protocols_odm_is_complete(db, odm_schema):
    with time_machine.travel(datetime.datetime(2026, 12, 15, 4, tzinfo=datetime.UTC), tick=False):
        trial = load_protocol(PROTOCOLS / "NCT09000001.toml")
        site = trial.sites.order_by("code").first()
        coordinator = factories.make_user(Role.COORDINATOR, site, username="demo-coordinator")
        statistician = factories.make_user(Role.STATISTICIAN, site, username="demo-statistician")
        factories.make_participant(site, by=coordinator)
        factories.make_screening(site, by=coordinator, eligible=False)
        scope = selectors.report_scope(statistician, trial=trial)
        stream = io.StringIO()
        exports.write_odm(scope, stream, exports.make_stamp(scope, export_id=1))
    document = stream.getvalue()
    root = check_complete(document, odm_schema)
    assert root.find(f"{ODM}Study").get("OID") == "ST.NCT09000001"
    protocol = trial.protocol
    unit_items = [(form, item) for form in protocol.forms for item in form.items if item.unit]
    assert unit_items
    item_defs = {item.get("OID"): item for item in root.iter(f"{ODM}ItemDef")}
    for form, item in unit_items:
        assert item_defs[f"IT.CRF.{form.code}.{item.code}"].find(f"{ODM}MeasurementUnitRef") is not None
    assert len(list(root.iter(f"{ODM}SubjectData"))) == 2
    zh = [text.text for text in root.iter(f"{ODM}TranslatedText") if text.get(XML_LANG) == "zh-Hans"]
    assert any(criterion.text_zh in zh for criterion in protocol.eligibility.criteria if criterion.text_zh)


# --- case report forms --------------------------------------------------------------------------


@pytest.fixture
def forms(data, cast):
    from crf import services as crf_services
    from schedules.services import visit_schedule_create

    vitals_of, conmeds_of = data.randomized[5], data.randomized[6]
    with audit_context(actor=cast.coordinator, reason="visit plan"):
        visit_schedule_create(participant=vitals_of, day0=datetime.date(2026, 11, 3))
    assert vitals_of.visits.filter(code="C1").exists()
    vitals = {"weight": "47.5", "systolic": "120", "diastolic": "80", "pulse": "72", "temperature": "36.6"}
    record = crf_services.form_save(
        user=cast.coordinator, values=vitals, participant=vitals_of, form_code="vitals", visit_code="C1"
    ).record
    crf_services.form_save(user=cast.coordinator, values={"weight": "48.0"}, record=record, reason="scale recalibrated")
    for name, ongoing in (('Heparin <sc> & "more"', True), ("Ibuprofen", False)):
        values = {"drug_name": name, "indication": "Pain", "drug_class": "nsaid", "start_date": "2026-11-01"}
        values |= {"ongoing": ongoing} if ongoing else {"ongoing": False, "stop_date": "2026-11-05"}
        crf_services.form_save(user=cast.coordinator, values=values, participant=conmeds_of, form_code="conmeds")
    return vitals_of, conmeds_of


def test_the_case_report_forms_are_in_the_file_with_their_units_and_audit(
    forms, statistician_both, monitor_both, odm_schema
):
    vitals_of, conmeds_of = forms
    for user in (statistician_both, monitor_both):
        root = check_complete(content_of(run_now(user, "dataset", "odm")).decode("utf-8"), odm_schema)
        by_number = subjects_by_number(root)
        [c1] = [
            event
            for event in by_number[vitals_of.screening_number].iter(f"{ODM}StudyEventData")
            if event.get("StudyEventOID") == "SE.VISIT.C1"
        ]
        [vitals] = [form for form in c1.findall(f"{ODM}FormData") if form.get("FormOID") == "F.CRF.vitals"]
        values = {item.get("ItemOID"): item.get("Value") for item in vitals.iter(f"{ODM}ItemData")}
        assert values["IT.CRF.vitals.weight"] == "48" and values["IT.CRF.vitals.pulse"] == "72"
        [weight] = [item for item in vitals.iter(f"{ODM}ItemData") if item.get("ItemOID") == "IT.CRF.vitals.weight"]
        assert weight.find(f"{ODM}AuditRecord/{ODM}ReasonForChange").text == "scale recalibrated"
        assert vitals.find(f"{ODM}AuditRecord") is not None
        [log] = [
            event
            for event in by_number[conmeds_of.screening_number].iter(f"{ODM}StudyEventData")
            if event.get("StudyEventOID") == "SE.LOG.conmeds"
        ]
        entries = log.findall(f"{ODM}FormData")
        assert [entry.get("FormRepeatKey") for entry in entries] == ["1", "2"]
        first = {item.get("ItemOID"): item.get("Value") for item in entries[0].iter(f"{ODM}ItemData")}
        assert first["IT.CRF.conmeds.drug_name"] == 'Heparin <sc> & "more"'
        assert first["IT.CRF.conmeds.ongoing"] == "true" and first["IT.CRF.conmeds.drug_class"] == "nsaid"
        second = {item.get("ItemOID"): item.get("Value") for item in entries[1].iter(f"{ODM}ItemData")}
        assert second["IT.CRF.conmeds.stop_date"] == "2026-11-05" and second["IT.CRF.conmeds.ongoing"] == "false"


def test_postgresql_and_python_build_the_same_case_report_forms(forms, statistician_both, monitor_both):
    for user in (statistician_both, monitor_both):
        scope = selectors.report_scope(user)
        stamp = exports.make_stamp(scope, export_id=5)
        written = {}
        for use_sql in (True, False):
            stream = io.StringIO()
            exports.write_odm(scope, stream, stamp, use_sql=use_sql)
            written[use_sql] = stream.getvalue()
        assert written[True] == written[False], user.username
        assert 'ItemOID="IT.CRF.vitals.weight" Value="48"' in written[True]


TABLET_CHECK = """
[[forms]]
code = "tablets"
name = "Tablet return"
name_zh = "片剂回收"
kind = "visit"
visits = ["C*"]
items = [
    { code = "returned", label = "Tablets returned", label_zh = "回收片数", type = "integer", min = 0, max = 35 },
    { code = "kit_content", label = "Kit content check", label_zh = "药盒内容核对", type = "text", unblinded_only = true },
]
"""


def test_an_unblinded_only_item_is_only_in_an_unblinded_file(trial, site, cast, tmp_path, odm_schema):
    from crf import services as crf_services
    from tests import dosing_factories

    # Nobody is screened yet, so the file replaces the version in force.
    path = tmp_path / "NCT06442709.toml"
    path.write_text(settings.PROTOCOL_FILE.read_text(encoding="utf-8") + TABLET_CHECK, encoding="utf-8")
    trial = load_protocol(path)
    assert trial.protocol.form("tablets").item("kit_content").unblinded_only
    participant = dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator)
    participant = Participant.objects.get(pk=participant.pk)  # its trial as reloaded, with the new form
    unblinded = factories.make_user_with_every_role(site, username="unblinded-pharmacist")
    crf_services.form_save(
        user=unblinded,
        values={"returned": "3", "kit_content": "content-XYZ-check"},
        participant=participant,
        form_code="tablets",
        visit_code="C1",
    )
    outputs = {}
    for user in (cast.monitor, cast.statistician):
        scope = selectors.report_scope(user, trial=trial)
        stamp = exports.make_stamp(scope, export_id=9)
        written = {}
        for use_sql in (True, False):
            stream = io.StringIO()
            exports.write_odm(scope, stream, stamp, use_sql=use_sql)
            written[use_sql] = stream.getvalue()
        assert written[True] == written[False], user.username
        check_complete(written[True], odm_schema)
        outputs[scope.unblinded] = written[True]
    blinded, unblinded_file = outputs[False], outputs[True]
    assert 'ItemOID="IT.CRF.tablets.returned" Value="3"' in blinded
    assert "content-XYZ-check" not in blinded and "IT.CRF.tablets.kit_content" not in blinded
    assert "unblinded_value" not in blinded
    assert 'ItemOID="IT.CRF.tablets.kit_content" Value="content-XYZ-check"' in unblinded_file


def test_every_signed_sae_report_version_carries_its_pis_signature(
    data, cast, statistician_both, monitor_both, odm_schema
):
    """ODM allows one Signature per ItemGroupData: each SAE report version is a repeat of
    IG.SAE_REPORT naming its event and version, with its signature when the PI signed it."""
    from safety import services as safety
    from safety.models import SaeReport, Seriousness

    participant = next(participant for participant in data.randomized if participant.site.code == "NT")
    serious = safety.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=safety.AeDetails(
            term="sepsis",
            grade=4,
            onset_date=datetime.date(2026, 12, 13),
            serious=True,
            seriousness=(Seriousness.HOSPITALISATION,),
            awareness_at=datetime.datetime(2026, 12, 13, 9, tzinfo=datetime.UTC),
        ),
    )
    first = safety.sae_report_write(event=serious, written_by=cast.coordinator, narrative="first", complete=True)
    first_signature = safety.sae_report_sign(report=first, signer=cast.investigator, password=factories.PASSWORD)
    # A follow-up drafted, then written complete and signed: the draft version stays unsigned.
    safety.sae_report_write(event=serious, written_by=cast.coordinator, narrative="draft", complete=False)
    follow_up = safety.sae_report_write(event=serious, written_by=cast.coordinator, narrative="later", complete=True)
    signature = safety.sae_report_sign(report=follow_up, signer=cast.investigator, password=factories.PASSWORD)
    reports = list(SaeReport.objects.filter(adverse_event=serious).order_by("version"))
    assert [(report.version, report.signature_id) for report in reports] == [
        (1, first_signature.pk),
        (2, None),
        (3, signature.pk),
    ]
    for user in (statistician_both, monitor_both):
        document = content_of(run_now(user, "dataset", "odm")).decode("utf-8")
        root = check_complete(document, odm_schema)
        subject = subjects_by_number(root)[participant.screening_number]
        [form] = [form for form in subject.iter(f"{ODM}FormData") if form.get("FormOID") == "F.AE"]
        [group] = [group for group in form.findall(f"{ODM}ItemGroupData") if group.get("ItemGroupOID") == "IG.AE"]
        assert group.find(f"{ODM}Signature") is None
        assert group.find(f"{ODM}AuditRecord/{ODM}SourceID").text.startswith(f"safety_adverseevent#{serious.pk} ")
        versions = [
            group for group in form.findall(f"{ODM}ItemGroupData") if group.get("ItemGroupOID") == "IG.SAE_REPORT"
        ]
        assert [version.get("ItemGroupRepeatKey") for version in versions] == ["1", "2", "3"]
        for version, report, signed_by in zip(versions, reports, (first_signature, None, signature), strict=True):
            values = {item.get("ItemOID"): item.get("Value") for item in version.iter(f"{ODM}ItemData")}
            assert values == {
                "IT.SAE_AE": str(serious.sequence),
                "IT.SAE_VERSION": str(report.version),
                "IT.SAE_COMPLETE": "yes" if report.complete else "no",
                "IT.SAE_WRITTEN_AT": report.written_at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            signed = version.find(f"{ODM}Signature")
            if signed_by is None:
                assert signed is None
                continue
            assert signed.get("ID") == f"SG.{signed_by.pk}"
            assert signed.find(f"{ODM}SignatureRef").get("SignatureOID") == exports.SIGNATURE_SAE_REPORT
            assert signed.find(f"{ODM}UserRef").get("UserOID") == f"USR.{cast.investigator.pk}"
            stamp = signed_by.signed_at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            assert signed.find(f"{ODM}DateTimeStamp").text == stamp
            assert version.find(f"{ODM}AuditRecord/{ODM}SourceID").text.startswith(f"safety_saereport#{report.pk} ")
        # Every SAE report signature in the database is in the file, each once.
        sae_signatures = [
            s.get("ID")
            for s in root.iter(f"{ODM}Signature")
            if s.find(f"{ODM}SignatureRef").get("SignatureOID") == exports.SIGNATURE_SAE_REPORT
        ]
        assert sae_signatures == [f"SG.{first_signature.pk}", f"SG.{signature.pk}"]
        assert "investigator" in {login.text for login in root.iter(f"{ODM}LoginName")}
        scope = selectors.report_scope(user)
        stamp = exports.make_stamp(scope, export_id=11)
        written = {}
        for use_sql in (True, False):
            stream = io.StringIO()
            exports.write_odm(scope, stream, stamp, use_sql=use_sql)
            written[use_sql] = stream.getvalue()
        assert written[True] == written[False] and f'<Signature ID="SG.{signature.pk}">' in written[True]


# --- deaths -------------------------------------------------------------------------------------


def record_death(participant, cast, *, cause: str):
    from safety import services as safety
    from safety.models import Seriousness

    return safety.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=safety.AeDetails(
            term="sepsis",
            grade=5,
            onset_date=datetime.date(2026, 12, 12),
            outcome="fatal",
            serious=True,
            seriousness=(Seriousness.DEATH,),
            awareness_at=datetime.datetime(2026, 12, 13, 9, tzinfo=datetime.UTC),
            died_on=datetime.date(2026, 12, 13),
            death_cause=cause,
        ),
    )


def test_a_death_is_in_the_adverse_event_form_with_its_audit_record(
    data, cast, statistician_both, monitor_both, odm_schema
):
    from safety import services as safety
    from safety.models import Death

    participant = next(participant for participant in data.randomized if participant.site.code == "NT")
    safety.ae_record(
        participant=participant,
        recorded_by=cast.coordinator,
        details=safety.AeDetails(term="epistaxis", grade=1, onset_date=datetime.date(2026, 12, 10)),
    )
    fatal = record_death(participant, cast, cause='Septic shock\nafter "pneumonia" & <ARDS>')
    death = Death.objects.get(participant=participant)
    event = AuditEvent.objects.filter(table_name="safety_death", record_pk=str(death.pk)).latest("id")
    for user in (statistician_both, monitor_both):
        document = content_of(run_now(user, "dataset", "odm")).decode("utf-8")
        root = check_complete(document, odm_schema)
        subject = subjects_by_number(root)[participant.screening_number]
        [form] = [form for form in subject.iter(f"{ODM}FormData") if form.get("FormOID") == "F.AE"]
        groups = [group.get("ItemGroupOID") for group in form.findall(f"{ODM}ItemGroupData")]
        assert groups == ["IG.AE", "IG.AE", "IG.DEATH"]
        [group] = [group for group in form.findall(f"{ODM}ItemGroupData") if group.get("ItemGroupOID") == "IG.DEATH"]
        values = {item.get("ItemOID"): item.get("Value") for item in group.iter(f"{ODM}ItemData")}
        assert values == {
            "IT.DEATH_DATE": "2026-12-13",
            "IT.DEATH_CAUSE": 'Septic shock\nafter "pneumonia" & <ARDS>',
            "IT.DEATH_AE": str(fatal.sequence),
        }
        # The fatal event's record is the one the death names.
        fatal_group = next(
            ae
            for ae in form.findall(f"{ODM}ItemGroupData")
            if ae.get("ItemGroupOID") == "IG.AE"
            and any(i.get("ItemOID") == "IT.AE_GRADE" and i.get("Value") == "5" for i in ae.iter(f"{ODM}ItemData"))
        )
        assert {i.get("ItemOID"): i.get("Value") for i in fatal_group.iter(f"{ODM}ItemData")}["IT.AE_SEQUENCE"] == str(
            fatal.sequence
        )
        record = group.find(f"{ODM}AuditRecord")
        assert record.find(f"{ODM}SourceID").text.startswith(f"safety_death#{death.pk} INSERT")
        assert record.find(f"{ODM}UserRef").get("UserOID") == f"USR.{cast.coordinator.pk}"
        trail = {
            record.find(f"{ODM}SourceID").text: record.get("ID")
            for record in root.iter(f"{ODM}AuditRecord")
            if record.get("ID")
        }
        death_record = next(
            key for source, key in trail.items() if source.startswith(f"safety_death#{death.pk} INSERT")
        )
        # Under its event id unblinded; under its place in the file blinded (tests/test_audit_gaps.py).
        if user == statistician_both:
            assert death_record == f"AR.{event.pk}"
        else:
            assert re.fullmatch(r"AR\.\d+", death_record)
        # Others have no death group.
        assert document.count('ItemGroupOID="IG.DEATH">') == 1
        status = {i.get("ItemOID"): i.get("Value") for i in subject.iter(f"{ODM}ItemData")}["IT.STATUS"]
        assert status == "died"
        if user == monitor_both:
            for word in reports_data.ARM_WORDS:
                assert word not in document, word
        scope = selectors.report_scope(user)
        stamp = exports.make_stamp(scope, export_id=13)
        written = {}
        for use_sql in (True, False):
            stream = io.StringIO()
            exports.write_odm(scope, stream, stamp, use_sql=use_sql)
            written[use_sql] = stream.getvalue()
        assert written[True] == written[False], user.username
        assert "IT.DEATH_CAUSE" in written[True]
