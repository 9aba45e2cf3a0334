"""Writes of visits, doses and kits. Every function is atomic and runs inside the caller's
`audit_context` (or opens one), so each change is attributed and reasoned in the audit trail."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import re
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from dosing.dose import check_weight, infusion_decision, infusion_dose, weight_change_flagged
from dosing.exceptions import (
    DosingValueRequired,
    IllegalKitTransition,
    KitListInvalid,
    KitReturnInvalid,
    LabelMismatch,
    NoKitAvailable,
    NotRandomized,
    OutOfWindowReasonRequired,
    TreatmentStopped,
    VisitDateInvalid,
    VisitNotOpen,
)
from dosing.models import (
    Decision,
    DoseRecord,
    Kit,
    KitContent,
    KitStatus,
    KitType,
    Shipment,
    Visit,
    VisitKind,
    VisitStatus,
)
from dosing.reminders.services import reminders_plan, reminders_replan
from enrollment.models import Participant, ParticipantStatus
from randomization.selectors import allocated_arm
from trialsite import access
from trialsite.access import Capability
from trialsite.audit import audit_context
from trialsite.exceptions import Conflict, ReasonRequired, TrialRuleError
from trialsite.models import Site


def visit_plan(*, visits_rules: dict, day0: datetime.date) -> list[dict]:
    """The planned visits for a participant randomized on `day0`, from the protocol's `[visits]`.

    - Cycle 1 is day 0 (the randomization day). Its window opens on day 0 (no dose can be given
      before randomization) and closes `window_after_days` later.
    - Cycles 2..N: day (n-1) x cycle length, window -before/+after days.
    - End of treatment: one cycle length after the last cycle, same window.
    - Follow-up k: k x interval months after the end-of-treatment target date, same window.
    """
    cycle_length = int(visits_rules["cycle_length_days"])
    before = datetime.timedelta(days=int(visits_rules["window_before_days"]))
    after = datetime.timedelta(days=int(visits_rules["window_after_days"]))
    cycles = int(visits_rules.get("cycles", 12))
    interval_months = int(visits_rules.get("follow_up_interval_months", 3))
    follow_ups = int(visits_rules.get("follow_up_visits", 0))

    plan: list[dict] = []
    for cycle in range(1, cycles + 1):
        target = day0 + datetime.timedelta(days=(cycle - 1) * cycle_length)
        plan.append(
            {
                "code": f"C{cycle}",
                "kind": VisitKind.DOSING,
                "cycle": cycle,
                "target_date": target,
                "window_start": target if cycle == 1 else target - before,
                "window_end": target + after,
            }
        )
    end_of_treatment = day0 + datetime.timedelta(days=cycles * cycle_length)
    plan.append(
        {
            "code": "EOT",
            "kind": VisitKind.END_OF_TREATMENT,
            "cycle": None,
            "target_date": end_of_treatment,
            "window_start": end_of_treatment - before,
            "window_end": end_of_treatment + after,
        }
    )
    for number in range(1, follow_ups + 1):
        target = end_of_treatment + relativedelta(months=number * interval_months)
        plan.append(
            {
                "code": f"FU{number}",
                "kind": VisitKind.FOLLOW_UP,
                "cycle": None,
                "target_date": target,
                "window_start": target - before,
                "window_end": target + after,
            }
        )
    for sequence, visit in enumerate(plan, start=1):
        visit["sequence"] = sequence
    return plan


def visit_schedule_create(*, participant: Participant, day0: datetime.date) -> list[Visit]:
    """Create the participant's visit plan. Called inside the randomization transaction and its
    audit context; the savepoint here keeps the plan all-or-nothing when called on its own.
    Its reminders are written to the outbox in the same transaction, so none can be lost."""
    with transaction.atomic():
        plan = visit_plan(visits_rules=participant.site.trial.visits, day0=day0)
        visits = Visit.objects.bulk_create(
            [Visit(participant=participant, site_id=participant.site_id, **visit) for visit in plan]
        )
        reminders_plan(visits=visits, participant=participant)
        return visits


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


def visit_record(
    *,
    visit: Visit,
    actual_date: datetime.date,
    recorded_by,
    weight_kg: Decimal | None = None,
    neutrophils: int | None = None,
    platelets: int | None = None,
    alt_uln: Decimal | None = None,
    ast_uln: Decimal | None = None,
    out_of_window_reason: str = "",
) -> VisitOutcome:
    """Record a visit. At a dosing visit: compute the dose, apply the lab safety gates and assign
    kits. The visit and dose stay recorded when no kit is available (`outcome.no_kit`)."""
    reason = (out_of_window_reason or "").strip()
    with audit_context(actor=recorded_by, reason=reason or "visit recorded"):
        visit = Visit.objects.select_for_update().select_related("participant", "site__trial").get(pk=visit.pk)
        participant = visit.participant
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
        rules = visit.site.trial.dosing
        if visit.is_dosing:
            if treatment_stopped(participant):
                raise TreatmentStopped()
            missing = [
                name
                for name, value in (
                    ("weight_kg", weight_kg),
                    ("neutrophils", neutrophils),
                    ("platelets", platelets),
                    ("alt_uln", alt_uln),
                    ("ast_uln", ast_uln),
                )
                if value is None
            ]
            if missing:
                raise DosingValueRequired(field=missing[0])
            dose = infusion_dose(weight_kg=weight_kg, rules=rules["infusion"])
            previous = DoseRecord.objects.filter(participant=participant).order_by("visit__sequence")
            baseline = previous.first()
            first_dose = not previous.filter(decision=Decision.GIVE).exists()
            decision = infusion_decision(
                first_dose=first_dose,
                neutrophils=neutrophils,
                platelets=platelets,
                alt_uln=alt_uln,
                ast_uln=ast_uln,
                rules=rules["safety"],
            )
            baseline_kg = baseline.weight_kg if baseline else Decimal(weight_kg)
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
                    weight_kg=weight_kg, baseline_kg=baseline_kg, rules=rules["infusion"]
                ),
                dose_mg=dose.dose_mg,
                concentrate_ml=dose.concentrate_ml,
                diluted_volume_ml=dose.diluted_volume_ml,
                vial_plan=[list(vials) for vials in dose.vial_plan],
                recorded_by=recorded_by,
            )
            if decision.decision == Decision.STOP:
                # Treatment ends: the remaining dosing visits will not happen; EOT and follow-up stay.
                Visit.objects.filter(
                    participant=participant, kind=VisitKind.DOSING, status=VisitStatus.SCHEDULED
                ).update(status=VisitStatus.CANCELLED)
            else:
                try:
                    outcome.kits = kits_assign(visit=visit, assigned_by=recorded_by)
                except NoKitAvailable:
                    outcome.no_kit = True
                    outcome.kits = list(visit.kits.all())
        else:
            if weight_kg is not None:
                visit.weight_kg = check_weight(weight_kg=weight_kg, rules=rules["infusion"])
            visit.save()
    return outcome


def visits_mark_missed(*, today: datetime.date | None = None) -> int:
    """Scheduled visits whose window closed (in the site's zone) with no visit recorded become
    missed. Idempotent: a second run finds nothing left to mark."""
    marked = 0
    for site in Site.objects.all():
        local_today = today or _site_today(site)
        with audit_context(reason="visit window closed without a visit recorded"):
            # A withdrawn participant's remaining visits are not "missed": they will not happen.
            marked += Visit.objects.filter(
                site=site,
                status=VisitStatus.SCHEDULED,
                window_end__lt=local_today,
                participant__status=ParticipantStatus.RANDOMIZED,
            ).update(status=VisitStatus.MISSED)
    return marked


# --- Kits: one transition function for every status change -------------------------------------

S = KitStatus
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


def needed_kits(visit: Visit) -> list[tuple[str, str]]:
    """(kit type, content) to assign at this dosing visit, from the arm; the tablet kit is still
    given when the infusion is held (the daily tablet continues)."""
    arm = allocated_arm(visit.participant)
    if arm is None:
        raise NotRandomized()
    dose = DoseRecord.objects.filter(visit=visit).first()
    decision = dose.decision if dose else Decision.GIVE
    types = {Decision.GIVE: ["INF", "TAB"], Decision.HOLD: ["TAB"], Decision.STOP: []}[decision]
    return [(kit_type, arm.kit_contents[kit_type]) for kit_type in types if kit_type in arm.kit_contents]


def kit_expiry_needed(visit: Visit) -> datetime.date:
    """A kit must last until the next visit's window closes (the visit date at the last visit)."""
    following = Visit.objects.filter(participant_id=visit.participant_id, sequence__gt=visit.sequence)
    following = following.order_by("sequence").first()
    if following is None:
        return visit.actual_date or visit.target_date
    return following.window_end


def kits_assign(*, visit: Visit, assigned_by) -> list[Kit]:
    """Assign each kit the visit still needs: right type and content at the participant's site,
    at the site, lasting long enough, earliest expiry first; locked with SKIP LOCKED so two
    pharmacists never get the same kit. Kits found stay assigned even when another type is
    missing; then NoKitAvailable is raised and the supply manager is e-mailed after commit."""
    shortages: list[tuple[str, str]] = []
    with audit_context(actor=assigned_by, reason="kit assignment at a dosing visit"):
        visit = Visit.objects.select_related("participant", "site__trial").get(pk=visit.pk)
        if not visit.is_dosing or visit.status != VisitStatus.COMPLETED:
            raise VisitNotOpen(_("Kits are assigned only at a recorded dosing visit."))
        if visit.participant.status != ParticipantStatus.RANDOMIZED:
            raise VisitNotOpen(_("Only a randomized participant still in the trial can receive kits."))
        if DoseRecord.objects.filter(visit=visit, decision=Decision.STOP).exists():
            raise TreatmentStopped()
        have = set(
            visit.kits.filter(status__in=[S.ASSIGNED, S.DISPENSED, S.RETURNED]).values_list("kit_type", flat=True)
        )
        lasting_until = kit_expiry_needed(visit)
        for kit_type, content in needed_kits(visit):
            if kit_type in have:
                continue
            kit = (
                Kit.objects.select_for_update(skip_locked=True)
                .filter(
                    site_id=visit.site_id,
                    status=S.AT_SITE,
                    kit_type=kit_type,
                    content=content,
                    expiry__gte=lasting_until,
                )
                .order_by("expiry", "kit_number")
                .first()
            )
            if kit is None:
                shortages.append((kit_type, content))
                continue
            kit_transition(
                kit=kit,
                to=S.ASSIGNED,
                participant=visit.participant,
                visit=visit,
                assigned_at=timezone.now(),
                assigned_by=assigned_by,
            )
            _warn_if_low(site=visit.site, kit_type=kit_type, content=content)
        if shortages:
            site = visit.site
            transaction.on_commit(lambda: notify_supply(site=site, shortages=shortages, running_low=False))
    if shortages:
        raise NoKitAvailable()
    return list(visit.kits.filter(status=S.ASSIGNED).order_by("kit_type"))


def available_stock(*, site, kit_type: str, content: str) -> int:
    return Kit.objects.filter(site=site, status=S.AT_SITE, kit_type=kit_type, content=content).count()


def _warn_if_low(*, site, kit_type: str, content: str) -> None:
    threshold = int((site.trial.definition.get("kits") or {}).get("low_stock_threshold", 0))
    if available_stock(site=site, kit_type=kit_type, content=content) < threshold:
        transaction.on_commit(lambda: notify_supply(site=site, shortages=[(kit_type, content)], running_low=True))


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
        if (label_number or "").strip().upper() != kit.kit_number.upper():
            raise LabelMismatch()
        if kit.status != S.ASSIGNED:
            raise IllegalKitTransition(_("Only an assigned kit can be dispensed."))
        return kit_transition(kit=kit, to=S.DISPENSED, dispensed_at=timezone.now(), dispensed_by=dispensed_by)


def kit_return(*, kit: Kit, returned_by, returned_on: datetime.date, tablets_returned: int | None = None) -> Kit:
    """Record a dispensed kit coming back; a tablet bottle's remaining tablets are counted."""
    with audit_context(actor=returned_by, reason="kit returned"):
        kit = _locked(kit)
        if kit.status != S.DISPENSED:
            raise IllegalKitTransition(_("Only a dispensed kit can be returned."))
        per_kit = int(Site.objects.get(pk=kit.site_id).trial.dosing["tablet"]["tablets_per_kit"])
        if kit.kit_type == KitType.TABLET:
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
    with audit_context(actor=released_by, reason=f"quarantine released: {reason}"):
        kit = _locked(kit)
        return kit_transition(kit=kit, to=S.AT_SITE if kit.site_id else S.IN_DEPOT, status_note=reason)


def kit_destroy(*, kit: Kit, destroyed_by, reason: str) -> Kit:
    with audit_context(actor=destroyed_by, reason=f"kit destroyed: {reason}"):
        kit = _locked(kit)
        return kit_transition(kit=kit, to=S.DAMAGED, status_note=reason)


def kits_expire(*, today: datetime.date | None = None) -> int:
    """Kits past their expiry date (in their site's zone; UTC at the depot) can no longer be
    used. Idempotent."""
    usable = [S.IN_DEPOT, S.SHIPPED, S.AT_SITE, S.ASSIGNED, S.QUARANTINED]
    expired = 0
    with audit_context(reason="kit past its expiry date"):
        candidates = (
            Kit.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("site")
            .filter(status__in=usable, expiry__lt=today or timezone.now().date() + datetime.timedelta(days=1))
        )
        for kit in candidates:
            local_today = today or (_site_today(kit.site) if kit.site else timezone.now().date())
            if kit.expiry < local_today and S.EXPIRED in KIT_TRANSITIONS[kit.status]:
                kit_transition(kit=kit, to=S.EXPIRED)
                expired += 1
    return expired


# --- Kit lists and shipments -------------------------------------------------------------------

KIT_LIST_HEADER = ["kit_number", "kit_type", "content", "lot", "expiry"]
KIT_NUMBER = re.compile(r"^[A-Z0-9][A-Z0-9-]{3,19}$")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def kits_import(*, csv_text: str, imported_by, trial) -> list[Kit]:
    """Import a kit list (header kit_number,kit_type,content,lot,expiry). Every line is checked
    and every error named with its line number; any error imports nothing."""
    types = set((trial.definition.get("kits") or {}).get("types", KitType.values))
    today = timezone.now().date()
    reader = csv.reader(io.StringIO(csv_text.lstrip("\ufeff"), newline=""))
    try:
        rows = list(reader)
    except csv.Error as error:
        raise KitListInvalid(
            [str(_("Line %(line)d: %(problem)s.") % {"line": reader.line_num, "problem": error})]
        ) from None
    errors: list[str] = []
    if not rows or [cell.strip() for cell in rows[0]] != KIT_LIST_HEADER:
        raise KitListInvalid(
            [str(_("Line 1: the header must be exactly: %(header)s") % {"header": ",".join(KIT_LIST_HEADER)})]
        )
    seen: dict[str, int] = {}
    kits: list[Kit] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(KIT_LIST_HEADER):
            errors.append(
                str(_("Line %(line)s: expected 5 columns, found %(count)s.") % {"line": line, "count": len(row)})
            )
            continue
        if any(cell.startswith(FORMULA_START) for cell in row):
            errors.append(
                str(_("Line %(line)s: a cell starts with = + - @ (a spreadsheet formula); refused.") % {"line": line})
            )
            continue
        number, kit_type, content, lot, expiry_text = (cell.strip() for cell in row)
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
        kits.append(
            Kit(kit_number=number, kit_type=kit_type, content=content, lot=lot, expiry=expiry, imported_by=imported_by)
        )
    existing = set(Kit.objects.filter(kit_number__in=seen).values_list("kit_number", flat=True))
    for number in sorted(existing):
        errors.append(
            str(_("Line %(line)s: kit number %(number)s already exists.") % {"line": seen[number], "number": number})
        )
    if not kits and not errors:
        errors.append(str(_("The list has no kits.")))
    if errors:
        raise KitListInvalid(errors)
    with audit_context(actor=imported_by, reason="kit list imported"):
        return Kit.objects.bulk_create(kits)


def shipment_create(*, site, kit_type: str, content: str, quantity: int, shipped_by) -> Shipment:
    """Ship `quantity` depot kits of one type and content to a site, earliest expiry first."""
    if quantity < 1 or quantity > 500:
        raise TrialRuleError(_("Ship between 1 and 500 kits."), field="quantity")
    with audit_context(actor=shipped_by, reason="kits shipped to site"):
        kits = list(
            Kit.objects.select_for_update(skip_locked=True)
            .filter(
                site__isnull=True,
                status=S.IN_DEPOT,
                kit_type=kit_type,
                content=content,
                expiry__gte=timezone.now().date(),
            )
            .order_by("expiry", "kit_number")[:quantity]
        )
        if len(kits) < quantity:
            raise TrialRuleError(
                _("Only %(count)s such kits are in the depot.") % {"count": len(kits)}, field="quantity"
            )
        shipment = Shipment.objects.create(site=site, shipped_by=shipped_by)
        for kit in kits:
            kit_transition(kit=kit, to=S.SHIPPED, site=site, shipment=shipment)
        return shipment


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
