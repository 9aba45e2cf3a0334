"""Writes of visits, doses and kits. Every function is atomic and runs inside the caller's
`audit_context` (or opens one), so each change is attributed and reasoned in the audit trail."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import io
import logging
import re
import secrets
from decimal import Decimal

from django.contrib.postgres.expressions import ArraySubquery
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import Count, Min, OuterRef, QuerySet, Subquery
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crf.services import FormEntry, FormInvalid, form_save, forms_save
from crf.values import typed
from dosing import kitlist
from dosing.dose import check_weight, infusion_decision, infusion_dose, weight_change_flagged
from dosing.exceptions import (
    DoseInputInvalid,
    DosingValueRequired,
    IllegalKitTransition,
    KitListInvalid,
    KitReturnInvalid,
    LabelMismatch,
    NoKitAvailable,
    NotRandomized,
    OpenAdverseEventsNotConfirmed,
    OutOfWindowReasonRequired,
    RepeatLabsNotOpen,
    TreatmentStopped,
    VisitDateInvalid,
    VisitNotOpen,
)
from dosing.kit_types import is_tablet_kit, kit_types_given
from dosing.models import (
    Decision,
    DoseRecord,
    Kit,
    KitContent,
    KitList,
    KitStatus,
    RepeatLabs,
    Shipment,
)
from dosing.reminders.services import reminders_replan
from dosing.schedule import visits_end_for_withdrawal
from dosing.selectors import BLINDED_KIT_FIELDS, dose_input_items, dose_inputs_on_forms, kits_blinded
from enrollment.models import Participant, ParticipantStatus
from safety.open_events import grade_3_special_interest, open_events
from schedules.models import Visit, VisitKind, VisitStatus
from trialsite import access
from trialsite.access import Capability
from trialsite.allocation import allocated_arm
from trialsite.audit import audit_context
from trialsite.exceptions import Conflict, ReasonRequired, TrialRuleError
from trialsite.models import Site
from trialsite.text import clean_text, identifier, looks_like_formula

logger = logging.getLogger(__name__)


def visit_reschedule(*, visit: Visit, target_date: datetime.date, rescheduled_by, reason: str) -> Visit:
    """Move one scheduled visit to a new target date, keeping the width of its window. The dates
    are clinical values: a reason is required and recorded. The visit's reminders are planned
    again in this same transaction."""
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired()
    with audit_context(actor=rescheduled_by, reason=reason):
        visit = Visit.objects.select_for_update().get(pk=visit.pk)
        if visit.status != VisitStatus.SCHEDULED:
            raise VisitNotOpen(field="target_date")
        shift = target_date - visit.target_date
        visit.target_date = target_date
        visit.window_start += shift
        visit.window_end += shift
        visit.save(update_fields=["target_date", "window_start", "window_end"])
        reminders_replan(visit=visit, reason=f"visit rescheduled: {reason}")
        return visit


# --- Recording a visit -----------------------------------------------------------------------


@dataclasses.dataclass
class VisitOutcome:
    visit: Visit
    dose: DoseRecord | None = None
    kits: list[Kit] = dataclasses.field(default_factory=list)
    # True when a needed kit could not be assigned: the blinded user reads NoKitAvailable's message.
    no_kit: bool = False


def _site_today(site) -> datetime.date:
    return timezone.localdate(timezone=site.zone)


def treatment_stopped(participant: Participant) -> bool:
    return DoseRecord.objects.filter(participant=participant, decision=Decision.STOP).exists()


def _visit_locked_for_recording(pk: int) -> Visit:
    """The visit row locked (only it: the site row is the one randomization updates, its number
    counter), with its participant, site and trial, and what kit assignment reads of the plan
    and of the visit's kits (`_visits_with_kit_facts`), in one statement."""
    return _visits_with_kit_facts(
        Visit.objects.select_for_update(of=("self",)).select_related("participant", "site__trial")
    ).get(pk=pk)


def visit_record(*, visit: Visit, recorded_by, **entered) -> VisitOutcome:
    """Record a visit (`_record`'s arguments): at a dosing visit, compute the dose, apply the lab
    safety gates and assign kits."""
    return _record(pk=visit.pk, recorded_by=recorded_by, **entered)


def visit_record_reachable(*, pk: int, recorded_by, **entered) -> VisitOutcome:
    """visit_record of the visit `pk` as `recorded_by` reaches it with the RECORD_VISITS
    capability: Http404 alike for a visit that does not exist and for one at a site where they
    may not record visits. The access check is a condition of the participant's locked read,
    not a read of its own: the API's record request sends one statement fewer (issue 20)."""
    site_ids = access.site_ids_with(recorded_by, Capability.RECORD_VISITS)
    return _record(pk=pk, recorded_by=recorded_by, site_ids=site_ids, **entered)


def _record(
    *,
    pk: int,
    actual_date: datetime.date,
    recorded_by,
    weight_kg: Decimal | None = None,
    neutrophils: int | None = None,
    platelets: int | None = None,
    alt_uln: Decimal | None = None,
    ast_uln: Decimal | None = None,
    out_of_window_reason: str = "",
    confirm_open_adverse_events: bool = False,
    site_ids: set[int] | None = None,
) -> VisitOutcome:
    """Record the visit `pk`. At a dosing visit: compute the dose, apply the lab safety gates and
    assign kits. The visit and dose stay recorded when no kit is available (`outcome.no_kit`).
    Given `site_ids`, a visit at none of them is not found (Http404).

    A dose that would be given while the participant has an ongoing grade 3+ adverse event of
    special interest needs `confirm_open_adverse_events` (the investigator reviewed them); the
    confirmation is the audit reason of the visit and dose records."""
    reason = (out_of_window_reason or "").strip()
    with audit_context(actor=recorded_by, reason=reason or "visit recorded"):
        # The participant before the visit, the order withdrawal takes them in: the forms the dose
        # reads are saved under the participant's lock (crf.forms_save), so the two cannot deadlock.
        visit_of = Visit.objects.filter(pk=pk)
        if site_ids is not None:
            visit_of = visit_of.filter(site_id__in=site_ids)
        locked = Participant.objects.select_for_update(of=("self",)).filter(
            pk=Subquery(visit_of.values("participant_id"))
        )
        if locked.values_list("pk", flat=True).first() is None and site_ids is not None:
            raise Http404("Not found")
        visit = _visit_locked_for_recording(pk)
        participant = visit.participant
        # The participant's site is the visit's: the forms saved below read it without a query.
        participant.site = visit.site
        if visit.status not in (VisitStatus.SCHEDULED, VisitStatus.MISSED):
            raise VisitNotOpen()
        if participant.status != ParticipantStatus.RANDOMIZED:
            raise VisitNotOpen(_("Only a randomized participant still in the trial can have visits recorded."))
        if actual_date > _site_today(visit.site):
            raise VisitDateInvalid(_("The visit date cannot be in the future."))
        if (
            participant.randomized_at
            and actual_date < timezone.localtime(participant.randomized_at, visit.site.zone).date()
        ):
            raise VisitDateInvalid(_("The visit date cannot be before randomization."))
        outside = not (visit.window_start <= actual_date <= visit.window_end)
        if outside and not reason:
            raise OutOfWindowReasonRequired()
        visit.actual_date = actual_date
        visit.status = VisitStatus.COMPLETED
        visit.is_deviation = outside
        visit.out_of_window_reason = reason if outside else ""
        visit.recorded_by = recorded_by
        visit.recorded_at = timezone.now()
        outcome = VisitOutcome(visit=visit)
        rules = visit.site.trial.protocol.dosing
        review = grade_3_special_interest(open_events(participant)) if visit.is_dosing else []
        # The participant's earlier doses in one read, in visit order: whether treatment stopped,
        # the baseline weight, whether a dose was ever given (under the participant's lock).
        previous = (
            list(
                DoseRecord.objects.filter(participant=participant)
                .order_by("visit__sequence")
                .values_list("decision", "weight_kg")
            )
            if visit.is_dosing
            else []
        )
        if any(decision == Decision.STOP for decision, _weight in previous):
            raise TreatmentStopped()
        if visit.is_dosing and rules.infusion is None:
            # No infusion in this trial: no dose to compute and no lab gate; the visit gives the
            # kits the arm takes (tablets), or none (an open-label observation arm). The review is
            # asked of every arm alike, so asking it says nothing of the arm.
            with _dosing_goes_ahead(
                events=review, confirmed=confirm_open_adverse_events, recorded_by=recorded_by, reason=reason
            ):
                visit.save()
            _kits_at_recorded_visit(outcome, decision=Decision.GIVE, assigned_by=recorded_by)
        elif visit.is_dosing:
            given = {
                "weight_kg": weight_kg,
                "neutrophils": neutrophils,
                "platelets": platelets,
                "alt_uln": alt_uln,
                "ast_uln": ast_uln,
            }
            on_forms = dose_inputs_on_forms(visit)
            missing = [name for name, value in given.items() if value is None and on_forms.get(name) is None]
            if missing:
                raise DosingValueRequired(field=missing[0])
            if on_forms:
                if weight_kg is not None:
                    # The protocol's dosing bounds first, so an impossible weight is refused as before.
                    check_weight(weight_kg=weight_kg, rules=rules.infusion)
                # The dose reads its inputs from the forms: what was just entered, or what a
                # coordinator entered on them before.
                read = _dose_inputs_save(visit=visit, recorded_by=recorded_by, given=given, on_forms=on_forms)
                given.update({name: read[name] for name in on_forms})
                weight_kg, neutrophils, platelets, alt_uln, ast_uln = given.values()
            dose = infusion_dose(weight_kg=weight_kg, rules=rules.infusion)
            first_dose = not any(decision == Decision.GIVE for decision, _weight in previous)
            decision = infusion_decision(
                first_dose=first_dose,
                neutrophils=neutrophils,
                platelets=platelets,
                alt_uln=alt_uln,
                ast_uln=ast_uln,
                rules=rules.safety,
            )
            baseline_kg = previous[0][1] if previous else Decimal(weight_kg)
            # A held or stopped dose needs no review: nothing is given.
            with _dosing_goes_ahead(
                events=review if decision.decision == Decision.GIVE else [],
                confirmed=confirm_open_adverse_events,
                recorded_by=recorded_by,
                reason=reason,
            ):
                visit.weight_kg = weight_kg
                visit.save()
                outcome.dose = DoseRecord.objects.create(
                    visit=visit,
                    participant=participant,
                    site=visit.site,
                    first_dose=first_dose,
                    neutrophils=neutrophils,
                    platelets=platelets,
                    alt_uln=alt_uln,
                    ast_uln=ast_uln,
                    decision=decision.decision,
                    reasons=decision.reasons,
                    weight_kg=weight_kg,
                    baseline_weight_kg=baseline_kg,
                    weight_change_flagged=weight_change_flagged(
                        weight_kg=weight_kg, baseline_kg=baseline_kg, rules=rules.infusion
                    ),
                    dose_mg=dose.dose_mg,
                    concentrate_ml=dose.concentrate_ml,
                    diluted_volume_ml=dose.diluted_volume_ml,
                    vial_plan=[list(vials) for vials in dose.vial_plan],
                    recorded_by=recorded_by,
                    protocol_version_id=visit.site.trial.current_version_id,
                )
            if decision.decision == Decision.STOP:
                # Treatment ends: the remaining dosing visits will not happen; end of treatment and follow-up stay.
                Visit.objects.filter(
                    participant=participant, kind=VisitKind.DOSING, status=VisitStatus.SCHEDULED
                ).update(status=VisitStatus.CANCELLED)
            else:
                _kits_at_recorded_visit(outcome, decision=decision.decision, assigned_by=recorded_by)
        else:
            if weight_kg is not None and rules.infusion is not None:
                visit.weight_kg = check_weight(weight_kg=weight_kg, rules=rules.infusion)
            visit.save()
    return outcome


# The audit reason of a visit and dose given after the coordinator confirmed the investigator's
# review of the open grade 3+ adverse events of special interest (English, like every audit reason).
OPEN_EVENTS_CONFIRMED = (
    "open grade 3+ adverse event(s) of special interest reviewed with the investigator, dosing goes ahead"
)


def _dosing_goes_ahead(*, events, confirmed: bool, recorded_by, reason: str):
    """The writes of a dose given: refused without the confirmation when `events` (ongoing
    grade 3+ events of special interest) exist, else written under a reason naming them."""
    if not events:
        return contextlib.nullcontext()
    if not confirmed:
        raise OpenAdverseEventsNotConfirmed(events)
    named = "; ".join(f"AE {event.sequence} {event.term} grade {event.grade}" for event in events)
    return audit_context(actor=recorded_by, reason=f"{reason or 'visit recorded'}; {OPEN_EVENTS_CONFIRMED}: {named}")


# The reason recorded with a form value changed by a different one typed at the dosing visit (a
# saved value needs a reason to change): the visit's own entry is the latest measurement.
DOSING_VISIT_ENTRY = "entered at the dosing visit"


def _dose_inputs_save(*, visit: Visit, recorded_by, given: dict, on_forms: dict) -> dict:
    """Save the weight and labs given at the dosing visit into the forms the protocol has the dose
    read them from (crf.forms_save, every form at once: checked and audited item by item). A
    value already on the form is left as it is when equal, and replaced when different, with the
    reason DOSING_VISIT_ENTRY. A value the form refuses is refused at the visit's field. Returns
    the inputs the forms then hold, as `dose_inputs_on_forms` would read them, without reading
    them again."""
    protocol = visit.site.trial.protocol
    items = dose_input_items(protocol)
    held = dict(on_forms)
    fields = {}
    by_form: dict[str, dict] = {}
    for name, (form_code, item_code) in items.items():
        value = given.get(name)
        if value is None or value == on_forms.get(name):
            continue
        by_form.setdefault(form_code, {})[item_code] = value
        fields[(form_code, item_code)] = name
    if not by_form:
        return held
    try:
        saved = forms_save(
            user=recorded_by,
            participant=visit.participant,
            entries=[
                FormEntry(form_code=form_code, values=values, visit_code=visit.code)
                for form_code, values in by_form.items()
            ],
            reason=f"{DOSING_VISIT_ENTRY} {visit.code}",
            participant_locked=True,
        )
    except FormInvalid as error:
        item_code, messages = next(iter(error.errors.items()))
        raise DoseInputInvalid(messages[0], field=fields.get((error.form_code, item_code))) from None
    for form_code, result in zip(by_form, saved, strict=True):
        for name, (input_form, item_code) in items.items():
            if input_form == form_code and item_code in result.values:
                held[name] = typed(protocol.form(form_code).item(item_code), result.values[item_code])
    return held


def _stop_treatment(participant: Participant) -> None:
    # Treatment ends: the remaining dosing visits will not happen; end of treatment and follow-up stay.
    Visit.objects.filter(participant=participant, kind=VisitKind.DOSING, status=VisitStatus.SCHEDULED).update(
        status=VisitStatus.CANCELLED
    )
    # A kit assigned but not yet dispensed (the tablets of a held dose that repeat labs then
    # stopped) goes back into the site's stock: nothing more is given.
    kits_release_assigned(participant_id=participant.pk)


