"""The analysis package built from the database (issue 19), for every protocol in protocols/.

Each trial runs its journey (tests/test_trial_journeys.py: screening, randomization, first dose,
kits, every form) and then what a trial also meets: a screen failure, a participant never
randomized, an adverse event whose grade changes and becomes serious with a signed SAE report, a
death, a withdrawal, a correction that makes a protocol deviation, a returned kit and an
emergency unblinding. Every value of every dataset is then compared with the database, read
here independently of the builder, blinded and unblinded. Nothing here names a trial."""

from __future__ import annotations

import datetime
import json
import re
import tomllib
import types
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import translation

from crf.models import FormRecord
from datasets.build import build_package
from datasets.spec import NAME
from dosing import services as dosing_services
from dosing.models import DoseRecord, Kit, RepeatLabs
from enrollment import services as enrollment_services
from enrollment.eligibility import age_on
from enrollment.models import EligibilityAnswer, Participant, ProtocolDeviation, Screening
from randomization.models import Slot, Unblinding
from reports.selectors import ReportScope
from safety import services as safety_services
from safety.ctcae import TERMS
from safety.models import AdverseEvent, Death, SaeReport, Seriousness, SusarAssessment
from schedules.models import Visit
from tests import factories
from tests import test_trial_journeys as journeys
from trialsite.audit import audit_context
from trialsite.models import Role

NOW = journeys.NOW
CHINESE = re.compile(r"[\u4e00-\u9fff]")
TODAY = datetime.date(2026, 11, 20)


@pytest.fixture
def trials(db):
    return [journeys.load_protocol(path) for path in journeys.PROTOCOLS]


def _term() -> str:
    """A CTCAE term with grades 2, 3 and 5 and no words needed."""
    return next(code for code, term in TERMS.items() if not term.needs_text and {2, 3, 5} <= set(term.grades))


def _screen(site, by, record_number: str, *, failing: bool = False) -> Screening:
    protocol = site.trial.protocol
    answers = {c.code: "yes" if c.kind == "inclusion" else "no" for c in protocol.eligibility.criteria}
    if failing:
        first_exclusion = next(c for c in protocol.eligibility.criteria if c.kind == "exclusion")
        answers[first_exclusion.code] = "yes"
    return enrollment_services.screening_create(
        site=site,
        screened_by=by,
        initials="EX",
        date_of_birth=datetime.date(1961, 3, 4),
        sex="F",
        hospital_record_number=record_number,
        screening_date=TODAY - datetime.timedelta(days=1),
        consent_version="1.1",
        consent_date=TODAY - datetime.timedelta(days=1),
        answers=answers,
        stratification={factor.code: factor.levels[-1] for factor in protocol.randomization.factors},
    )


