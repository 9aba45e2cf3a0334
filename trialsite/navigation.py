"""The menu: (label, url name, who sees it). Who sees it is a capability, None (everyone), or a
function of the user for a page whose rule is more than one capability: the entry is shown
exactly when the page would open. Each capability's pages add a line."""

from django.utils.translation import gettext_lazy as _

from trialsite import access
from trialsite.access import Capability


def _reads_open_safety_report_outside_reports(user) -> bool:
    """Whoever has the Reports page finds the safety reports there (the PI's menu is full at
    1280 px); the others, the coordinator and the DSMB member among them, find it here."""
    from safety import selectors

    return selectors.may_read_open_report(user) and not access.can(user, Capability.EXPORT_REPORTS)


def _reads_closed_safety_report(user) -> bool:
    from safety import selectors

    return selectors.may_read_closed_report(user)


NAVIGATION = [
    (_("Home"), "home", None),
    (_("Screen a patient"), "screening-new", Capability.SCREEN),
    (_("Screening log"), "screening-log", Capability.VIEW_PARTICIPANTS),
    (_("Participants"), "participant-list", Capability.VIEW_PARTICIPANTS),
    (_("Waiting for my signature"), "signature-queue", Capability.SIGN_ELIGIBILITY),
    (_("Audit trail"), "audit-trail", Capability.READ_AUDIT),
    (_("Reports"), "reports", Capability.EXPORT_REPORTS),
    (_("Pharmacy"), "pharmacy", Capability.DISPENSE),
    (_("Kit supply"), "supply", Capability.MANAGE_SUPPLY),
    (_("Reminders"), "reminder-list", Capability.VIEW_PARTICIPANTS),
    (_("Randomization lists"), "randomization-lists", Capability.MANAGE_RANDOMIZATION),
    (_("Safety"), "safety-report", _reads_open_safety_report_outside_reports),
    # Never for a blinded role: only whoever may view allocation at every site the report covers.
    (_("Closed safety report"), "safety-closed-report", _reads_closed_safety_report),
    (_("SUSARs"), "susar-list", Capability.ASSESS_SAE),
]