def kits_release_assigned(*, participant_id: int) -> None:
    """Every kit assigned to the participant and not yet dispensed goes back into the site's
    stock. Runs inside the caller's transaction and audit context (treatment stopped, death)."""
    for kit in Kit.objects.select_for_update().filter(participant_id=participant_id, status=S.ASSIGNED):
        kit_transition(kit=kit, to=S.AT_SITE, participant=None, visit=None, assigned_at=None, assigned_by=None)


def visit_repeat_labs(
    *,
    visit: Visit,
    recorded_by,
    measured_on: datetime.date,
    neutrophils: int,
    platelets: int,
    alt_uln: Decimal,
    ast_uln: Decimal,
    confirm_open_adverse_events: bool = False,
) -> VisitOutcome:
    """Labs repeated after a held infusion, on a day from the visit to the end of its window. The
    decision is taken again from these, the latest labs, with the visit's own gates (first dose
    or later): labs that recovered turn the hold into a dose and the infusion kit is assigned
    (kits_assign); labs still in the hold range keep the hold; labs in the stop range stop
    treatment. Each repeat is kept (RepeatLabs), and the audit trail shows the decision change.
    When the protocol names a labs form (`dosing.safety.labs_form`), the repeated labs replace
    that visit's form values (crf.form_save, reason "repeat labs on <date>") and the decision is
    taken from what the form then holds, as visit_record reads it. Labs that turn the hold into a
    dose need `confirm_open_adverse_events` as visit_record does."""
    with audit_context(actor=recorded_by, reason="repeat labs after a held infusion"):
        # The participant before the visit, as visit_record takes them: form_save locks the
        # participant, so taking the visit first could deadlock with a visit being recorded.
        Participant.objects.select_for_update(of=("self",)).filter(pk=visit.participant_id).first()
        visit = (
            Visit.objects.select_for_update(of=("self",)).select_related("participant", "site__trial").get(pk=visit.pk)
        )
        participant = visit.participant
        dose = DoseRecord.objects.select_for_update().filter(visit=visit).first()
        if (
            not visit.is_dosing
            or visit.status != VisitStatus.COMPLETED
            or dose is None
            or dose.decision != Decision.HOLD
        ):
            raise RepeatLabsNotOpen()
        if participant.status != ParticipantStatus.RANDOMIZED:
            raise VisitNotOpen(_("Only a randomized participant still in the trial can have visits recorded."))
        if measured_on > _site_today(visit.site):
            raise VisitDateInvalid(_("The date of the repeat labs cannot be in the future."), field="measured_on")
        if measured_on < visit.actual_date:
            raise VisitDateInvalid(_("Repeat labs cannot be dated before the visit."), field="measured_on")
        if measured_on > visit.window_end:
            raise VisitDateInvalid(
                _("The visit window closed on %(date)s: repeat labs after it do not change this visit's dose.")
                % {"date": visit.window_end.isoformat()},
                field="measured_on",
            )
        labs = {"neutrophils": neutrophils, "platelets": platelets, "alt_uln": alt_uln, "ast_uln": ast_uln}
        labs_form = visit.site.trial.protocol.dosing.safety.labs_form
        if labs_form is not None:
            labs = _repeat_labs_save(visit=visit, recorded_by=recorded_by, measured_on=measured_on, labs=labs)
        neutrophils, platelets, alt_uln, ast_uln = labs.values()
        decision = infusion_decision(
            first_dose=dose.first_dose,
            neutrophils=neutrophils,
            platelets=platelets,
            alt_uln=alt_uln,
            ast_uln=ast_uln,
            rules=visit.site.trial.protocol.dosing.safety,
        )
        # The hold turned into a dose: the same review as at the visit.
        review = grade_3_special_interest(open_events(participant)) if decision.decision == Decision.GIVE else []
        with _dosing_goes_ahead(
            events=review,
            confirmed=confirm_open_adverse_events,
            recorded_by=recorded_by,
            reason="repeat labs after a held infusion",
        ):
            RepeatLabs.objects.create(
                visit=visit,
                participant=participant,
                site=visit.site,
                measured_on=measured_on,
                neutrophils=neutrophils,
                platelets=platelets,
                alt_uln=alt_uln,
                ast_uln=ast_uln,
                decision=decision.decision,
                reasons=decision.reasons,
                recorded_by=recorded_by,
                protocol_version_id=visit.site.trial.current_version_id,
            )
            dose.decision = decision.decision
            dose.reasons = decision.reasons
            dose.save(update_fields=["decision", "reasons"])
        outcome = VisitOutcome(visit=visit, dose=dose, kits=list(kits_blinded(visit.kits.all())))
        if decision.decision == Decision.STOP:
            _stop_treatment(participant)
        elif decision.decision == Decision.GIVE:
            try:
                outcome.kits = kits_assign(visit=visit, assigned_by=recorded_by)
            except NoKitAvailable:
                outcome.no_kit = True
                outcome.kits = list(kits_blinded(visit.kits.all()))
    return outcome


def _repeat_labs_save(*, visit: Visit, recorded_by, measured_on: datetime.date, labs: dict) -> dict:
    """Save repeated labs on the visit's labs form (checked and audited item by item; a changed
    value carries the reason "repeat labs on <date>") and return the labs the form then holds,
    by visit_record's names. A value the form refuses is refused at the repeat's field."""
    labs_form = visit.site.trial.protocol.dosing.safety.labs_form
    try:
        form_save(
            user=recorded_by,
            values=labs,
            reason=f"repeat labs on {measured_on.isoformat()}",
            participant=visit.participant,
            form_code=labs_form,
            visit_code=visit.code,
            participant_locked=True,
        )
    except FormInvalid as error:
        item_code, messages = next(iter(error.errors.items()))
        raise DoseInputInvalid(messages[0], field=item_code if item_code in labs else None) from None
    read = dose_inputs_on_forms(visit)
    return {name: read[name] for name in labs}


def visits_mark_missed(*, today: datetime.date | None = None) -> int:
    """Scheduled visits whose window closed (in the site's zone) with no visit recorded become
    missed. A withdrawn participant's visits are not "missed": any still open (withdrawn before
    visits were closed at withdrawal) end as "Not done (withdrawn)". Idempotent: a second run
    finds nothing left to mark."""
    marked = 0
    for site in Site.objects.all():
        local_today = today or _site_today(site)
        with audit_context(reason="visit window closed without a visit recorded"):
            marked += Visit.objects.filter(
                site=site,
                status=VisitStatus.SCHEDULED,
                window_end__lt=local_today,
                participant__status=ParticipantStatus.RANDOMIZED,
            ).update(status=VisitStatus.MISSED)
    with audit_context(reason="participant withdrew: the visit will not happen"):
        marked += visits_end_for_withdrawal()
    return marked


# --- Kits: one transition function for every status change -------------------------------------

S = KitStatus
# Kit choice must not be predictable from anything a blinded user sees: the OS CSPRNG.
_random = secrets.SystemRandom()
KIT_TRANSITIONS: dict[str, frozenset[str]] = {
    S.IN_DEPOT: frozenset({S.SHIPPED, S.QUARANTINED, S.DAMAGED, S.EXPIRED}),
    S.SHIPPED: frozenset({S.AT_SITE, S.QUARANTINED, S.DAMAGED, S.EXPIRED}),
    S.AT_SITE: frozenset({S.ASSIGNED, S.QUARANTINED, S.DAMAGED, S.EXPIRED}),
    # Back to at_site: the assignment is undone (its visit's kit is replaced).
    S.ASSIGNED: frozenset({S.DISPENSED, S.AT_SITE, S.QUARANTINED, S.DAMAGED, S.EXPIRED}),
    S.DISPENSED: frozenset({S.RETURNED}),
    S.RETURNED: frozenset(),
    # Released back where it was stored (site, or the depot when it has no site), or destroyed.
    S.QUARANTINED: frozenset({S.AT_SITE, S.IN_DEPOT, S.DAMAGED}),
    S.DAMAGED: frozenset(),
    S.EXPIRED: frozenset(),
}


def kit_transition(*, kit: Kit, to: str, **changes) -> Kit:
    """Move a locked kit to status `to`, with the other column changes of that step. Must run in
    an audit context (the caller's), which attributes the change; refuses an illegal step."""
    if to not in KIT_TRANSITIONS.get(kit.status, frozenset()):
        raise IllegalKitTransition(
            _("Kit %(number)s cannot go from %(old)s to %(new)s.")
            % {"number": kit.kit_number, "old": KitStatus(kit.status).label, "new": KitStatus(to).label}
        )
    kit.status = to
    for name, value in changes.items():
        setattr(kit, name, value)
    kit.save(update_fields=["status", *changes])
    return kit


def _locked(kit: Kit) -> Kit:
    return Kit.objects.select_for_update().get(pk=kit.pk)


def _contents_for(*, trial, arm, decision: str) -> list[tuple[str, str]]:
    """(kit type, content) an arm takes at a dosing visit with this dose decision: none after a
    stop; the tablet kit still when the infusion is held (the daily tablet continues)."""
    if decision == Decision.STOP:
        return []
    types = kit_types_given(trial, infusion_held=decision == Decision.HOLD)
    # An open-label arm may get no kit of a type (observation gets none).
    return [(kit_type, arm.kit_contents[kit_type]) for kit_type in types if kit_type in arm.kit_contents]


def needed_kits(visit: Visit) -> list[tuple[str, str]]:
    """(kit type, content) to assign at this dosing visit, from the arm; the tablet kit is still
    given when the infusion is held (the daily tablet continues)."""
    arm = allocated_arm(visit.participant)
    if arm is None:
        raise NotRandomized()
    dose = DoseRecord.objects.filter(visit=visit).first()
    return _contents_for(trial=visit.site.trial, arm=arm, decision=dose.decision if dose else Decision.GIVE)


# A visit has its kit of a type once one was assigned to it, whatever happened to the kit since.
KIT_HELD_BY_VISIT = (S.ASSIGNED, S.DISPENSED, S.RETURNED)


def _visits_with_kit_facts(visits: QuerySet[Visit]) -> QuerySet[Visit]:
    """Visits with what kit assignment reads besides the stock, so it costs no query of its own:
    `next_window_end` (the window end of the participant's next visit, None at the last) and
    `kit_types_held` (the kit types the visit already has)."""
    following = Visit.objects.filter(participant_id=OuterRef("participant_id"), sequence__gt=OuterRef("sequence"))
    held = Kit.objects.filter(visit_id=OuterRef("pk"), status__in=KIT_HELD_BY_VISIT).values("kit_type")
    return visits.annotate(
        next_window_end=Subquery(following.order_by("sequence").values("window_end")[:1]),
        kit_types_held=ArraySubquery(held),
    )


def kit_expiry_needed(visit: Visit) -> datetime.date:
    """A kit must last until the next visit's window closes (the visit date at the last visit)."""
    following = Visit.objects.filter(participant_id=visit.participant_id, sequence__gt=visit.sequence)
    following = following.order_by("sequence").first()
    return _lasting_until(visit, following.window_end if following else None)


def _lasting_until(visit: Visit, next_window_end: datetime.date | None) -> datetime.date:
    return next_window_end if next_window_end is not None else (visit.actual_date or visit.target_date)


def kit_contents_by_type(trial) -> dict[str, set[str]]:
    """Which contents each kit type comes in for this trial's arms ({type: {"active", "placebo"}}),
    from the loaded protocol (no query: a kit assignment asks it for every kit type it checks)."""
    contents: dict[str, set[str]] = {}
    for arm in trial.protocol.arms:
        for kit_type, content in arm.kit_contents.items():
            contents.setdefault(kit_type, set()).add(content)
    return contents


def _lots_serving_every_content(*, site, kit_type: str, lasting_until: datetime.date) -> list[str]:
    """The packaging lots at the site holding a fit kit of EVERY content of this kit type (label
    expiry lasting until the next visit's window closes), earliest label expiry first. The
    assignment itself chooses the first of them in its claiming statement (`_KIT_CLAIM_LOT`);
    this is for telling a stock-out from a race once the claim found nothing."""
    needed = kit_contents_by_type(site.trial).get(kit_type, set())
    rows = (
        Kit.objects.filter(site_id=site.pk, status=S.AT_SITE, kit_type=kit_type, label_expiry__gte=lasting_until)
        .values("packaging_lot", "content")
        .annotate(label_expiry=Min("label_expiry"))
    )
    contents: dict[str, set[str]] = {}
    expiry: dict[str, datetime.date] = {}
    for row in rows:
        contents.setdefault(row["packaging_lot"], set()).add(row["content"])
        expiry[row["packaging_lot"]] = min(row["label_expiry"], expiry.get(row["packaging_lot"], row["label_expiry"]))
    serving = [lot for lot, held in contents.items() if needed and held >= needed]
    return sorted(serving, key=lambda lot: (expiry[lot], lot))


def _missing_contents(*, site, kit_type: str, lasting_until: datetime.date) -> list[tuple[str, str]]:
    """For the supply manager's e-mail: the contents with no fit kit at the site (or, when each has
    some, none in a common packaging lot: then every content is named)."""
    held = set(
        Kit.objects.filter(
            site_id=site.pk, status=S.AT_SITE, kit_type=kit_type, label_expiry__gte=lasting_until
        ).values_list("content", flat=True)
    )
    needed = sorted(kit_contents_by_type(site.trial).get(kit_type, ()))
    missing = [content for content in needed if content not in held]
    return [(kit_type, content) for content in (missing or needed)]


# The packaging lot for one kit type, chosen without regard to content: among the site's lots
# holding a fit kit (label expiry lasting until the next visit's window closes) of EVERY content
# of the type, the one with the earliest label expiry (then by name). A lot left holding one
# content only is never chosen: its label would name the content.
_KIT_CLAIM_LOT = (
    "SELECT lot.packaging_lot FROM dosing_kit AS lot"
    " WHERE lot.site_id = %(site)s AND lot.status = %(at_site)s AND lot.kit_type = %(type_{n})s"
    " AND lot.label_expiry >= %(lasting)s"
    " GROUP BY lot.packaging_lot"
    " HAVING count(DISTINCT lot.content) FILTER (WHERE lot.content = ANY(%(contents_{n})s)) = %(content_count_{n})s"
    " ORDER BY min(lot.label_expiry), lot.packaging_lot LIMIT 1"
)
# Within that lot, one fit kit of the participant's content at random: ordered by SHA-256 of a
# fresh key from the OS CSPRNG (secrets.token_bytes) and the kit's id, a permutation nobody can
# predict, so never the lowest number (the numbers given out within one content would rise over
# time). Locked with SKIP LOCKED: a kit another assignment holds is passed over, never waited
# for, and re-checked as still at the site once locked.
_KIT_CLAIM_ONE = (
    "chosen_{n} AS MATERIALIZED (SELECT kit.id FROM dosing_kit AS kit"
    " WHERE kit.site_id = %(site)s AND kit.status = %(at_site)s AND kit.kit_type = %(type_{n})s"
    " AND kit.content = %(content_{n})s AND kit.label_expiry >= %(lasting)s"
    " AND kit.packaging_lot = (" + _KIT_CLAIM_LOT + ")"
    " ORDER BY sha256(%(key)s || int8send(kit.id)) LIMIT 1 FOR UPDATE OF kit SKIP LOCKED)"
)