def build_trial(trial, *, participants_per_site: int = journeys.PER_SITE) -> dict:
    """The journey and the rest of a trial's life, through the services."""
    journeys.PER_SITE, before = participants_per_site, journeys.PER_SITE
    try:
        journey = journeys._journey(trial)
    finally:
        journeys.PER_SITE = before
    cast = journey["cast"]
    site = trial.sites.order_by("code").first()
    role = lambda name, where=site: cast[(where.code, name)]  # noqa: E731
    mine = [p for p in journey["participants"] if p.site_id == site.pk]
    _screen(site, role(Role.COORDINATOR), "X-FAIL", failing=True)
    _screen(site, role(Role.COORDINATOR), "X-WAIT")

    # An event that worsens and becomes serious, reported and signed.
    term = _term()
    event = safety_services.ae_record(
        participant=mine[0],
        recorded_by=role(Role.INVESTIGATOR),
        details=safety_services.AeDetails(
            grade=2, onset_date=TODAY, term=term, relation_infusion="possible", action_infusion="none"
        ),
    )
    safety_services.ae_grade_change(
        event=event,
        recorded_by=role(Role.INVESTIGATOR),
        details=safety_services.AeDetails(
            grade=3,
            onset_date=TODAY,
            term=term,
            serious=True,
            seriousness=(Seriousness.HOSPITALISATION,),
            awareness_at=NOW,
            relation_tablets="unlikely",
        ),
    )
    report = safety_services.sae_report_write(
        event=event, written_by=role(Role.INVESTIGATOR), narrative="Admitted for observation.", complete=True
    )
    safety_services.sae_report_sign(report=report, signer=role(Role.INVESTIGATOR), password=factories.PASSWORD)
    safety_services.sae_assess(
        event=event,
        assessed_by=role(Role.SPONSOR_SAFETY),
        related=True,
        expectedness="unexpected",
        reference="Investigator's brochure 4.2",
    )

    # A death.
    safety_services.ae_record(
        participant=mine[1],
        recorded_by=role(Role.INVESTIGATOR),
        details=safety_services.AeDetails(
            grade=5,
            onset_date=TODAY,
            term=term,
            serious=True,
            seriousness=(Seriousness.DEATH,),
            awareness_at=NOW,
            outcome="fatal",
            died_on=TODAY,
            death_cause="Haemorrhage",
        ),
    )
    # Labs repeated at a dose's visit, written directly (a held infusion is dosing's own test).
    dose = DoseRecord.objects.filter(site__trial=trial).order_by("participant_id").first()
    if dose is not None:
        with audit_context(actor=role(Role.COORDINATOR, dose.site), reason="test repeat labs"):
            RepeatLabs.objects.create(
                visit=dose.visit,
                participant=dose.participant,
                site=dose.site,
                measured_on=TODAY,
                neutrophils=1400,
                platelets=90000,
                alt_uln=Decimal("2.50"),
                ast_uln=Decimal("1.25"),
                decision="hold",
                reasons=["Neutrophils 1,400/mm³: below the limit of 1,500/mm³"],
                recorded_by=role(Role.COORDINATOR, dose.site),
                protocol_version=trial.current_version,
            )
    # A withdrawal.
    enrollment_services.participant_withdraw(
        participant=mine[2], withdrawn_by=role(Role.COORDINATOR), withdrawn_on=TODAY, reason="Moved away"
    )
    # A correction after randomization at the other site: a protocol deviation.
    other = next((p for p in journey["participants"] if p.site_id != site.pk), mine[0])
    first_exclusion = next(c for c in trial.protocol.eligibility.criteria if c.kind == "exclusion")
    enrollment_services.screening_update(
        screening=Screening.objects.get(pk=other.pk),
        changed_by=role(Role.COORDINATOR, other.site),
        reason="found in the notes",
        answers={first_exclusion.code: "yes"},
    )
    # A kit back at the pharmacy, its tablets counted.
    kit = (
        Kit.objects.filter(trial=trial, status=Kit.Status.DISPENSED)
        .select_related("site")
        .order_by("-kit_type", "participant_id")
        .first()
    )
    if kit is not None:
        dosing_services.kit_return(
            kit=kit,
            returned_by=role(Role.PHARMACIST, kit.site),
            returned_on=TODAY,
            tablets_returned=7 if kit.is_tablet else None,
        )
    # An emergency unblinding (recorded as the sealed-sheet path records it).
    with audit_context(actor=role(Role.INVESTIGATOR), reason="emergency unblinding"):
        Unblinding.objects.create(
            participant=mine[0],
            site=site,
            unblinded_by=role(Role.INVESTIGATOR),
            reason="Suspected bleeding",
            method=Unblinding.Method.SEALED_SHEET,
            sheet_number=3,
            opened_at=NOW,
        )
    return journey


def scope_of(trial, *, unblinded: bool, user) -> ReportScope:
    return ReportScope(user=user, trial=trial, sites=tuple(trial.sites.order_by("code")), unblinded=unblinded)


def table(dataset) -> list[dict]:
    names = [variable.name for variable in dataset.variables]
    rows = [dict(zip(names, row, strict=True)) for row in dataset.rows]
    return rows


# --- The database, read independently of the builder ---------------------------------------------


def _text(value):
    return value if value not in ("", None) else None


def _version(record):
    return record.protocol_version.version if record.protocol_version_id else None


def expected_subjects(trial) -> list[dict]:
    rows = []
    factors = trial.protocol.randomization.factors
    for screening in Screening.objects.filter(site__trial=trial).order_by("subject_key"):
        participant = Participant.objects.filter(pk=screening.pk).first()
        consent = screening.consents.order_by("-signed_on", "-pk").first()
        signature = participant.eligibility_signature if participant else None
        withdrawal = getattr(participant, "withdrawal", None) if participant else None
        death = getattr(participant, "death", None) if participant else None
        row = {
            "subject_key": screening.subject_key,
            "site": screening.site.code,
            "screening_date": screening.screening_date,
            "age": age_on(screening.date_of_birth, screening.screening_date),
            "sex": screening.sex,
            "screening_outcome": screening.outcome,
            "screen_fail_reasons": ";".join(reason["code"] for reason in screening.reasons) or None,
        }
        for factor in factors:
            row[f"factor_{factor.code.lower()}"] = screening.stratification.get(factor.code)
        row |= {
            "consent_version": consent.version,
            "consent_date": consent.signed_on,
            "elig_signed_by": signature.signer.username if signature else None,
            "elig_signed_at": signature.signed_at if signature else None,
            "elig_sign_meaning": signature.meaning if signature else None,
            "screening_number": participant.screening_number if participant else None,
            "randomization_number": participant.randomization_number if participant else None,
            "randomized_at": participant.randomized_at if participant else None,
            "status": participant.status if participant else None,
            "withdrawal_date": withdrawal.withdrawn_on if withdrawal else None,
            "withdrawal_reason": withdrawal.reason if withdrawal else None,
            "death_date": death.died_on if death else None,
            "death_cause": death.cause if death else None,
            "protocol_version": _version(screening),
        }
        rows.append(row)
    return rows


def expected_eligibility(trial) -> list[dict]:
    kinds = {c.code: c.kind for c in trial.protocol.eligibility.criteria}
    answers = EligibilityAnswer.objects.filter(site__trial=trial).select_related("screening")
    return [
        {
            "subject_key": answer.screening.subject_key,
            "criterion": answer.criterion_code,
            "criterion_kind": kinds[answer.criterion_code],
            "answer": answer.answer,
        }
        for answer in sorted(answers, key=lambda a: (a.screening.subject_key, a.pk))
    ]


def _key(participant_id) -> str:
    return Screening.objects.get(pk=participant_id).subject_key


def expected_visits(trial) -> list[dict]:
    visits = sorted(Visit.objects.filter(site__trial=trial), key=lambda v: (_key(v.participant_id), v.sequence))
    return [
        {
            "subject_key": _key(visit.participant_id),
            "visit_code": visit.code,
            "visit_sequence": visit.sequence,
            "visit_kind": visit.kind,
            "cycle": visit.cycle,
            "target_date": visit.target_date,
            "window_start": visit.window_start,
            "window_end": visit.window_end,
            "visit_status": visit.status,
            "visit_date": visit.actual_date,
            "out_of_window": visit.is_deviation,
            "out_of_window_reason": _text(visit.out_of_window_reason),
            "weight_kg": visit.weight_kg,
            "recorded_at": visit.recorded_at,
            "protocol_version": _version(visit),
        }
        for visit in visits
    ]


def expected_doses(trial) -> list[dict]:
    doses = sorted(
        DoseRecord.objects.filter(site__trial=trial), key=lambda d: (_key(d.participant_id), d.visit.sequence)
    )
    return [
        {
            "subject_key": _key(dose.participant_id),
            "visit_code": dose.visit.code,
            "first_dose": dose.first_dose,
            "neutrophils": dose.neutrophils,
            "platelets": dose.platelets,
            "alt_uln": dose.alt_uln,
            "ast_uln": dose.ast_uln,
            "decision": dose.decision,
            "decision_reasons": "; ".join(dose.reasons) or None,
            "weight_kg": dose.weight_kg,
            "baseline_weight_kg": dose.baseline_weight_kg,
            "weight_change_flagged": dose.weight_change_flagged,
            "dose_mg": dose.dose_mg,
            "concentrate_ml": dose.concentrate_ml,
            "diluted_volume_ml": dose.diluted_volume_ml,
            "vial_plan": "; ".join(f"{size} x {count}" for size, count in dose.vial_plan) or None,
            "recorded_at": dose.recorded_at,
            "protocol_version": _version(dose),
        }
        for dose in doses
    ]


def expected_kits(trial, *, unblinded: bool) -> list[dict]:
    kits = sorted(
        Kit.objects.filter(site__trial=trial, participant__isnull=False),
        key=lambda k: (_key(k.participant_id), k.visit.sequence, k.kit_type, k.kit_number),
    )
    rows = []
    for kit in kits:
        row = {
            "subject_key": _key(kit.participant_id),
            "visit_code": kit.visit.code,
            "kit_number": kit.kit_number,
            "kit_type": kit.kit_type,
            "packaging_lot": kit.packaging_lot,
            "label_expiry": kit.label_expiry,
            "kit_status": kit.status,
            "assigned_at": kit.assigned_at,
            "dispensed_at": kit.dispensed_at,
            "returned_on": kit.returned_on,
            "tablets_returned": kit.tablets_returned,
            "status_note": _text(kit.status_note),
        }
        if unblinded:
            row["content"] = kit.content
        rows.append(row)
    return rows


