from django import template

from dosing import selectors
from trialsite import access
from trialsite.access import Capability

register = template.Library()


@register.simple_tag(takes_context=True)
def dosing_panel(context, participant) -> dict:
    """The participant's visit plan for the participant page, in a constant number of queries."""
    user = context["request"].user
    return {
        "visits": list(selectors.visits_for(user, participant)),
        "may_record": access.can(user, Capability.RECORD_VISITS, participant.site_id),
    }


@register.filter
def vial_plan_text(vial_plan) -> str:
    """[[400, 1], [200, 1]] -> "1 x 400 mg + 1 x 200 mg"."""
    return " + ".join(f"{count} x {size} mg" for size, count in vial_plan or [])
