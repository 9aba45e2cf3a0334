from django import template
from django.template.base import render_value_in_context
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _

from dosing import selectors
from enrollment.models import ParticipantStatus
from trialsite import access
from trialsite.access import Capability

register = template.Library()


@register.simple_tag(takes_context=True)
def dosing_panel(context, participant) -> dict:
    """The participant's visit plan for the participant page, in a constant number of queries."""
    user = context["request"].user
    visits = list(selectors.visits_for(user, participant))
    # The next due visit (the first still scheduled) gets the primary Record button.
    next_due = next((visit for visit in visits if visit.status == "scheduled"), None)
    may_record = access.can(user, Capability.RECORD_VISITS, participant.site_id)
    return {
        "visits": visits,
        "next_due_id": next_due.pk if next_due else None,
        "may_record": may_record,
        # Only while the participant is in the trial, and only if the protocol allows them.
        "may_add_unscheduled": may_record
        and participant.status == ParticipantStatus.RANDOMIZED
        and participant.site.trial.protocol.schedule.unscheduled.allowed,
    }


@register.filter
def vial_plan_text(vial_plan) -> str:
    """[[400, 1], [200, 1]] -> "1 x 400 mg + 1 x 200 mg"."""
    return " + ".join(f"{count} x {size} mg" for size, count in vial_plan or [])


@register.simple_tag(takes_context=True)
def preparation(context, dose) -> str:
    """How to prepare the infusion of `dose`: identical for every arm, as placebo infusions are
    prepared the same way. Written here rather than as an included template: the pharmacy page
    shows it for up to fifty kits, and the include's three translated blocks were a third of the
    page's rendering. Each value goes through `render_value_in_context`, as `{% blocktranslate
    with %}` sends it (localized, escaped), into the same messages."""

    def shown(value):
        return render_value_in_context(value, context)

    dose_mg, ml, total = shown(dose.dose_mg), shown(dose.concentrate_ml), shown(dose.diluted_volume_ml)
    vials = shown(vial_plan_text(dose.vial_plan))
    infusion = _("Infusion: %(dose)s mg = %(ml)s mL of concentrate (20 mg/mL).") % {"dose": dose_mg, "ml": ml}
    from_kit = _("Vials from the kit: %(vials)s.") % {"vials": vials}
    dilution = _(
        "Withdraw %(ml)s mL from a %(total)s mL bag of sodium chloride 0.9%%, add the %(ml)s mL of concentrate: "
        "%(total)s mL in total."
    ) % {"ml": ml, "total": total}
    return mark_safe(  # noqa: S308 - the messages are ours, the values escaped above
        f'\n<div class="preparation">\n  <strong>{infusion}</strong>\n  <div>{from_kit}</div>\n  <div>{dilution}</div>\n</div>\n'
    )


@register.simple_tag
def reasons_in_words(record, trial) -> list[str]:
    """The safety-gate reasons of a dose or repeat-labs record in the reader's language: taken
    again from its labs with the protocol's gates (stored reasons are in the recorder's
    language); the stored ones when the protocol's gates have changed since."""
    from dosing.dose import infusion_decision

    first_dose = record.first_dose if hasattr(record, "first_dose") else record.visit.dose.first_dose
    decision = infusion_decision(
        first_dose=first_dose,
        neutrophils=record.neutrophils,
        platelets=record.platelets,
        alt_uln=record.alt_uln,
        ast_uln=record.ast_uln,
        rules=trial.protocol.dosing.safety,
    )
    if hasattr(record, "first_dose") and record.visit.repeat_labs.exists():
        # The visit-day labs of a dose decided again later: their own verdict, not the record's.
        return decision.reasons
    return decision.reasons if decision.decision == record.decision else list(record.reasons)