def expected_deviations(trial) -> list[dict]:
    deviations = sorted(
        ProtocolDeviation.objects.filter(site__trial=trial),
        key=lambda d: (_key(d.participant_id), d.detected_at, d.pk),
    )
    rows, counts = [], {}
    for deviation in deviations:
        key = _key(deviation.participant_id)
        counts[key] = counts.get(key, 0) + 1
        rows.append(
            {
                "subject_key": key,
                "deviation": counts[key],
                "kind": deviation.kind,
                "description": deviation.description,
                "detected_at": deviation.detected_at,
                "protocol_version": _version(deviation),
            }
        )
    return rows


def expected_adverse_events(trial) -> list[dict]:
    events = sorted(
        AdverseEvent.objects.filter(site__trial=trial), key=lambda e: (_key(e.participant_id), e.sequence, e.pk)
    )
    rows, episodes = [], {}
    for event in events:
        key = _key(event.participant_id)
        episodes[(key, event.sequence)] = episodes.get((key, event.sequence), 0) + 1
        row = {
            "subject_key": key,
            "ae_number": event.sequence,
            "episode": episodes[(key, event.sequence)],
            "grade_change": event.follows_id is not None,
            "term": event.term,
            "meddra_code": TERMS[event.term].meddra_code,
            "term_text": _text(event.term_text),
            "grade": event.grade,
            "onset_date": event.onset_date,
            "resolution_date": event.resolution_date,
            "serious": event.serious,
        }
        row |= {f"ser_{criterion.value}": criterion.value in event.seriousness for criterion in Seriousness}
        row |= {
            "awareness_at": event.awareness_at,
            "relation_infusion": _text(event.relation_infusion),
            "relation_tablets": _text(event.relation_tablets),
            "action_infusion": _text(event.action_infusion),
            "action_tablets": _text(event.action_tablets),
            "outcome": event.outcome,
            "special_interest": event.special_interest,
            "recorded_at": event.recorded_at,
            "protocol_version": _version(event),
        }
        rows.append(row)
    return rows


def expected_deaths(trial) -> list[dict]:
    return [
        {
            "subject_key": _key(death.participant_id),
            "death_date": death.died_on,
            "cause": death.cause,
            "ae_number": death.adverse_event.sequence,
            "recorded_at": death.recorded_at,
            "protocol_version": _version(death),
        }
        for death in sorted(Death.objects.filter(site__trial=trial), key=lambda d: _key(d.participant_id))
    ]


def expected_sae_reports(trial) -> list[dict]:
    reports = sorted(
        SaeReport.objects.filter(site__trial=trial),
        key=lambda r: (_key(r.participant_id), r.adverse_event.sequence, r.version),
    )
    return [
        {
            "subject_key": _key(report.participant_id),
            "ae_number": report.adverse_event.sequence,
            "version": report.version,
            "narrative": _text(report.narrative),
            "complete": report.complete,
            "signed_by": report.signature.signer.username if report.signature else None,
            "signed_at": report.signature.signed_at if report.signature else None,
            "sign_meaning": report.signature.meaning if report.signature else None,
            "written_at": report.written_at,
            "protocol_version": _version(report),
        }
        for report in reports
    ]


def expected_repeat_labs(trial) -> list[dict]:
    repeats = sorted(
        RepeatLabs.objects.filter(site__trial=trial),
        key=lambda r: (_key(r.participant_id), r.visit.sequence, r.recorded_at, r.pk),
    )
    rows, counts = [], {}
    for repeat in repeats:
        key = (_key(repeat.participant_id), repeat.visit.code)
        counts[key] = counts.get(key, 0) + 1
        rows.append(
            {
                "subject_key": key[0],
                "visit_code": key[1],
                "repeat": counts[key],
                "measured_on": repeat.measured_on,
                "neutrophils": repeat.neutrophils,
                "platelets": repeat.platelets,
                "alt_uln": repeat.alt_uln,
                "ast_uln": repeat.ast_uln,
                "decision": repeat.decision,
                "decision_reasons": "; ".join(repeat.reasons) or None,
                "recorded_at": repeat.recorded_at,
                "protocol_version": _version(repeat),
            }
        )
    return rows