def _kits_claim(
    *, site, visit: Visit, participant, wanted: list[tuple[str, str]], lasting_until: datetime.date, assigned_by
) -> list[Kit]:
    """Assign one kit of each (kit type, content) in `wanted` to the visit, all or none, in one
    statement whatever the stock: each type's packaging lot (`_KIT_CLAIM_LOT`), a kit of the
    content in it (`_KIT_CLAIM_ONE`), and the UPDATE of those kits, which happens only when every
    wanted kit was found. Returns the kits assigned (blinded fields only), or [] when one was
    missing (a stock-out, or the last fit kit taken by a concurrent assignment). The caller's
    audit context attributes the change."""
    parameters = {
        "site": site.pk,
        "at_site": S.AT_SITE,
        "assigned": S.ASSIGNED,
        "lasting": lasting_until,
        "key": secrets.token_bytes(32),
        "participant": participant.pk,
        "visit": visit.pk,
        "assigned_at": timezone.now(),
        "assigned_by": assigned_by.pk,
        "wanted": len(wanted),
    }
    contents_by_type = kit_contents_by_type(site.trial)
    for n, (kit_type, content) in enumerate(wanted):
        every = sorted(contents_by_type.get(kit_type, ()))
        parameters |= {
            f"type_{n}": kit_type,
            f"content_{n}": content,
            f"contents_{n}": every,
            # No content known for the type: no lot can serve it.
            f"content_count_{n}": len(every) or 1,
        }
    chosen = [f"chosen_{n}" for n in range(len(wanted))]
    sql = (
        "WITH "
        + ", ".join(_KIT_CLAIM_ONE.replace("{n}", str(n)) for n in range(len(wanted)))
        + " UPDATE dosing_kit AS kit SET status = %(assigned)s, participant_id = %(participant)s,"
        " visit_id = %(visit)s, assigned_at = %(assigned_at)s, assigned_by_id = %(assigned_by)s"
        " WHERE kit.status = %(at_site)s"
        " AND kit.id IN (" + " UNION ALL ".join(f"SELECT id FROM {name}" for name in chosen) + ")"
        # All or none: a visit never leaves with some of its kits (the kits found stay locked,
        # unassigned, until this transaction ends).
        " AND " + " + ".join(f"(SELECT count(*) FROM {name})" for name in chosen) + " = %(wanted)s"
        " RETURNING " + ", ".join(f"kit.{column}" for column in BLINDED_KIT_FIELDS)
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        rows = cursor.fetchall()
    kits = [Kit.from_db(connection.alias, list(BLINDED_KIT_FIELDS), row) for row in rows]
    return sorted(kits, key=lambda kit: kit.kit_type)


def _kits_assign_read(*, visit: Visit, arm, decision: str, assigned_by) -> tuple[list[Kit], bool]:
    """kits_assign's work on a visit read with `_visits_with_kit_facts`, inside the caller's audit
    context for kits: (the visit's assigned kits, False), or ([], True) when a kit was missing,
    nothing assigned and the supply managers' e-mail arranged for after commit. The caller raises
    NoKitAvailable once out of its atomic block (a savepoint rolled back would drop the e-mail)."""
    site = visit.site
    lasting_until = _lasting_until(visit, visit.next_window_end)
    held = set(visit.kit_types_held or ())
    wanted = [pair for pair in _contents_for(trial=site.trial, arm=arm, decision=decision) if pair[0] not in held]
    kits = (
        _kits_claim(
            site=site,
            visit=visit,
            participant=visit.participant,
            wanted=wanted,
            lasting_until=lasting_until,
            assigned_by=assigned_by,
        )
        if wanted
        else []
    )
    if wanted and not kits:
        # Refused for everyone needing that type here, whatever their arm: the set of
        # participants hit by a stock-out does not split them by content. Only the supply
        # managers learn which content: those of a type the site cannot serve from one packaging
        # lot, or, when every type could be served (a concurrent assignment took the last fit
        # kit meanwhile), every content the visit wanted.
        shortages: list[tuple[str, str]] = []
        for kit_type, _content in wanted:
            if not _lots_serving_every_content(site=site, kit_type=kit_type, lasting_until=lasting_until):
                shortages += _missing_contents(site=site, kit_type=kit_type, lasting_until=lasting_until)
        shortages = shortages or list(wanted)
        transaction.on_commit(lambda: notify_supply(site=site, shortages=shortages, running_low=False))
        return [], True
    if held:
        # Assigned again after a stock-out: the visit's kits still waiting to be dispensed too.
        return list(kits_blinded(visit.kits.filter(status=S.ASSIGNED)).order_by("kit_type")), False
    return kits, False


KIT_ASSIGNMENT_REASON = "kit assignment at a dosing visit"


def _kits_at_recorded_visit(outcome: VisitOutcome, *, decision: str, assigned_by) -> None:
    """The kits of a dosing visit just recorded (visit_record): its visit is locked and was read
    with `_visits_with_kit_facts`, so only the arm and the claiming statement are asked."""
    visit = outcome.visit
    arm = allocated_arm(visit.participant)
    if arm is None:
        raise NotRandomized()
    # The recording's transaction is where a failed claim rolls back to: no savepoint of its own.
    with audit_context(actor=assigned_by, reason=KIT_ASSIGNMENT_REASON, savepoint=False):
        outcome.kits, outcome.no_kit = _kits_assign_read(
            visit=visit, arm=arm, decision=decision, assigned_by=assigned_by
        )
    if outcome.no_kit:
        outcome.kits = list(kits_blinded(visit.kits.all()).order_by("kit_type"))


def kits_assign(*, visit: Visit, assigned_by) -> list[Kit]:
    """Assign every kit the visit still needs, or none: the right type and content for the arm,
    at the participant's site, with a label expiry lasting until the next visit's window closes,
    from the packaging lot chosen without regard to content and at random within it
    (`_kits_claim`). When the site cannot serve every content of a needed type, nothing is
    assigned and NoKitAvailable is raised: the same words and the same answer whichever type or
    content is short. The supply manager is e-mailed the detail after commit. Resupply is not
    asked for here but on beat's schedule (`resupply_all_sites`): a shipment leaving seconds
    after one participant's kits would point at that participant's content. A constant number
    of statements whatever the stock, the participants or their visits."""
    with audit_context(actor=assigned_by, reason=KIT_ASSIGNMENT_REASON):
        visit = _visits_with_kit_facts(Visit.objects.select_related("participant", "site__trial", "dose")).get(
            pk=visit.pk
        )
        if not visit.is_dosing or visit.status != VisitStatus.COMPLETED:
            raise VisitNotOpen(_("Kits are assigned only at a recorded dosing visit."))
        if visit.participant.status != ParticipantStatus.RANDOMIZED:
            raise VisitNotOpen(_("Only a randomized participant still in the trial can receive kits."))
        dose = getattr(visit, "dose", None)
        decision = dose.decision if dose is not None else Decision.GIVE
        if decision == Decision.STOP:
            raise TreatmentStopped()
        arm = allocated_arm(visit.participant)
        if arm is None:
            raise NotRandomized()
        kits, missing = _kits_assign_read(visit=visit, arm=arm, decision=decision, assigned_by=assigned_by)
    if missing:
        raise NoKitAvailable()
    return kits


def available_stock(*, site, kit_type: str, content: str) -> int:
    return Kit.objects.filter(site=site, status=S.AT_SITE, kit_type=kit_type, content=content).count()


def notify_supply(*, site, shortages: list[tuple[str, str]], running_low: bool) -> None:
    """E-mail the unblinded supply managers of the site, naming type and content. Only they may
    learn which content is short; blinded users only read the generic refusal."""
    recipients = [user.email for user in access.users_with(Capability.MANAGE_SUPPLY, site) if user.email]
    if not recipients:
        return
    lines = [
        _("%(type)s kits, %(content)s: %(count)s available")
        % {
            "type": kit_type,
            "content": KitContent(content).label,
            "count": available_stock(site=site, kit_type=kit_type, content=content),
        }
        for kit_type, content in shortages
    ]
    if running_low:
        subject = _("Kit stock low at %(site)s") % {"site": site.code}
    else:
        subject = _("No kit available at %(site)s: a dosing visit is waiting") % {"site": site.code}
    send_mail(str(subject), "\n".join(str(line) for line in lines), None, recipients)


def kit_dispense(*, kit: Kit, label_number: str, dispensed_by) -> Kit:
    """Dispense an assigned kit once the number read off its label matches."""
    with audit_context(actor=dispensed_by, reason="kit dispensed"):
        kit = _locked(kit)
        if identifier(label_number) != identifier(kit.kit_number):
            raise LabelMismatch()
        if kit.status != S.ASSIGNED:
            raise IllegalKitTransition(_("Only an assigned kit can be dispensed."))
        # A participant who died or withdrew is given nothing more.
        if kit.participant.status in (ParticipantStatus.DIED, ParticipantStatus.WITHDRAWN):
            raise TreatmentStopped()
        if treatment_stopped(kit.participant):
            raise TreatmentStopped()
        return kit_transition(kit=kit, to=S.DISPENSED, dispensed_at=timezone.now(), dispensed_by=dispensed_by)


def kit_return(*, kit: Kit, returned_by, returned_on: datetime.date, tablets_returned: int | None = None) -> Kit:
    """Record a dispensed kit coming back; a tablet bottle's remaining tablets are counted."""
    with audit_context(actor=returned_by, reason="kit returned"):
        kit = _locked(kit)
        if kit.status != S.DISPENSED:
            raise IllegalKitTransition(_("Only a dispensed kit can be returned."))
        trial = Site.objects.get(pk=kit.site_id).trial
        if is_tablet_kit(trial, kit.kit_type):
            per_kit = trial.protocol.dosing.tablet.tablets_per_kit
            if tablets_returned is None or not 0 <= tablets_returned <= per_kit:
                raise KitReturnInvalid(
                    _("Count the returned tablets: between 0 and %(count)s.") % {"count": per_kit},
                    field="tablets_returned",
                )
        elif tablets_returned is not None:
            raise KitReturnInvalid(_("Only tablet kits have tablets to count."), field="tablets_returned")
        dispensed_on = timezone.localtime(kit.dispensed_at, kit.site.zone).date()
        if returned_on < dispensed_on or returned_on > _site_today(kit.site):
            raise KitReturnInvalid(
                _("The return date must be between the dispensing date and today."), field="returned_on"
            )
        return kit_transition(
            kit=kit, to=S.RETURNED, returned_on=returned_on, tablets_returned=tablets_returned, returned_by=returned_by
        )


def kit_report_excursion(*, kit: Kit, reported_by, description: str) -> Kit:
    """A temperature excursion quarantines the kit; an assigned kit loses its assignment (the
    visit gets another kit when it is assigned again)."""
    description = (description or "").strip()
    if not description:
        raise TrialRuleError(_("Describe the excursion (temperature, duration)."), field="description")
    with audit_context(actor=reported_by, reason=f"temperature excursion: {description}"):
        kit = _locked(kit)
        changes = {"status_note": description}
        if kit.status == S.ASSIGNED:
            changes |= {"participant": None, "visit": None, "assigned_at": None, "assigned_by": None}
        return kit_transition(kit=kit, to=S.QUARANTINED, **changes)


def kit_release(*, kit: Kit, released_by, reason: str) -> Kit:
    """The supply manager judged the excursion harmless: the kit goes back into stock."""
    # The supply manager's words may name a lot or a content: they go to `supply_note`, which
    # blinded readers never see, and the audit reason (which they do see) stays generic.
    with audit_context(actor=released_by, reason="quarantine released by the supply manager"):
        kit = _locked(kit)
        return kit_transition(kit=kit, to=S.AT_SITE if kit.site_id else S.IN_DEPOT, supply_note=reason)


def kit_destroy(*, kit: Kit, destroyed_by, reason: str) -> Kit:
    with audit_context(actor=destroyed_by, reason="kit destroyed by the supply manager"):
        kit = _locked(kit)
        return kit_transition(kit=kit, to=S.DAMAGED, supply_note=reason)


def kits_expire(*, today: datetime.date | None = None) -> int:
    """Kits past their label expiry (in their site's zone; UTC at the depot) can no longer be
    used. The label date, not the true expiry: it is what the pharmacist reads, and it is the same
    for every content of a packaging lot, so kits of both contents expire together. Idempotent."""
    usable = [S.IN_DEPOT, S.SHIPPED, S.AT_SITE, S.ASSIGNED, S.QUARANTINED]
    expired = 0
    with audit_context(reason="kit past its expiry date"):
        candidates = (
            Kit.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("site")
            .filter(status__in=usable, label_expiry__lt=today or timezone.now().date() + datetime.timedelta(days=1))
        )
        for kit in candidates:
            local_today = today or (_site_today(kit.site) if kit.site else timezone.now().date())
            if kit.label_expiry < local_today and S.EXPIRED in KIT_TRANSITIONS[kit.status]:
                kit_transition(kit=kit, to=S.EXPIRED)
                expired += 1
    return expired


# --- Kit lists and shipments -------------------------------------------------------------------

KIT_LIST_HEADER = ["kit_number", "kit_type", "content", "lot", "expiry", "packaging_lot"]
# The older five-column lists (no packaging lot): the whole import becomes one packaging lot.
KIT_LIST_HEADER_WITHOUT_PACKAGING = KIT_LIST_HEADER[:5]
KIT_NUMBER = re.compile(r"^[A-Z0-9][A-Z0-9-]{3,19}$")


def _kit_list_rows(*, csv_text: str, trial, today: datetime.date) -> list[kitlist.PlannedKit]:
    """Parse and check every line of a kit list; every error is named with its line number."""
    types = set(trial.protocol.kit_types)
    reader = csv.reader(io.StringIO(csv_text.lstrip("\ufeff"), newline=""))
    try:
        rows = list(reader)
    except csv.Error as error:
        raise KitListInvalid(
            [str(_("Line %(line)d: %(problem)s.") % {"line": reader.line_num, "problem": error})]
        ) from None
    header = [cell.strip() for cell in rows[0]] if rows else []
    if header not in (KIT_LIST_HEADER, KIT_LIST_HEADER_WITHOUT_PACKAGING):
        raise KitListInvalid(
            [str(_("Line 1: the header must be exactly: %(header)s") % {"header": ",".join(KIT_LIST_HEADER)})]
        )
    # One packaging lot for a list that names none: today's date and a number, unique per trial.
    # Numbered by the trial's kit lists: two imports on one day must not share a packaging lot.
    default_packaging_lot = f"PL{today:%Y%m%d}-{KitList.objects.filter(trial=trial).count() + 1}"
    errors: list[str] = []
    seen: dict[str, int] = {}
    planned: list[kitlist.PlannedKit] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            errors.append(
                str(
                    _("Line %(line)s: expected %(expected)s columns, found %(count)s.")
                    % {"line": line, "expected": len(header), "count": len(row)}
                )
            )
            continue
        # Checked as stored: " =1+2" would otherwise pass the check and be stored as "=1+2".
        cells = [clean_text(cell) for cell in row]
        if any(looks_like_formula(cell) for cell in cells):
            errors.append(
                str(_("Line %(line)s: a cell starts with = + - @ (a spreadsheet formula); refused.") % {"line": line})
            )
            continue
        number, kit_type, content, lot, expiry_text = cells[:5]
        number = identifier(number)
        packaging_lot = cells[5] if len(cells) > 5 else default_packaging_lot
        problems = []
        if not KIT_NUMBER.match(number):
            problems.append(
                _("kit number %(number)s is not 4-20 capital letters, digits or dashes") % {"number": number}
            )
        elif number in seen:
            problems.append(
                _("kit number %(number)s repeats line %(first)s") % {"number": number, "first": seen[number]}
            )
        else:
            seen[number] = line
        if kit_type not in types:
            problems.append(_("unknown kit type %(type)s") % {"type": kit_type})
        if content not in KitContent.values:
            problems.append(_("content must be active or placebo"))
        if not lot or len(lot) > 40:
            problems.append(_("lot is missing or too long"))
        if not packaging_lot or len(packaging_lot) > 40:
            problems.append(_("packaging lot is missing or too long"))
        expiry = None
        try:
            expiry = datetime.date.fromisoformat(expiry_text)
        except ValueError:
            problems.append(_("expiry %(value)s is not a date (YYYY-MM-DD)") % {"value": expiry_text})
        else:
            if len(expiry_text) != 10:
                problems.append(_("expiry %(value)s is not a date (YYYY-MM-DD)") % {"value": expiry_text})
            elif expiry < today:
                problems.append(_("expired on %(date)s") % {"date": expiry_text})
        if problems:
            errors.append(
                str(_("Line %(line)s: %(problems)s.") % {"line": line, "problems": "; ".join(str(p) for p in problems)})
            )
            continue
        planned.append(kitlist.PlannedKit(number, kit_type, content, lot, expiry, packaging_lot))
    existing = set(Kit.objects.filter(trial=trial, kit_number__in=seen).values_list("kit_number", flat=True))
    for number in sorted(existing):
        errors.append(
            str(_("Line %(line)s: kit number %(number)s already exists.") % {"line": seen[number], "number": number})
        )
    if not planned and not errors:
        errors.append(str(_("The list has no kits.")))
    if errors:
        raise KitListInvalid(errors)
    return planned


def kit_list_blinding_problems(planned: list[kitlist.PlannedKit], *, trial) -> tuple[list[str], list[str]]:
    """What in a kit list would let a blinded person tell contents apart: (refusals, warnings).
    Numbers related to content (trend, runs, last digit), and packaging lots whose contents are
    not balanced once the kits already in those lots are counted. None in an open-label trial:
    nobody is blinded there, and its kits may all be active."""
    refusals: list[str] = []
    warnings: list[str] = []
    if not trial.protocol.blinded:
        return refusals, warnings
    for finding in kitlist.order_findings(planned):
        if abs(finding.z) <= kitlist.WARN_Z:
            continue
        text = _("%(type)s kits: %(test)s gives z = %(z).2f (p = %(p).2g); the numbers would tell contents apart.") % {
            "type": finding.kit_type,
            "test": finding.test,
            "z": finding.z,
            "p": finding.p,
        }
        (refusals if finding.refused else warnings).append(str(text))
    lots = {kit.packaging_lot for kit in planned}
    already = [
        kitlist.PlannedKit(kit.kit_number, kit.kit_type, kit.content, kit.lot, kit.expiry, kit.packaging_lot)
        for kit in Kit.objects.filter(trial=trial, packaging_lot__in=lots).only(
            "kit_number", "kit_type", "content", "lot", "expiry", "packaging_lot"
        )
    ]
    for packaging_lot, kit_type, counts in kitlist.packaging_lot_problems([*already, *planned]):
        refusals.append(
            str(
                _(
                    "Packaging lot %(lot)s, %(type)s kits: %(active)s active and %(placebo)s placebo; each packaging "
                    "lot must hold both contents within %(limit)s kits of each other, or its label would tell them apart."
                )
                % {
                    "lot": packaging_lot,
                    "type": kit_type,
                    "active": counts["active"],
                    "placebo": counts["placebo"],
                    "limit": kitlist.PACKAGING_LOT_IMBALANCE,
                }
            )
        )
    return refusals, warnings


def _kits_store(
    *, planned: list[kitlist.PlannedKit], trial, created_by, source: str, seed: str = ""
) -> tuple[KitList, list[Kit]]:
    """Write the kits in kit-number order, so their database ids carry no more than their numbers
    do, and give every kit of a packaging lot the earliest true expiry of that lot as its label
    expiry (kits already in the lot are relabelled in the same transaction when it gets earlier)."""
    planned = sorted(planned, key=lambda kit: kitlist.number_key(kit.kit_number))
    canonical = kitlist.to_csv(planned)
    label_expiry: dict[str, datetime.date] = {}
    for kit in planned:
        label_expiry[kit.packaging_lot] = min(kit.expiry, label_expiry.get(kit.packaging_lot, kit.expiry))
    for row in (
        Kit.objects.filter(trial=trial, packaging_lot__in=label_expiry)
        .values("packaging_lot")
        .annotate(earliest=Min("expiry"))
    ):
        label_expiry[row["packaging_lot"]] = min(label_expiry[row["packaging_lot"]], row["earliest"])
    kit_list = KitList.objects.create(
        trial=trial,
        source=source,
        seed=seed,
        kit_count=len(planned),
        sha256=kitlist.sha256(canonical),
        created_by=created_by,
    )
    kits = Kit.objects.bulk_create(
        [
            Kit(
                trial=trial,
                kit_number=kit.kit_number,
                kit_type=kit.kit_type,
                content=kit.content,
                lot=kit.lot,
                expiry=kit.expiry,
                packaging_lot=kit.packaging_lot,
                label_expiry=label_expiry[kit.packaging_lot],
                kit_list=kit_list,
                imported_by=created_by,
            )
            for kit in planned
        ]
    )
    for packaging_lot, earliest in label_expiry.items():
        Kit.objects.filter(trial=trial, packaging_lot=packaging_lot, label_expiry__gt=earliest).update(
            label_expiry=earliest
        )
    return kit_list, kits


def kits_import(*, csv_text: str, imported_by, trial) -> list[Kit]:
    """Import a packager's kit list (header kit_number,kit_type,content,lot,expiry[,packaging_lot]).
    Every line is checked and every error named with its line number; a list whose numbers or
    packaging lots would let a blinded person tell contents apart is refused with the statistic.
    Any error imports nothing."""
    today = timezone.now().date()
    planned = _kit_list_rows(csv_text=csv_text, trial=trial, today=today)
    refusals, _warnings = kit_list_blinding_problems(planned, trial=trial)
    if refusals:
        raise KitListInvalid(refusals)
    with audit_context(actor=imported_by, reason="kit list imported"):
        _kit_list, kits = _kits_store(
            planned=planned, trial=trial, created_by=imported_by, source=KitList.Source.IMPORTED
        )
        return kits


def kit_list_generate(
    *,
    trial,
    packaging_lot: str,
    kits_per_type: int,
    lots: dict[tuple[str, str], tuple[str, datetime.date]],
    created_by,
    seed: str = "",
) -> KitList:
    """Generate a packaging lot's kit list here (`dosing.kitlist.generate`): random 8-digit numbers,
    contents balanced in random blocks along them. The seed (a fresh secret when none is given) is
    stored for the auditor and never shown to a blinded user."""
    packaging_lot = (packaging_lot or "").strip()
    if not packaging_lot or len(packaging_lot) > 40:
        raise TrialRuleError(
            _("Give the packaging lot printed on the labels (up to 40 characters)."), field="packaging_lot"
        )
    if Kit.objects.filter(trial=trial, packaging_lot=packaging_lot).exists():
        raise TrialRuleError(_("This packaging lot already has kits; give a new one."), field="packaging_lot")
    if not 1 <= kits_per_type <= 5000:
        raise TrialRuleError(_("Between 1 and 5,000 kits of each type."), field="kits_per_type")
    today = timezone.now().date()
    for (_kit_type, _content), (lot, expiry) in lots.items():
        if expiry < today:
            raise TrialRuleError(_("That lot has already expired."), field="lots")
        if not lot or len(lot) > 40:
            raise TrialRuleError(_("Give every manufacturing lot (up to 40 characters)."), field="lots")
    seed = seed or secrets.token_hex(32)
    kit_types = list(trial.protocol.kit_types)
    planned = kitlist.generate(
        seed=seed,
        packaging_lot=packaging_lot,
        kits_per_type=kits_per_type,
        lots=lots,
        kit_types=kit_types,
        contents_by_type=kit_contents_by_type(trial),
    )
    taken = Kit.objects.filter(trial=trial, kit_number__in=[kit.kit_number for kit in planned]).exists()
    if taken:
        raise TrialRuleError(
            _("A generated kit number is already in use; generate again with another seed."), field="seed"
        )
    with audit_context(actor=created_by, reason="kit list generated"):
        kit_list, _kits = _kits_store(
            planned=planned, trial=trial, created_by=created_by, source=KitList.Source.GENERATED, seed=seed
        )
        return kit_list


def _depot_kits_for_shipment(*, trial, kit_type: str, contents: list[str], per_content: int, today) -> list[Kit]:
    """`per_content` depot kits of each content, taken from the same packaging lots in equal
    numbers (earliest label expiry first, at random within a lot), so that at the site every
    packaging lot holds the contents alike. Locked; fewer when the depot is short."""
    depot = Kit.objects.filter(
        trial=trial, site__isnull=True, status=S.IN_DEPOT, kit_type=kit_type, label_expiry__gte=today
    )
    lots = (
        depot.values("packaging_lot", "content")
        .annotate(count=Count("id"), label_expiry=Min("label_expiry"))
        .order_by("label_expiry", "packaging_lot")
    )
    per_lot: dict[str, dict[str, int]] = {}
    for row in lots:
        per_lot.setdefault(row["packaging_lot"], {})[row["content"]] = row["count"]
    chosen: list[Kit] = []
    remaining = per_content
    for packaging_lot, counts in per_lot.items():
        if remaining == 0:
            break
        take = min(remaining, *(counts.get(content, 0) for content in contents))
        if take == 0:
            continue
        for content in contents:
            ids = list(depot.filter(packaging_lot=packaging_lot, content=content).values_list("id", flat=True))
            _random.shuffle(ids)
            kits = list(Kit.objects.select_for_update(skip_locked=True).filter(pk__in=ids[: take * 2]))
            _random.shuffle(kits)
            chosen += kits[:take]
        remaining -= take
    return chosen


def shipment_create(*, site, per_content: dict[str, int], shipped_by=None) -> Shipment:
    """Ship to a site `per_content[kit type]` kits of EACH content of that type: a shipment always
    carries every content alike, so receiving it, or which kits came in it, says nothing about
    content. `shipped_by` None: the system resupplied on its own."""
    per_content = {kit_type: int(count) for kit_type, count in per_content.items() if int(count or 0) > 0}
    if not per_content or any(count > 250 for count in per_content.values()):
        raise TrialRuleError(_("Ship between 1 and 250 kits of each content."), field="quantity")
    contents_by_type = kit_contents_by_type(site.trial)
    today = timezone.now().date()
    with audit_context(actor=shipped_by, reason="kits shipped to site" if shipped_by else "automatic resupply"):
        chosen: list[Kit] = []
        for kit_type, count in sorted(per_content.items()):
            contents = sorted(contents_by_type.get(kit_type, ()))
            if not contents:
                raise TrialRuleError(_("Unknown kit type %(type)s.") % {"type": kit_type}, field="quantity")
            kits = _depot_kits_for_shipment(
                trial=site.trial, kit_type=kit_type, contents=contents, per_content=count, today=today
            )
            if len(kits) < count * len(contents):
                raise TrialRuleError(
                    _("The depot has only %(count)s %(type)s kits of each content in matching packaging lots.")
                    % {"count": len(kits) // len(contents), "type": kit_type},
                    field="quantity",
                )
            chosen += kits
        shipment = Shipment.objects.create(site=site, shipped_by=shipped_by)
        _random.shuffle(chosen)
        for kit in chosen:
            kit_transition(kit=kit, to=S.SHIPPED, site=site, shipment=shipment)
        return shipment


def resupply_plan(site) -> dict[str, int]:
    """Kits of each content to ship to the site, per kit type: when any content's kits at the
    site or on their way fall below the trigger level (`kits.resupply_trigger`, otherwise
    `low_stock_threshold`), `kits.resupply_target` kits of every content of every kit type.
    Empty when nothing is needed. Nothing in a shipment depends on which content ran low."""
    rules = site.trial.protocol.kits
    trigger, target = (rules.resupply_trigger, rules.resupply_target) if rules else (0, 0)
    if target <= 0:
        return {}
    today = _site_today(site)
    stock = (
        Kit.objects.filter(site=site, status__in=[S.AT_SITE, S.SHIPPED], label_expiry__gte=today)
        .values("kit_type", "content")
        .annotate(count=Count("id"))
    )
    counts = {(row["kit_type"], row["content"]): row["count"] for row in stock}
    lowest = {
        kit_type: min(counts.get((kit_type, content), 0) for content in contents)
        for kit_type, contents in sorted(kit_contents_by_type(site.trial).items())
    }
    if all(level >= max(trigger, 1) for level in lowest.values()):
        return {}
    # A fixed size, every kit type: a size computed from the stock (target minus the lowest
    # content) would tell the pharmacist, who can count each type's kits, how the contents split.
    return dict.fromkeys(lowest, target)


def resupply_site(*, site) -> Shipment | None:
    """Ship what `resupply_plan` says, as one mixed shipment; the site row is locked so two
    workers never ship twice for the same shortage. When the depot cannot fill it, the supply
    managers are e-mailed and nothing is shipped."""
    with transaction.atomic():
        site = Site.objects.select_for_update(of=("self",)).select_related("trial").get(pk=site.pk)
        plan = resupply_plan(site)
        if not plan:
            return None
        try:
            with transaction.atomic():
                return shipment_create(site=site, per_content=plan, shipped_by=None)
        except TrialRuleError as error:
            message = str(error.message)
            transaction.on_commit(lambda: notify_depot_short(site=site, plan=plan, problem=message))
            return None


def resupply_all_sites() -> int:
    """Beat's pass (every six hours): resupply every site that needs it. Idempotent."""
    shipped = 0
    for site in Site.objects.select_related("trial"):
        shipped += resupply_site(site=site) is not None
    return shipped


def notify_depot_short(*, site, plan: dict[str, int], problem: str) -> None:
    recipients = [user.email for user in access.users_with(Capability.MANAGE_SUPPLY, site) if user.email]
    if not recipients:
        return
    lines = [problem] + [
        str(_("%(type)s: %(count)s kits of each content needed") % {"type": kit_type, "count": count})
        for kit_type, count in plan.items()
    ]
    subject = _("Automatic resupply of %(site)s failed: the depot is short") % {"site": site.code}
    send_mail(str(subject), "\n".join(lines), None, recipients)


def shipment_receive(*, shipment: Shipment, received_by) -> Shipment:
    """The pharmacist received the shipment: its kits are in stock at the site."""
    with audit_context(actor=received_by, reason="shipment received at site"):
        shipment = Shipment.objects.select_for_update().get(pk=shipment.pk)
        if shipment.received_at is not None:
            raise Conflict(_("This shipment was already received."))
        for kit in Kit.objects.select_for_update().filter(shipment=shipment, status=S.SHIPPED):
            kit_transition(kit=kit, to=S.AT_SITE)
        shipment.received_at = timezone.now()
        shipment.received_by = received_by
        shipment.save(update_fields=["received_at", "received_by"])
        return shipment
