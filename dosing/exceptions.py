"""Named refusals of the dosing and pharmacy rules. Messages never name an arm or a content."""

from django.utils.translation import gettext_lazy as _

from safety.open_events import event_in_words
from trialsite.exceptions import Conflict, TrialRuleError


class VisitNotOpen(TrialRuleError):
    default_message = _("This visit is no longer open for recording.")


class OutOfWindowReasonRequired(TrialRuleError):
    default_message = _("The visit date is outside the window: give a reason (it is recorded as a deviation).")

    def __init__(self, message=None, *, field: str | None = "out_of_window_reason"):
        super().__init__(message, field=field)


class WeightOutOfBounds(TrialRuleError):
    default_message = _("The body weight must be above 0 kg and at most 250 kg.")

    def __init__(self, message=None, *, field: str | None = "weight_kg"):
        super().__init__(message, field=field)


class VialPlanImpossible(TrialRuleError):
    """No combination of the protocol's vials can prepare the dose: a protocol or input error,
    answered as a refusal at the weight field rather than a server error."""

    default_message = _("No combination of the protocol's vial sizes can prepare this dose.")

    def __init__(self, message=None, *, field: str | None = "weight_kg"):
        super().__init__(message, field=field)


class TreatmentStopped(TrialRuleError):
    default_message = _("Treatment was stopped for this participant; no further dose can be prepared.")


class IllegalKitTransition(Conflict):
    default_message = _("This kit cannot change to that status.")


class NoKitAvailable(TrialRuleError):
    default_message = _("No kit available; the supply manager has been notified.")
    status_code = 409


class LabelMismatch(TrialRuleError):
    default_message = _("The number on the label does not match the assigned kit. Do not dispense this kit.")

    def __init__(self, message=None, *, field: str | None = "label_number"):
        super().__init__(message, field=field)


class KitListInvalid(TrialRuleError):
    """A kit list with errors; `errors` holds one message per bad line."""

    default_message = _("The kit list has errors; nothing was imported.")

    def __init__(self, errors: list[str], *, field: str | None = "file"):
        self.errors = errors
        super().__init__(self.default_message, field=field)

    def as_dict(self) -> dict[str, list[str]]:
        return {self.field or "non_field_errors": [str(self.message), *[str(e) for e in self.errors]]}


class VisitDateInvalid(TrialRuleError):
    def __init__(self, message=None, *, field: str | None = "actual_date"):
        super().__init__(message, field=field)


class DosingValueRequired(TrialRuleError):
    default_message = _("Weight and the pre-infusion labs are required at a dosing visit.")


class DoseInputInvalid(TrialRuleError):
    """A weight or lab value the case report form it is saved on refuses (its range), at the
    dosing visit's field."""

    default_message = _("This value is not accepted by the case report form.")


class NotRandomized(TrialRuleError):
    default_message = _("The participant is not randomized.")


class KitReturnInvalid(TrialRuleError):
    pass


class RepeatLabsNotOpen(TrialRuleError):
    default_message = _(
        "Repeat labs are recorded only at a dosing visit whose infusion was held, while its window is open."
    )


class OpenAdverseEventsNotConfirmed(TrialRuleError):
    """A dose would be given while the participant has an ongoing grade 3+ adverse event of
    special interest: the coordinator confirms the investigator's review first. The events are
    named by number, term and grade (blinded words: an event is not arm data)."""

    def __init__(self, events, *, field: str | None = "confirm_open_adverse_events"):
        message = _(
            "The participant has open grade 3+ adverse event(s) of special interest: %(events)s. Review them with "
            "the investigator and confirm before dosing."
        ) % {"events": "; ".join(event_in_words(event) for event in events)}
        super().__init__(message, field=field)
