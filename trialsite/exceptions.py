"""Named refusals of trial rules. Each carries the message a user reads and, where one input
caused it, the field to show it at; web forms and the API render them the same way."""

from django.utils.translation import gettext_lazy as _


class TrialRuleError(Exception):
    default_message = _("The action is not allowed.")
    # HTTP status the API answers with.
    status_code = 400

    def __init__(self, message=None, *, field: str | None = None):
        self.message = message or self.default_message
        self.field = field
        super().__init__(str(self.message))

    def as_dict(self) -> dict[str, list[str]]:
        return {self.field or "non_field_errors": [str(self.message)]}


class ReasonRequired(TrialRuleError):
    default_message = _("A reason is required to change a saved clinical value.")

    def __init__(self, message=None, *, field: str | None = "reason"):
        super().__init__(message, field=field)


class PasswordIncorrect(TrialRuleError):
    default_message = _("The password is not correct.")
    status_code = 403

    def __init__(self, message=None, *, field: str | None = "password"):
        super().__init__(message, field=field)


class Conflict(TrialRuleError):
    status_code = 409


class TokenIncorrect(TrialRuleError):
    default_message = _("The code is not correct (or came too late). Enter the 6 digits your app shows now.")
    status_code = 403

    def __init__(self, message=None, *, field: str | None = "token"):
        super().__init__(message, field=field)


class TwoFactorRequired(TrialRuleError):
    default_message = _(
        "This needs a session verified with your two-factor code: log in on the web and enter the code first."
    )
    status_code = 403


class TokenNeedsSecondFactor(TrialRuleError):
    """An API token for someone who can see an arm is made only from a session verified with
    the two-factor code (a token is never asked for the code again)."""

    default_message = _(
        "Your role can reveal allocations, so an API token needs a session verified with your "
        "two-factor code: enter your code first."
    )
    status_code = 403


class TokenNeedsSecondFactorSetUp(TokenNeedsSecondFactor):
    default_message = _(
        "Your role can reveal allocations, so an API token needs two-factor authentication: "
        "set up an authenticator app at /accounts/two-factor/ first."
    )


class TokenNeedsSession(TrialRuleError):
    default_message = _("API tokens are made and revoked from a logged-in session, not with a token.")
    status_code = 403