def expected_susar_assessments(trial, *, unblinded: bool) -> list[dict]:
    assessments = sorted(
        SusarAssessment.objects.filter(site__trial=trial),
        key=lambda a: (_key(a.participant_id), a.adverse_event.sequence),
    )
    return [
        {
            "subject_key": _key(assessment.participant_id),
            "ae_number": assessment.adverse_event.sequence,
            "related": assessment.related,
            "expectedness": assessment.expectedness,
            "reference": assessment.reference,
            "assessed_at": assessment.assessed_at,
            "deadline": assessment.deadline,
            # Unblinded only: the expedited report goes only for a participant on active product.
            **(
                {"reported_at": assessment.reported_at, "report_reference": _text(assessment.report_reference)}
                if unblinded
                else {}
            ),
        }
        for assessment in assessments
    ]


def _typed(item, value):
    if value is None:
        return None
    return {
        "integer": int,
        "decimal": lambda v: Decimal(str(v)),
        "date": datetime.date.fromisoformat,
        "yes_no": bool,
    }.get(item.type, str)(value)


def expected_form(trial, form, *, unblinded: bool) -> list[dict]:
    items = [item for item in form.items if unblinded or not item.unblinded_only]
    records = FormRecord.objects.filter(site__trial=trial, form_code=form.code)

    def order(record):
        if form.kind == "log":
            return (_key(record.participant_id), record.sequence, record.pk)
        visit = Visit.objects.get(participant_id=record.participant_id, code=record.visit_code)
        return (_key(record.participant_id), visit.sequence, record.visit_code, record.pk)

    rows = []
    for record in sorted(records, key=order):
        stored = {row.item_code: row for row in record.values.all()}
        row = {"subject_key": _key(record.participant_id)}
        row["visit_code" if form.kind == "visit" else "entry"] = (
            record.visit_code if form.kind == "visit" else record.sequence
        )
        row |= {"form_status": record.status, "protocol_version": _version(record)}
        for item in items:
            value = stored.get(item.code)
            raw = None if value is None else (value.unblinded_value if item.unblinded_only else value.value)
            row[item.code.lower()] = _typed(item, raw)
        rows.append(row)
    return rows


def expected_randomization(trial) -> list[dict]:
    slots = sorted(
        Slot.objects.filter(site__trial=trial, participant__isnull=False), key=lambda s: _key(s.participant_id)
    )
    return [
        {
            "subject_key": _key(slot.participant_id),
            "arm": slot.arm.code,
            "stratum": slot.stratum,
            "block": slot.block,
            "block_size": slot.block_size,
            "slot_sequence": slot.sequence,
            "list_version": slot.randomization_list.version,
            "allocated_at": slot.allocated_at,
            "protocol_version": _version(slot),
        }
        for slot in slots
    ]


def expected_unblinding(trial) -> list[dict]:
    rows = sorted(
        Unblinding.objects.filter(site__trial=trial), key=lambda u: (_key(u.participant_id), u.unblinded_at, u.pk)
    )
    return [
        {
            "subject_key": _key(row.participant_id),
            "unblinding": number,
            "unblinded_by": row.unblinded_by.username,
            "unblinded_at": row.unblinded_at,
            "method": row.method,
            "sheet_number": row.sheet_number,
            "opened_at": row.opened_at,
            "reason": row.reason,
            "sponsor_notified_at": row.sponsor_notified_at,
        }
        for number, row in enumerate(rows, start=1)
    ]


def expected(trial, *, unblinded: bool) -> dict[str, list[dict]]:
    protocol = trial.protocol
    datasets = {
        "subjects": expected_subjects(trial),
        "eligibility": expected_eligibility(trial),
        "visits": expected_visits(trial),
        "doses": expected_doses(trial),
        "deviations": expected_deviations(trial),
        "adverse_events": expected_adverse_events(trial),
        "deaths": expected_deaths(trial),
        "sae_reports": expected_sae_reports(trial),
        "repeat_labs": expected_repeat_labs(trial),
        "susar_assessments": expected_susar_assessments(trial, unblinded=unblinded),
    }
    if unblinded or len({frozenset(arm.kit_contents) for arm in protocol.arms}) == 1:
        datasets["kits"] = expected_kits(trial, unblinded=unblinded)
    for form in protocol.forms:
        datasets[form.code.lower() if form.code.lower() not in datasets else f"crf_{form.code.lower()}"] = (
            expected_form(trial, form, unblinded=unblinded)
        )
    if unblinded:
        datasets["randomization"] = expected_randomization(trial)
        datasets["unblinding"] = expected_unblinding(trial)
    return datasets


