from django.utils.translation import gettext_lazy as _

from trialsite.exceptions import TrialRuleError


class UnscheduledVisitsNotAllowed(TrialRuleError):
    default_message = _("This trial's protocol does not allow unscheduled visits.")


class UnscheduledVisitNotPossible(TrialRuleError):
    default_message = _("Only a randomized participant still in the trial can have an unscheduled visit.")


class UnscheduledVisitDateInvalid(TrialRuleError):
    default_message = _("An unscheduled visit cannot be before randomization.")

    def __init__(self, message=None, *, field: str | None = "visit_date"):
        super().__init__(message, field=field)
