from django import forms
from django.utils.translation import gettext_lazy as _

from dosing.models import KitContent, KitType


class VisitRecordForm(forms.Form):
    actual_date = forms.DateField(label=_("Visit date"), widget=forms.DateInput(attrs={"type": "date"}))
    weight_kg = forms.DecimalField(label=_("Body weight (kg)"), max_digits=5, decimal_places=1, required=False)
    neutrophils = forms.IntegerField(label=_("Neutrophils (/mm³)"), min_value=0, max_value=10**6, required=False)
    platelets = forms.IntegerField(label=_("Platelets (/mm³)"), min_value=0, max_value=10**7, required=False)
    alt_uln = forms.DecimalField(label=_("ALT (x ULN)"), min_value=0, max_digits=5, decimal_places=2, required=False)
    ast_uln = forms.DecimalField(label=_("AST (x ULN)"), min_value=0, max_digits=5, decimal_places=2, required=False)
    out_of_window_reason = forms.CharField(
        label=_("Reason, if the visit is outside its window"),
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        max_length=2000,
    )

    def __init__(self, *args, dosing: bool, **kwargs):
        super().__init__(*args, **kwargs)
        if not dosing:
            for name in ("neutrophils", "platelets", "alt_uln", "ast_uln"):
                del self.fields[name]
        else:
            for name in ("weight_kg", "neutrophils", "platelets", "alt_uln", "ast_uln"):
                self.fields[name].required = True


class DispenseForm(forms.Form):
    label_number = forms.CharField(label=_("Kit number read off the label"), max_length=40)


class ReturnForm(forms.Form):
    returned_on = forms.DateField(label=_("Return date"), widget=forms.DateInput(attrs={"type": "date"}))
    tablets_returned = forms.IntegerField(label=_("Tablets returned"), min_value=0, max_value=1000, required=False)


class ExcursionForm(forms.Form):
    description = forms.CharField(label=_("Temperature excursion (temperature, duration)"), max_length=500)


class QuarantineDecisionForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), max_length=500)


class KitImportForm(forms.Form):
    file = forms.FileField(label=_("Kit list (CSV: kit_number,kit_type,content,lot,expiry)"))


class ShipmentForm(forms.Form):
    site = forms.ModelChoiceField(label=_("Site"), queryset=None)
    kit_type = forms.ChoiceField(label=_("Kit type"), choices=KitType.choices)
    content = forms.ChoiceField(label=_("Content"), choices=KitContent.choices)
    quantity = forms.IntegerField(label=_("Number of kits"), min_value=1, max_value=500)

    def __init__(self, *args, sites, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["site"].queryset = sites