# --- The tests ---------------------------------------------------------------------------------


def _statistician(journey, trial):
    site = trial.sites.order_by("code").first()
    return journey["cast"][(site.code, Role.STATISTICIAN)]


def test_every_value_of_every_dataset_is_the_databases_blinded_and_unblinded(trials):
    with time_machine.travel(NOW, tick=False):
        built = {trial.pk: build_trial(trial) for trial in trials}
    for trial in trials:
        user = _statistician(built[trial.pk], trial)
        for unblinded in (False, True):
            package = build_package(scope_of(trial, unblinded=unblinded, user=user), export_id=7)
            wanted = expected(trial, unblinded=unblinded)
            names = [dataset.name for dataset in package.datasets]
            assert set(wanted) <= set(names), (trial.nct_id, unblinded, set(wanted) - set(names))
            for name, rows in wanted.items():
                got = table(package.dataset(name))
                assert got == rows, (trial.nct_id, unblinded, name)
            # The journey and its extras leave something in every dataset the trial can have.
            for name in (
                "subjects",
                "eligibility",
                "visits",
                "deviations",
                "adverse_events",
                "deaths",
                "sae_reports",
                "susar_assessments",
            ):
                assert wanted[name], (trial.nct_id, name)
            for form in trial.protocol.forms:
                assert table(package.dataset(form.code.lower())), (trial.nct_id, form.code)
            if unblinded:
                assert wanted["randomization"] and wanted["unblinding"]
            if trial.protocol.kit_types and "kits" in wanted:
                assert any(row["returned_on"] for row in wanted["kits"])
            assert any(row["grade_change"] for row in wanted["adverse_events"])
            statuses = {row["status"] for row in wanted["subjects"]}
            assert {"randomized", "enrolled", "withdrawn", "died", None} <= statuses, statuses
            if trial.protocol.dosing.infusion is not None:
                assert wanted["doses"] and wanted["repeat_labs"]
            manifest = package.manifest
            assert (manifest.trial, manifest.export_id, manifest.blinded) == (trial.nct_id, 7, not unblinded)
            assert manifest.site_codes == tuple(site.code for site in trial.sites.order_by("code"))
            assert manifest.protocol_version == trial.current_version.version
            # Every coded value is in its code list.
            for dataset in package.datasets:
                for variable in dataset.variables:
                    if variable.code_list is None:
                        continue
                    codes = {entry[0] for entry in package.code_lists[variable.code_list].entries}
                    index = dataset.variables.index(variable)
                    values = {row[index] for row in dataset.rows} - {None}
                    assert values <= codes, (trial.nct_id, dataset.name, variable.name, values - codes)


def _blinded_leaks(package, trial) -> list[str]:
    arm_words = {arm.code for arm in trial.protocol.arms} | {arm.name for arm in trial.protocol.arms}
    leaks = []
    for dataset in package.datasets:
        if dataset.name in ("randomization", "unblinding"):
            leaks.append(dataset.name)
        for variable in dataset.variables:
            if variable.name in ("arm", "stratum", "block", "block_size", "slot_sequence", "content", "allocated_at"):
                leaks.append(f"{dataset.name}.{variable.name}")
        for row in dataset.rows:
            leaks += [f"{dataset.name}: {value}" for value in row if isinstance(value, str) and value in arm_words]
    leaks += [name for name in package.code_lists if name in ("arm", "kit_content")]
    return leaks


def _frozen(package) -> dict:
    """A package as plain data; kit numbers dropped (random by design, drawn anew each build)."""
    frozen = {}
    for dataset in package.datasets:
        names = [variable.name for variable in dataset.variables]
        rows = [
            tuple(value for name, value in zip(names, row, strict=True) if name != "kit_number") for row in dataset.rows
        ]
        frozen[dataset.name] = (dataset.label, dataset.label_zh, names, dataset.keys, rows)
    return frozen


class _Rollback(Exception):
    pass


