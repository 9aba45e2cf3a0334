from django import forms
from django.utils.translation import gettext_lazy as _

from dosing.models import KitContent, KitType
from trialsite.forms import DateField


class VisitRecordForm(forms.Form):
    actual_date = DateField(label=_("Visit date"))
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
    returned_on = DateField(label=_("Return date"))
    tablets_returned = forms.IntegerField(label=_("Tablets returned"), min_value=0, max_value=1000, required=False)


class ExcursionForm(forms.Form):
    description = forms.CharField(label=_("Temperature excursion (temperature, duration)"), max_length=500)


class QuarantineDecisionForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), max_length=500)


class KitImportForm(forms.Form):
    file = forms.FileField(label=_("Kit list (CSV: kit_number,kit_type,content,lot,expiry,packaging_lot)"))


class ShipmentForm(forms.Form):
    """Kits of each content per kit type: a shipment always carries every content alike."""

    site = forms.ModelChoiceField(label=_("Site"), queryset=None)

    def __init__(self, *args, sites, kit_types, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["site"].queryset = sites
        for kit_type in kit_types:
            self.fields[f"per_content_{kit_type}"] = forms.IntegerField(
                label=_("%(type)s kits of each content") % {"type": KitType(kit_type).label},
                min_value=0,
                max_value=250,
                initial=0,
            )

    def per_content(self) -> dict[str, int]:
        return {
            name.removeprefix("per_content_"): value
            for name, value in self.cleaned_data.items()
            if name.startswith("per_content_")
        }


class KitListGenerateForm(forms.Form):
    """A packaging lot's kit list generated here: one manufacturing lot and true expiry for each
    kit type and content; the label shows the earliest expiry of the packaging lot."""

    packaging_lot = forms.CharField(label=_("Packaging lot (printed on every label)"), max_length=40)
    kits_per_type = forms.IntegerField(label=_("Kits of each type"), min_value=1, max_value=5000)
    seed = forms.CharField(
        label=_("Seed (leave empty for a new secret one)"), max_length=200, required=False, strip=True
    )

    def __init__(self, *args, kit_types, **kwargs):
        super().__init__(*args, **kwargs)
        for kit_type in kit_types:
            for content in KitContent.values:
                label = {"type": KitType(kit_type).label, "content": KitContent(content).label}
                self.fields[f"lot_{kit_type}_{content}"] = forms.CharField(
                    label=_("%(type)s, %(content)s: manufacturing lot") % label, max_length=40
                )
                self.fields[f"expiry_{kit_type}_{content}"] = DateField(
                    label=_("%(type)s, %(content)s: expiry") % label
                )

    def lots(self) -> dict[tuple[str, str], tuple]:
        data = self.cleaned_data
        return {
            (name.split("_")[1], name.split("_")[2]): (value, data[name.replace("lot_", "expiry_", 1)])
            for name, value in data.items()
            if name.startswith("lot_")
        }
