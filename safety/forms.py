from django import forms
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from safety.ctcae import TERMS
from safety.models import Action, Outcome, Relation, Seriousness, SusarAssessment


def term_choices():
    chinese = (get_language() or "").startswith("zh")
    return [("", "—")] + [(code, term.term_zh if chinese else term.term) for code, term in TERMS.items()]


def _blank(choices):
    return [("", "—"), *choices]


class EpisodeForm(forms.Form):
    """What a grade episode says: shared by a new event and a grade change."""

    grade = forms.TypedChoiceField(
        label=_("CTCAE grade"), coerce=int, choices=[(grade, str(grade)) for grade in range(1, 6)]
    )
    onset_date = forms.DateField(label=_("Onset date"), widget=forms.DateInput(attrs={"type": "date"}))
    serious = forms.BooleanField(label=_("Serious"), required=False)
    seriousness = forms.MultipleChoiceField(
        label=_("Seriousness criteria"),
        choices=Seriousness.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    awareness_at = forms.DateTimeField(
        label=_("Site aware of seriousness at"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    relation_infusion = forms.ChoiceField(
        label=_("Relation to the study infusion"), choices=_blank(Relation.choices), required=False
    )
    relation_tablets = forms.ChoiceField(
        label=_("Relation to the study tablets"), choices=_blank(Relation.choices), required=False
    )
    action_infusion = forms.ChoiceField(
        label=_("Action taken with the study infusion"), choices=_blank(Action.choices), required=False
    )
    action_tablets = forms.ChoiceField(
        label=_("Action taken with the study tablets"), choices=_blank(Action.choices), required=False
    )
    outcome = forms.ChoiceField(label=_("Outcome"), choices=Outcome.choices, initial=Outcome.NOT_RECOVERED)
    died_on = forms.DateField(
        label=_("Date of death (grade 5)"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    death_cause = forms.CharField(
        label=_("Cause of death (grade 5)"), required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )

    def clean_awareness_at(self):
        value = self.cleaned_data.get("awareness_at")
        if value is not None and timezone.is_naive(value):
            value = timezone.make_aware(value)
        return value


class AdverseEventForm(EpisodeForm):
    term = forms.ChoiceField(label=_("CTCAE term"), choices=())
    term_text = forms.CharField(label=_("Term in words (for Other, specify)"), max_length=200, required=False)

    field_order = ["term", "term_text"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["term"].choices = term_choices()
        self.order_fields(self.field_order)


class ResolveForm(forms.Form):
    resolution_date = forms.DateField(label=_("Resolution date"), widget=forms.DateInput(attrs={"type": "date"}))
    outcome = forms.ChoiceField(
        label=_("Outcome"),
        # A death is not a resolution: it is a grade 5 episode with its date and cause.
        choices=[(value, label) for value, label in Outcome.choices if value in ("recovered", "sequelae")],
    )


class SaeReportForm(forms.Form):
    narrative = forms.CharField(
        label=_("Narrative"), widget=forms.Textarea(attrs={"rows": 5}), max_length=20000, required=False
    )
    complete = forms.BooleanField(label=_("The report is complete"), required=False)


class SaeSignForm(forms.Form):
    password = forms.CharField(label=_("Your password"), widget=forms.PasswordInput, max_length=200)


class SusarAssessForm(forms.Form):
    related = forms.TypedChoiceField(
        label=_("Related to the study treatment (sponsor's judgement)"),
        choices=[("yes", _("Related")), ("no", _("Not related"))],
        coerce=lambda value: value == "yes",
    )
    expectedness = forms.ChoiceField(label=_("Expectedness"), choices=SusarAssessment.Expectedness.choices)
    reference = forms.CharField(
        label=_("Reference safety information"),
        help_text=_("The document and version the expectedness was judged against."),
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=2000,
    )


class SusarReportForm(forms.Form):
    report_reference = forms.CharField(label=_("Expedited report reference"), max_length=200)
