"""Eligibility, decided from recorded answers by the protocol's rules: a pure function."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from django.utils.translation import get_language
from django.utils.translation import gettext as _

from trialsite.protocol_schema import CriterionSpec, EligibilitySpec


@dataclass
class Verdict:
    outcome: str  # "eligible" | "ineligible" | "incomplete"
    reasons: list[dict] = field(default_factory=list)


def age_on(date_of_birth: datetime.date, day: datetime.date) -> int:
    """Completed years on `day`. Someone born on 29 February has their birthday on 1 March in a
    year without one: they are not a year older on 28 February."""
    years = day.year - date_of_birth.year
    if (day.month, day.day) < (date_of_birth.month, date_of_birth.day):
        years -= 1
    return years


def birthday(date_of_birth: datetime.date, years: int) -> datetime.date:
    """The day someone turns `years` old (1 March for a 29 February birth in a common year)."""
    try:
        return date_of_birth.replace(year=date_of_birth.year + years)
    except ValueError:
        return datetime.date(date_of_birth.year + years, 3, 1)


def criterion_text(criterion: CriterionSpec) -> str:
    """The item in the reader's language: the protocol file carries an English and a Chinese text."""
    if (get_language() or "").startswith("zh") and criterion.text_zh:
        return criterion.text_zh
    return criterion.text


def evaluate(
    *,
    eligibility: EligibilitySpec,
    date_of_birth: datetime.date,
    screening_date: datetime.date,
    consent_date: datetime.date | None,
    answers: dict[str, str | None],
) -> Verdict:
    """The verdict in words. Unanswered items make it "incomplete" (never eligible); otherwise every
    failed rule is a reason, in protocol order: age, consent, then the criteria as listed."""
    rules = eligibility
    reasons, unanswered = [], []
    age = age_on(date_of_birth, screening_date)
    # "20 to 70 years inclusive": from the 20th birthday up to and including the 70th birthday;
    # the day after the 70th birthday is past 70.
    too_young = screening_date < birthday(date_of_birth, rules.minimum_age_years)
    too_old = screening_date > birthday(date_of_birth, rules.maximum_age_years)
    if too_young or too_old:
        reasons.append(
            {
                "code": "AGE",
                "text": _("Age %(age)d on the screening date is outside %(low)d to %(high)d years")
                % {"age": age, "low": rules.minimum_age_years, "high": rules.maximum_age_years},
            }
        )
    if consent_date is None or consent_date > screening_date:
        reasons.append({"code": "CONSENT", "text": _("Written consent is not dated on or before the screening date")})
    for criterion in rules.criteria:
        answer = answers.get(criterion.code)
        if answer not in ("yes", "no"):
            unanswered.append(
                {"code": criterion.code, "text": _("Not answered: %(text)s") % {"text": criterion_text(criterion)}}
            )
        elif criterion.kind == "inclusion" and answer != "yes":
            reasons.append(
                {
                    "code": criterion.code,
                    "text": _("Inclusion not met: %(text)s") % {"text": criterion_text(criterion)},
                }
            )
        elif criterion.kind == "exclusion" and answer != "no":
            reasons.append(
                {
                    "code": criterion.code,
                    "text": _("Exclusion applies: %(text)s") % {"text": criterion_text(criterion)},
                }
            )
    if unanswered:
        return Verdict("incomplete", unanswered + reasons)
    if reasons:
        return Verdict("ineligible", reasons)
    return Verdict("eligible", [])
