from django import template

from randomization import selectors
from trialsite import access
from trialsite.access import Capability

register = template.Library()


@register.simple_tag(takes_context=True)
def visible_arm(context, participant):
    """The participant's arm for this user, or None: the permission check is in `arm_for`."""
    return selectors.arm_for(context["request"].user, participant)


@register.simple_tag(takes_context=True)
def may(context, capability, participant):
    return access.can(context["request"].user, Capability(capability), participant.site_id)
