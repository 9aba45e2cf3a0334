# ruff: noqa: RUF001, RUF002 -- the multiplication sign is how lab reports write ten to the ninth per litre
"""Blood counts as lab reports give them. Chinese reports count cells in ×10⁹/L, others in /mm³;
the trial stores one canonical unit, whole cells per mm³ (the unit of the protocol's gates).
1 ×10⁹/L = 10⁹ cells per 10⁶ mm³ = 1,000 /mm³: pint does the arithmetic from the units' own
definitions, so no hand-written factor can be wrong."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import pint
from django.db import models
from django.utils.translation import gettext_lazy as _

from trialsite.exceptions import TrialRuleError

_units = pint.UnitRegistry(non_int_type=Decimal)
_units.define("per_cubic_millimetre = 1 / millimeter ** 3")
_units.define("giga_per_litre = 1e9 / liter")

# Whole cells per mm³ at most: the form and API limits in the canonical unit.
MAXIMUM = {"neutrophils": 10**6, "platelets": 10**7}


class CountUnit(models.TextChoices):
    PER_MM3 = "per_mm3", _("/mm³")
    GIGA_PER_L = "1e9_per_l", _("×10⁹/L")


_PINT_NAMES = {CountUnit.PER_MM3: "per_cubic_millimetre", CountUnit.GIGA_PER_L: "giga_per_litre"}


class LabValueInvalid(TrialRuleError):
    default_message = _("Enter the count as the lab report gives it.")


def count_per_mm3(value, unit: str | None, *, field: str) -> int:
    """The count `value`, read in `unit` (/mm³ when not given), as whole cells per mm³.

    Refused at `field` when it is not a number, negative, finer than a whole cell per mm³
    (3.5 ×10⁹/L is 3,500 /mm³; 3.5 /mm³ is not a count), or beyond the field's maximum."""
    unit = unit or CountUnit.PER_MM3
    if unit not in _PINT_NAMES:
        raise LabValueInvalid(
            _("Choose the unit of the lab report: %(units)s.") % {"units": ", ".join(map(str, CountUnit.labels))},
            field=f"{field}_unit",
        )
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        raise LabValueInvalid(_("Enter a number."), field=field) from None
    if not number.is_finite() or number < 0:
        raise LabValueInvalid(_("Enter a number of 0 or more."), field=field)
    canonical = _units.Quantity(number, _PINT_NAMES[unit]).to("per_cubic_millimetre").magnitude
    whole = canonical.quantize(Decimal(1), rounding=ROUND_HALF_UP)
    if whole != canonical:
        if unit == CountUnit.PER_MM3:
            raise LabValueInvalid(_("A count per mm³ is a whole number."), field=field)
        raise LabValueInvalid(
            _("%(value)s ×10⁹/L is %(canonical)s /mm³, not a whole count: give at most 3 decimals.")
            % {"value": number, "canonical": canonical.normalize()},
            field=field,
        )
    maximum = MAXIMUM.get(field)
    if maximum is not None and whole > maximum:
        raise LabValueInvalid(
            _("At most %(maximum)s /mm³ (%(giga)s ×10⁹/L).") % {"maximum": f"{maximum:,}", "giga": maximum // 1000},
            field=field,
        )
    return int(whole)
