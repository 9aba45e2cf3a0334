"""The menu: (label, url name, capability needed or None). Each capability's pages add a line."""

from django.utils.translation import gettext_lazy as _

from trialsite.access import Capability

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
]
