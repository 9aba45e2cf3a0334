from django import forms
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from enrollment.models import Answer, Sex
from trialsite.forms import DateField


class ScreeningForm(forms.Form):
    initials = forms.CharField(label=_("Initials"), max_length=4)
    date_of_birth = DateField(label=_("Date of birth"))
    # No default: a preselected sex is recorded unread when the coordinator skips the field.
    sex = forms.ChoiceField(label=_("Sex"), choices=[("", _("Choose…")), *Sex.choices])
    hospital_record_number = forms.CharField(label=_("Hospital record number"), max_length=40)
    screening_date = DateField(label=_("Screening date"))
    consent_version = forms.CharField(label=_("Consent version"), max_length=40)
    consent_date = DateField(label=_("Consent date"))

    def __init__(self, *args, trial, sites=(), **kwargs):
        super().__init__(*args, **kwargs)
        chinese = (get_language() or "").startswith("zh")
        if len(sites) > 1:
            self.fields["site"] = forms.ChoiceField(
                label=_("Site"),
                choices=[("", _("Choose…"))] + [(site.code, f"{site.code} · {site.local_name}") for site in sites],
            )
            self.order_fields(["site"])
        self.criteria = trial.protocol.eligibility.criteria
        for criterion in self.criteria:
            label = criterion.text_zh if chinese and criterion.text_zh else criterion.text
            # No default: an item left unanswered makes the screening incomplete, never eligible.
            self.fields[f"answer_{criterion.code}"] = forms.ChoiceField(
                label=f"{criterion.code} · {label}",
                choices=Answer.choices,
                widget=forms.RadioSelect,
                required=False,
            )
        for factor in trial.protocol.randomization.factors:
            self.fields[f"stratification_{factor.code}"] = forms.ChoiceField(
                label=factor.label_zh if chinese and factor.label_zh else factor.label,
                choices=[(level, level) for level in factor.levels],
            )

    def answers(self) -> dict:
        return {c.code: self.cleaned_data.get(f"answer_{c.code}") or None for c in self.criteria}

    def stratification(self) -> dict:
        return {
            name.removeprefix("stratification_"): value
            for name, value in self.cleaned_data.items()
            if name.startswith("stratification_")
        }

    def identifiers(self) -> dict:
        return {
            name: self.cleaned_data[name]
            for name in ("initials", "date_of_birth", "sex", "hospital_record_number", "screening_date")
        }


class RescreenForm(ScreeningForm):
    reason = forms.CharField(
        label=_("Reason for the change"), required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )


class SignForm(forms.Form):
    password = forms.CharField(label=_("Your password"), widget=forms.PasswordInput)


class WithdrawForm(forms.Form):
    withdrawn_on = DateField(label=_("Withdrawal date"))
    reason = forms.CharField(
        label=_("Reason for withdrawal"), max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )
