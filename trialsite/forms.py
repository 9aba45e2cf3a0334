from django import forms
from django.utils.translation import gettext_lazy as _


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
