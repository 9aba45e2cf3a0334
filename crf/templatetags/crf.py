from django import template

from crf import selectors
from trialsite import access
from trialsite.access import Capability

register = template.Library()


@register.simple_tag(takes_context=True)
def crf_panel(context, participant) -> dict:
    """The participant's forms with their status, for the participant page."""
    user = context["request"].user
    return {
        "forms": selectors.participant_forms(participant),
        "may_record": access.can(user, Capability.RECORD_VISITS, participant.site_id),
    }
