"""An item's value: read from a web form (text) or an API body (JSON), checked against the item's
type, range and code list, and stored as JSON; read back as a Python value for code."""

from __future__ import annotations

import datetime
from decimal import Decimal, InvalidOperation

from django.utils.translation import get_language
from django.utils.translation import gettext as _

from trialsite.protocol_schema import CodeListSpec, ItemSpec

YES = ("yes", "true", "1", "y")
NO = ("no", "false", "0", "n")


class ItemValueError(ValueError):
    """The message a user reads at the item."""


def in_language(english: str, chinese: str | None) -> str:
    """A protocol text in the reader's language: its Chinese twin for a Chinese reader."""
    return chinese if chinese and (get_language() or "").startswith("zh") else english


def label(item: ItemSpec) -> str:
    return in_language(item.label, item.label_zh)


def unit(item: ItemSpec) -> str:
    return in_language(item.unit or "", item.unit_zh)


def _empty(raw) -> bool:
    return raw is None or (isinstance(raw, str) and not raw.strip())


def normalise(item: ItemSpec, raw, code_list: CodeListSpec | None):
    """The stored (JSON) value of `raw` for `item`, None when empty; ItemValueError otherwise."""
    if _empty(raw):
        return None
    if item.type == "text":
        if not isinstance(raw, str):
            raise ItemValueError(_("Enter text."))
        text = raw.strip()
        if "\x00" in text:
            # PostgreSQL cannot store it: a 500 otherwise.
            raise ItemValueError(_("Enter text without a NUL character."))
        if len(text) > item.max_length:
            raise ItemValueError(_("At most %(count)s characters.") % {"count": item.max_length})
        return text
    if item.type == "yes_no":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in YES + NO:
            return raw.strip().lower() in YES
        raise ItemValueError(_("Answer yes or no."))
    if item.type == "choice":
        code = raw.strip() if isinstance(raw, str) else raw
        if code_list is None or not isinstance(code, str) or code_list.entry(code) is None:
            codes = ", ".join(entry.code for entry in code_list.entries) if code_list else ""
            raise ItemValueError(_("Choose one of %(codes)s.") % {"codes": codes})
        return code
    if item.type == "date":
        try:
            if not isinstance(raw, str):
                raise ValueError
            return datetime.date.fromisoformat(raw.strip()).isoformat()
        except ValueError:
            raise ItemValueError(_("Enter a date as YYYY-MM-DD.")) from None
    # Numbers. bool is an int in Python: true is not a pulse.
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
        raise ItemValueError(_("Enter a number."))
    try:
        number = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ItemValueError(_("Enter a number.")) from None
    # 1e999999999 is a number too, and int() of it would not finish; no measurement needs more.
    if not number.is_finite() or number.adjusted() > 15 or number.as_tuple().exponent < -10:
        raise ItemValueError(_("Enter a number."))
    if item.type == "integer" and number != number.to_integral_value():
        raise ItemValueError(_("Enter a whole number."))
    if item.min is not None and number < item.min:
        raise ItemValueError(_("Must be at least %(min)s %(unit)s.") % {"min": item.min, "unit": unit(item)})
    if item.max is not None and number > item.max:
        raise ItemValueError(_("Must be at most %(max)s %(unit)s.") % {"max": item.max, "unit": unit(item)})
    if item.type == "integer":
        return int(number)
    # Decimal digits as text: JSON floats would turn 36.6 into 36.600000000000001 somewhere.
    text = format(number.normalize(), "f")
    return text


def typed(item: ItemSpec, stored):
    """The stored value as Python: int, Decimal, date, bool or str (None when empty)."""
    if stored is None:
        return None
    if item.type == "decimal":
        return Decimal(stored)
    if item.type == "date":
        return datetime.date.fromisoformat(stored)
    return stored


def as_text(item: ItemSpec, stored) -> str:
    """The stored value as a web form field shows it."""
    if stored is None:
        return ""
    if item.type == "yes_no":
        return "yes" if stored else "no"
    return str(stored)


def matches(item: ItemSpec, stored, wanted) -> bool:
    """Does the stored value equal a value written in the protocol file (a condition, a warning)?"""
    if stored is None:
        return False
    if item.type in ("integer", "decimal"):
        return not isinstance(wanted, bool) and isinstance(wanted, int) and Decimal(str(stored)) == wanted
    return stored == wanted
