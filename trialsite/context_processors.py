from django.urls import reverse

from trialsite import access
from trialsite.navigation import NAVIGATION


def navigation(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"navigation": []}
    capabilities = access.capabilities_anywhere(user)
    entries = []
    for label, url_name, shown_to in NAVIGATION:
        if callable(shown_to):
            if not shown_to(user):
                continue
        elif shown_to is not None and shown_to not in capabilities:
            continue
        entries.append({"label": label, "url": reverse(url_name), "current": False})
    # One entry is current: the one whose address is the longest start of this page's
    # (/screening/new/ is "Screen a patient", not also the screening log at /screening/).
    matching = [
        entry
        for entry in entries
        if request.path == entry["url"] or (entry["url"] != "/" and request.path.startswith(entry["url"]))
    ]
    if matching:
        max(matching, key=lambda entry: len(entry["url"]))["current"] = True
    from trialsite import tenancy

    return {
        "navigation": entries,
        "user_capabilities": capabilities,
        "current_trial": tenancy.current_trial(),
        "works_in_several_trials": len(tenancy.trial_ids_of(user)) > 1,
    }
