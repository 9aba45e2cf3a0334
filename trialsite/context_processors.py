from django.urls import reverse

from trialsite import access
from trialsite.navigation import NAVIGATION


def navigation(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"navigation": []}
    capabilities = access.capabilities_anywhere(user)
    entries = []
    for label, url_name, capability in NAVIGATION:
        if capability is not None and capability not in capabilities:
            continue
        url = reverse(url_name)
        current = request.path == url or (url != "/" and request.path.startswith(url))
        entries.append({"label": label, "url": url, "current": current})
    return {"navigation": entries, "user_capabilities": capabilities}
