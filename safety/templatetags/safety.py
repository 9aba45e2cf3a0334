from django import template

from safety import services

register = template.Library()


@register.simple_tag(takes_context=True)
def sae_overdue(context):
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return []
    return list(services.sae_overdue(user)[:50])
