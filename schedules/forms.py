from django import forms
from django.utils.translation import gettext_lazy as _

from trialsite.forms import DateField


class UnscheduledVisitForm(forms.Form):
    visit_date = DateField(label=_("Visit date"))
    reason = forms.CharField(
        label=_("Reason for the unscheduled visit"), widget=forms.Textarea(attrs={"rows": 2}), max_length=2000
    )
