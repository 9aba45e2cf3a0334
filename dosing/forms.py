from django import forms
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from dosing.kit_types import kit_type_label
from dosing.labs import CountUnit, count_per_mm3
from dosing.models import KitContent
from trialsite.exceptions import TrialRuleError
from trialsite.forms import DateField


def _unit_field():
    return forms.ChoiceField(
        label=_("Unit on the lab report"), choices=CountUnit.choices, required=False, widget=forms.RadioSelect
    )


def _count_field(label):
    # Up to 3 decimals: 3.456 x10^9/L is a whole 3,456 /mm3. labs.count_per_mm3 decides the rest.
    return forms.DecimalField(label=label, min_value=0, max_digits=12, decimal_places=3, required=False)


class LabCountsForm(forms.Form):
    """Neutrophils and platelets in the unit the lab report uses, cleaned to whole cells per
    mm³ (the stored unit) by the same function the API uses; the unit choices leave
    `cleaned_data`, so the cleaned data is what the services take."""

    neutrophils = _count_field(_("Neutrophils"))
    neutrophils_unit = _unit_field()
    platelets = _count_field(_("Platelets"))
    platelets_unit = _unit_field()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Chinese lab reports count in x10^9/L.
        default = CountUnit.GIGA_PER_L if (get_language() or "").startswith("zh") else CountUnit.PER_MM3
        for name in ("neutrophils_unit", "platelets_unit"):
            if name in self.fields:
                self.fields[name].initial = default

    def clean(self):
        cleaned = super().clean()
        for name in ("neutrophils", "platelets"):
            unit = cleaned.pop(f"{name}_unit", None)
            if name not in self.fields or cleaned.get(name) is None:
                continue
            try:
                cleaned[name] = count_per_mm3(cleaned[name], unit, field=name)
            except TrialRuleError as error:
                self.add_error(error.field if error.field in self.fields else name, str(error.message))
                cleaned.pop(name, None)
        return cleaned


class VisitRecordForm(LabCountsForm):
    field_order = [
        "actual_date",
        "weight_kg",
        "neutrophils",
        "neutrophils_unit",
        "platelets",
        "platelets_unit",
        "alt_uln",
        "ast_uln",
        "out_of_window_reason",
        "confirm_open_adverse_events",
    ]
    actual_date = DateField(label=_("Visit date"))
    weight_kg = forms.DecimalField(label=_("Body weight (kg)"), max_digits=5, decimal_places=1, required=False)
    alt_uln = forms.DecimalField(label=_("ALT (x ULN)"), min_value=0, max_digits=5, decimal_places=2, required=False)
    ast_uln = forms.DecimalField(label=_("AST (x ULN)"), min_value=0, max_digits=5, decimal_places=2, required=False)
    out_of_window_reason = forms.CharField(
        label=_("Reason, if the visit is outside its window"),
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        max_length=2000,
    )

    # Shown only while the participant has an ongoing grade 3+ adverse event of special interest.
    confirm_open_adverse_events = forms.BooleanField(
        label=_(
            "I have reviewed the open grade 3+ adverse event(s) of special interest with the investigator and "
            "dosing goes ahead"
        ),
        required=False,
    )

    def __init__(self, *args, dosing: bool, on_forms: dict | None = None, review: bool = False, **kwargs):
        """`on_forms`: the dose's inputs already saved on the case report forms (field -> value):
        prefilled, and not required, since the dose reads them from the forms. `review`: the
        participant has an ongoing grade 3+ adverse event of special interest (the confirmation is
        asked; the service decides whether the dose needs it)."""
        super().__init__(*args, **kwargs)
        if not (dosing and review):
            del self.fields["confirm_open_adverse_events"]
        if not dosing:
            for name in ("neutrophils", "neutrophils_unit", "platelets", "platelets_unit", "alt_uln", "ast_uln"):
                del self.fields[name]
        else:
            for name in ("weight_kg", "neutrophils", "platelets", "alt_uln", "ast_uln"):
                saved = (on_forms or {}).get(name)
                self.fields[name].required = saved is None
                if saved is not None:
                    self.fields[name].initial = saved
                    if f"{name}_unit" in self.fields:
                        # The forms hold counts per mm³, whatever unit the reader's lab reports use.
                        self.fields[f"{name}_unit"].initial = CountUnit.PER_MM3


class RepeatLabsForm(LabCountsForm):
    """Labs repeated after a held infusion, within the visit's window."""

    field_order = ["measured_on", "neutrophils", "neutrophils_unit", "platelets", "platelets_unit"]
    measured_on = DateField(label=_("Date of the repeat labs"))
    alt_uln = forms.DecimalField(label=_("ALT (x ULN)"), min_value=0, max_digits=5, decimal_places=2)
    ast_uln = forms.DecimalField(label=_("AST (x ULN)"), min_value=0, max_digits=5, decimal_places=2)
    confirm_open_adverse_events = VisitRecordForm.base_fields["confirm_open_adverse_events"]

    def __init__(self, *args, review: bool = False, **kwargs):
        """`review`: as VisitRecordForm's (labs that recover turn the hold into a dose)."""
        super().__init__(*args, **kwargs)
        if not review:
            del self.fields["confirm_open_adverse_events"]
        self.fields["neutrophils"].required = True
        self.fields["platelets"].required = True


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

    def __init__(self, *args, sites, trial, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["site"].queryset = sites
        for kit_type in trial.protocol.kit_types:
            self.fields[f"per_content_{kit_type}"] = forms.IntegerField(
                label=_("%(type)s kits of each content") % {"type": kit_type_label(trial, kit_type)},
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

    def __init__(self, *args, trial, **kwargs):
        from dosing.services import kit_contents_by_type

        super().__init__(*args, **kwargs)
        contents_by_type = kit_contents_by_type(trial)
        for kit_type in trial.protocol.kit_types:
            for content in sorted(contents_by_type.get(kit_type, ())):
                label = {"type": kit_type_label(trial, kit_type), "content": KitContent(content).label}
                self.fields[f"lot_{kit_type}_{content}"] = forms.CharField(
                    label=_("%(type)s, %(content)s: manufacturing lot") % label, max_length=40
                )
                self.fields[f"expiry_{kit_type}_{content}"] = DateField(
                    label=_("%(type)s, %(content)s: expiry") % label
                )

    def lots(self) -> dict[tuple[str, str], tuple]:
        data = self.cleaned_data
        return {
            tuple(name.removeprefix("lot_").rsplit("_", 1)): (value, data[name.replace("lot_", "expiry_", 1)])
            for name, value in data.items()
            if name.startswith("lot_")
        }
