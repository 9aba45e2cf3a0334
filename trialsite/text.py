"""Text that people type or import, made comparable, and made harmless in a spreadsheet.

One place for both rules, because copies of them drifted apart: one import checked for a
formula before trimming the cell and stored " =1+2" as "=1+2", and a record number with a
zero-width space in it passed the duplicate check as a different patient."""

from __future__ import annotations

import re
import unicodedata

# --- Identifiers -----------------------------------------------------------------------------

# Code points that show as nothing but are not format characters (category Cf, removed as a
# whole): the Unicode Default_Ignorable_Code_Point ranges outside Cf (combining grapheme joiner,
# Hangul fillers, Khmer inherent vowels, Mongolian and other variation selectors, ...).
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Dashes a word processor or an input method puts where a hyphen-minus was meant; NFKC keeps
# them apart from "-".
_DASHES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"))
_WHITESPACE = re.compile(r"\s+")


def _invisible(character: str) -> bool:
    category = unicodedata.category(character)
    if category == "Cf" or (category == "Cc" and not character.isspace()):
        return True
    code = ord(character)
    return any(low <= code <= high for low, high in _IGNORABLE_RANGES)


def clean_text(value: str | None) -> str:
    """The text as it reads: compatibility forms folded (NFKC: full-width letters and digits are ASCII),
    invisible characters removed, runs of white space one space, no white space at the ends."""
    # Removed before and after folding: a character left between two others can keep them from
    # composing, and folding can in principle produce one.
    text = "".join(character for character in value or "" if not _invisible(character))
    text = unicodedata.normalize("NFKC", text)
    text = "".join(character for character in text if not _invisible(character))
    return _WHITESPACE.sub(" ", text).strip()


def identifier(value: str | None) -> str:
    """A record number, initials or kit number as it is compared and stored: clean, with one
    kind of dash, in capitals (a record number typed with caps lock off is the same patient)."""
    return clean_text(value).translate(_DASHES).upper()


def whole_number(value: str | None) -> int | None:
    """A whole number written in ASCII digits, else None. str.isdigit() alone accepts "²" and
    "①", which int() then refuses."""
    text = (value or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


# --- Spreadsheet formulas --------------------------------------------------------------------

# A cell starting with one of these is run as a formula by Excel, LibreOffice or Google Sheets
# (OWASP "CSV injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def looks_like_formula(text: str) -> bool:
    """For imports: give it the value as it will be stored (trimmed, cleaned), not the raw cell,
    so " =1+2" cannot pass the check and then be stored as "=1+2"."""
    return text.startswith(FORMULA_TRIGGERS)


def defuse_formula(value):
    """For exports: text a spreadsheet would run as a formula gets a leading quote."""
    if isinstance(value, str) and looks_like_formula(value):
        return "'" + value
    return value


def _sql_character(character: str) -> str:
    if character.isprintable() and character != "'":
        return f"'{character}'"
    return f"chr({ord(character)})"


FORMULA_TRIGGERS_SQL = "(" + ", ".join(_sql_character(character) for character in FORMULA_TRIGGERS) + ")"


def defuse_formula_sql(expression: str) -> str:
    """`defuse_formula` as a PostgreSQL expression over a text expression (for COPY exports)."""
    return f"CASE WHEN left({expression}, 1) IN {FORMULA_TRIGGERS_SQL} THEN '''' || {expression} ELSE {expression} END"