def _blinded_package_with_seed(trial, seed: str, monkeypatch) -> tuple[dict, dict]:
    """Build the trial with the randomization list drawn from `seed` (so other arms), then roll
    it all back. Returns the blinded package as data and each subject key's arm."""
    from randomization import services as randomization_services

    def list_generate(**arguments):
        return randomization_services.list_generate(**{**arguments, "seed": seed})

    monkeypatch.setattr(
        journeys,
        "randomization",
        types.SimpleNamespace(list_generate=list_generate, list_lock=randomization_services.list_lock),
    )
    result = {}
    try:
        with transaction.atomic(), time_machine.travel(NOW, tick=False):
            journey = build_trial(trial)
            user = _statistician(journey, trial)
            package = build_package(scope_of(trial, unblinded=False, user=user))
            result["package"] = _frozen(package)
            result["leaks"] = _blinded_leaks(package, trial)
            result["arms"] = dict(
                Slot.objects.filter(site__trial=trial, participant__isnull=False).values_list(
                    "participant__screening__subject_key", "arm__code"
                )
            )
            raise _Rollback
    except _Rollback:
        pass
    return result


def test_a_blinded_package_is_the_same_whichever_arm_each_participant_got(trials, monkeypatch):
    for trial in trials:
        first = _blinded_package_with_seed(trial, "arms-one", monkeypatch)
        second = _blinded_package_with_seed(trial, "arms-two", monkeypatch)
        assert first["arms"].keys() == second["arms"].keys()
        assert first["arms"] != second["arms"], "the two seeds should allocate differently"
        assert first["leaks"] == [] and second["leaks"] == []
        assert first["package"] == second["package"], trial.nct_id


def test_names_are_machine_names_the_same_in_every_language(trials):
    with time_machine.travel(NOW, tick=False):
        built = {trial.pk: build_trial(trial) for trial in trials}
    for trial in trials:
        user = _statistician(built[trial.pk], trial)
        for unblinded in (False, True):
            shapes = []
            for language in ("zh-hans", "en"):
                with translation.override(language):
                    package = build_package(scope_of(trial, unblinded=unblinded, user=user))
                shapes.append(
                    (
                        [(d.name, d.label, d.label_zh, d.keys, [v for v in d.variables]) for d in package.datasets],
                        package.code_lists,
                    )
                )
                for dataset in package.datasets:
                    assert NAME.match(dataset.name)
                    assert [v.name for v in dataset.variables][:1] == ["subject_key"]
                    for variable in dataset.variables:
                        assert NAME.match(variable.name) and len(variable.name) <= 32
                        # The label is the English one whatever the reader's language.
                        assert variable.label and not CHINESE.search(variable.label), variable
                    for key in dataset.keys:
                        assert key in [v.name for v in dataset.variables]
                for name in package.code_lists:
                    assert NAME.match(name)
            assert shapes[0] == shapes[1], (trial.nct_id, unblinded)
            # Chinese labels come from the protocol and the translations: every dataset and
            # variable has one (both protocols label every item in Chinese), and every code
            # but the bare codes of kit types and factor levels.
            assert [d.name for d in package.datasets if not d.label_zh] == []
            assert [f"{d.name}.{v.name}" for d in package.datasets for v in d.variables if not v.label_zh] == []
            untranslated = [
                f"{name}:{code}"
                for name, code_list in package.code_lists.items()
                if name != "kit_type" and not name.startswith("factor_")
                for code, _label, chinese in code_list.entries
                if not chinese
            ]
            assert untranslated == []


def _queries(trial, user, *, unblinded: bool) -> int:
    with CaptureQueriesContext(connection) as queries:
        package = build_package(scope_of(trial, unblinded=unblinded, user=user))
        for dataset in package.datasets:
            for _row in dataset.rows:
                pass
    return len(queries.captured_queries)


def _queries_with(trial, participants_per_site: int) -> dict[bool, int]:
    """Build the trial with this many participants per site, count the queries of building and
    reading its packages, and roll it all back."""
    counted = {}
    try:
        with transaction.atomic(), time_machine.travel(NOW, tick=False):
            journey = build_trial(trial, participants_per_site=participants_per_site)
            user = _statistician(journey, trial)
            counted["participants"] = Participant.objects.filter(site__trial=trial).count()
            for unblinded in (False, True):
                counted[unblinded] = _queries(trial, user, unblinded=unblinded)
            raise _Rollback
    except _Rollback:
        pass
    return counted


def test_the_number_of_queries_does_not_grow_with_the_participants(trials):
    for trial in trials:
        few = _queries_with(trial, 3)
        many = _queries_with(trial, 9)
        assert many["participants"] > 2 * few["participants"]
        assert (many[False], many[True]) == (few[False], few[True]), trial.nct_id
        # One query per dataset and a few to set up, whatever the number of participants.
        assert few[True] < 40


