from django import template

from safety import selectors, services

register = template.Library()


@register.simple_tag(takes_context=True)
def sae_overdue(context):
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return []
    return list(services.sae_overdue(user)[:50])


@register.simple_tag(takes_context=True)
def safety_reports(context):
    """Which of the two safety reports the user may open, for the links to them."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"open": False, "closed": False}
    return {"open": selectors.may_read_open_report(user), "closed": selectors.may_read_closed_report(user)}
