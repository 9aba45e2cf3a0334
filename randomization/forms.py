from django import forms
from django.utils.translation import gettext_lazy as _


class GenerateForm(forms.Form):
    seed = forms.CharField(label=_("Secret seed"), max_length=200, widget=forms.PasswordInput(render_value=True))
    slots_per_stratum = forms.IntegerField(label=_("Slots per stratum"), min_value=1, max_value=100_000)
    reason = forms.CharField(
        label=_("Reason (required for a new version)"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def __init__(self, *args, pre_generates_slots: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if not pre_generates_slots:
            # Minimization: the list is the seed alone; its slots come one per allocation.
            del self.fields["slots_per_stratum"]


class ImportForm(forms.Form):
    csv_file = forms.FileField(label=_("CSV file (stratum,sequence,block,block_size,arm)"))
    reason = forms.CharField(
        label=_("Reason (required for a new version)"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def clean_csv_file(self):
        upload = self.cleaned_data["csv_file"]
        if upload.size > 5 * 1024 * 1024:
            raise forms.ValidationError(_("The file is larger than 5 MB."))
        try:
            return upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise forms.ValidationError(_("The file is not UTF-8 text.")) from None


class PasswordForm(forms.Form):
    password = forms.CharField(label=_("Your password"), widget=forms.PasswordInput)


class UnblindForm(PasswordForm):
    reason = forms.CharField(label=_("Medical reason"), widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)


class SealedSheetOpenedForm(forms.Form):
    sheet_number = forms.IntegerField(label=_("Number of the sheet opened"), min_value=1, max_value=10**6)
    opened_at = forms.DateTimeField(
        label=_("When it was opened (site time)"),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"],
    )
    reason = forms.CharField(label=_("Medical reason"), widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)
    password = forms.CharField(
        label=_("Your password (as for an emergency unblinding)"), widget=forms.PasswordInput, max_length=128
    )


class CodeBreakPrintForm(forms.Form):
    password = forms.CharField(label=_("Your password"), widget=forms.PasswordInput, max_length=128)