def _toml(value) -> str:
    """A value as TOML (every table inline, which TOML allows at the top level too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(entry) for entry in value) + "]"
    return "{" + ", ".join(f"{json.dumps(key)} = {_toml(entry)}" for key, entry in value.items()) + "}"


def _write_protocol(document: dict, path) -> None:
    path.write_text("\n".join(f"{json.dumps(key)} = {_toml(value)}" for key, value in document.items()) + "\n")


SECRET = "known only to the unblinded"


@pytest.mark.parametrize("source", journeys.PROTOCOLS, ids=lambda path: path.stem)
def test_unblinded_only_items_stay_out_of_a_blinded_package_and_amended_away_items_stay_in(source, tmp_path, db):
    """Each protocol, copied as a trial of its own whose first visit form has an item only the
    unblinded see and an item a later amendment drops."""
    from crf.services import form_save, sees_unblinded
    from tests import dosing_factories

    document = tomllib.loads(source.read_text())
    # A registry number of its own, so it loads beside nothing else.
    document["trial"]["nct_id"] = f"NCT{(int(document['trial']['nct_id'][3:]) + 50_000_000) % 10**8:08d}"
    form = next(form for form in document["forms"] if form["kind"] == "visit")
    form["items"] += [
        {"code": "Dropped_Later", "label": "Asked in version 1 only", "type": "integer"},
        {"code": "allocation_note", "label": "Allocation note", "type": "text", "unblinded_only": True},
    ]
    _write_protocol(document, tmp_path / "first.toml")
    with time_machine.travel(NOW, tick=False):
        trial = journeys.load_protocol(tmp_path / "first.toml")
        site = trial.sites.order_by("code").first()
        people = {role: factories.make_user(role, site, username=f"amend-{role}") for role in Role.values}
        unblinded_user = next(user for user in people.values() if sees_unblinded(user, site.pk, trial.protocol))
        participant = dosing_factories.randomized_participant(
            site, arm_code=trial.protocol.arms[0].code, by=people[Role.COORDINATOR], day0=TODAY
        )
        visit = next(
            v for v in participant.visits.order_by("sequence") if trial.protocol.form(form["code"]).carried_at(v.code)
        )
        values = journeys._fill(trial.protocol, trial.protocol.form(form["code"]), TODAY)
        values.pop("allocation_note")
        values["Dropped_Later"] = 41
        form_save(
            user=people[Role.COORDINATOR],
            participant=participant,
            form_code=form["code"],
            visit_code=visit.code,
            values=values,
        )
        form_save(
            user=unblinded_user,
            participant=participant,
            form_code=form["code"],
            visit_code=visit.code,
            values={"allocation_note": SECRET},
        )

        document["trial"]["protocol_version"] = "9.1"
        document["trial"]["effective_date"] = datetime.date(2026, 11, 19)
        form["items"] = [item for item in form["items"] if item["code"] != "Dropped_Later"]
        dropped_criterion = document["eligibility"]["criteria"].pop()
        _write_protocol(document, tmp_path / "amended.toml")
        trial = journeys.load_protocol(tmp_path / "amended.toml")
        assert trial.current_version.version == "9.1"
        assert trial.protocol.form(form["code"]).item("Dropped_Later") is None

        packages = {
            unblinded: build_package(scope_of(trial, unblinded=unblinded, user=unblinded_user))
            for unblinded in (False, True)
        }
    name = form["code"].lower()
    blinded_rows = table(packages[False].dataset(name))
    unblinded_rows = table(packages[True].dataset(name))
    assert "allocation_note" not in blinded_rows[0]
    assert all(SECRET not in map(str, row) for dataset in packages[False].datasets for row in dataset.rows)
    assert unblinded_rows[0]["allocation_note"] == SECRET
    # The value captured under version 1 of an item version 9.1 dropped is still exported.
    assert blinded_rows[0]["dropped_later"] == unblinded_rows[0]["dropped_later"] == 41
    assert blinded_rows[0]["subject_key"] == participant.screening.subject_key
    # So is the answer to a criterion the amendment no longer asks, with its words.
    for package in packages.values():
        answers = {row["criterion"]: row for row in table(package.dataset("eligibility"))}
        assert answers[dropped_criterion["code"]]["criterion_kind"] == dropped_criterion["kind"]
        assert (dropped_criterion["code"], dropped_criterion["text"], dropped_criterion.get("text_zh")) in (
            package.code_lists["criterion"].entries
        )
