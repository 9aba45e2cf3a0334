import datetime

from django import forms
from django.utils.translation import gettext_lazy as _

ISO_DATE = "%Y-%m-%d"


class DateInput(forms.DateInput):
    """The browser's date picker: its value is always ISO (1980-01-01), whatever the language.

    Without a fixed format Django writes the value in the language's first input format
    (1980/01/01 in Chinese), which a date input rejects and shows as empty."""

    input_type = "date"

    def __init__(self, attrs=None, format=None):
        super().__init__(attrs, format=ISO_DATE)


class DateField(forms.DateField):
    """Every date of every form: the ISO picker, and ISO read first in either language."""

    widget = DateInput

    def to_python(self, value):
        # The language's input formats are read lazily at each request; ISO comes first here.
        if isinstance(value, str):
            try:
                return datetime.datetime.strptime(value.strip(), ISO_DATE).date()
            except ValueError:
                pass
        return super().to_python(value)


class TwoFactorTokenForm(forms.Form):
    token = forms.RegexField(
        label=_("6-digit code"),
        regex=r"^\s*\d{6}\s*$",
        max_length=12,
        error_messages={"invalid": _("Enter the 6 digits your authenticator app shows.")},
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )


class TwoFactorRemoveForm(forms.Form):
    password = forms.CharField(label=_("Your password"), widget=forms.PasswordInput, max_length=200)


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        label=_("What it is for"),
        max_length=100,
        required=False,
        help_text=_("For example the script or machine that will use it."),
    )
