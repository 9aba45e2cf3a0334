"""The protocol file's reference, written from the models of trialsite.protocol_schema.

Every table of the file gets a section listing its keys: the type in words, required or the
default, and the field's description. Nothing here names a key: a field added to the schema
appears in the reference the next time `manage.py protocol_reference` writes it, and
tests/test_protocol_reference.py fails while docs/protocol-reference.md is stale.

A new kind of value (a new `BeforeValidator` function in the schema) should get its words in
`VALUE_WORDS`; until then it is named after its function (`_visit_code` -> "visit code")."""

from __future__ import annotations

import datetime
import functools
import operator
import types
import typing
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from trialsite import protocol_schema as schema

REFERENCE_PATH = Path("docs") / "protocol-reference.md"

# Each validating function of the schema as (one value, several values).
VALUE_WORDS = {
    schema._positive_integer: ("positive integer", "positive integers"),
    schema._non_negative_integer: ("integer of 0 or more", "integers of 0 or more"),
    schema._number: ("number", "numbers"),
    schema._non_negative_number: ("number of 0 or more", "numbers of 0 or more"),
    schema._positive_number: ("number above 0", "numbers above 0"),
    schema._code: ("code", "codes"),
    schema._text: ("text", "texts"),
    schema._time_zone: ("time zone (such as Asia/Shanghai)", "time zones"),
    schema._clock: ("time HH:MM", "times HH:MM"),
    schema._email: ("e-mail address", "e-mail addresses"),
    schema._boolean: ("true or false", "true or false values"),
    schema._date: ("date (such as 2024-06-01)", "dates"),
    schema._visit_code: (
        f"visit code (a code of at most {schema.VISIT_CODE_LENGTH} characters)",
        "visit codes",
    ),
    schema._visit_code_pattern: ("visit code pattern with {n} (such as V{n})", "visit code patterns"),
    schema._visit_code_or_pattern: ("visit code (V1) or prefix pattern (V*)", "visit codes or prefix patterns"),
    schema._scalar: ("text, whole number or true/false", "texts, whole numbers or true/false values"),
}
for _name in ("_coded_value",):
    # Kinds of value that may not exist in every version of the schema.
    if hasattr(schema, _name):
        VALUE_WORDS[getattr(schema, _name)] = (
            "coded value (up to 20 letters, digits, '_', '.', '+' or '-')",
            "coded values",
        )
PLAIN_WORDS = {
    str: ("text", "texts"),
    int: ("integer", "integers"),
    bool: ("true or false", "true or false values"),
    Decimal: ("number", "numbers"),
    datetime.date: ("date", "dates"),
    datetime.time: ("time HH:MM", "times HH:MM"),
}


@dataclass(frozen=True)
class Table:
    """One table of the file: `path` as written in the file, `model` its keys."""

    path: str
    model: type[BaseModel]
    # "file" (the top level), "table", "list" (a [[path]] array of tables) or "keyed" (one table per
    # key, the path ends .<key>)
    shape: str
    description: str


def _unwrap_optional(annotation):
    """(annotation without None, whether None was allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        arguments = [argument for argument in typing.get_args(annotation) if argument is not type(None)]
        if len(arguments) < len(typing.get_args(annotation)):
            return (arguments[0] if len(arguments) == 1 else functools.reduce(operator.or_, arguments)), True
    return annotation, False


def _validator_words(metadata) -> tuple[str, str] | None:
    for entry in metadata:
        function = getattr(entry, "func", None)
        if function is not None:
            if function in VALUE_WORDS:
                return VALUE_WORDS[function]
            words = function.__name__.strip("_").replace("_", " ")
            return words, f"{words} values"
    return None


def _is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _sub_table(annotation) -> tuple[str, type[BaseModel]] | None:
    """("table" | "list" | "keyed", model) when the annotation holds tables, else None."""
    annotation, _optional = _unwrap_optional(annotation)
    if _is_model(annotation):
        return "table", annotation
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (tuple, list) and arguments and _is_model(arguments[0]):
        return "list", arguments[0]
    if origin is dict and len(arguments) == 2 and _is_model(arguments[1]):
        return "keyed", arguments[1]
    return None


def _key_name(field_name: str) -> str:
    """The placeholder of a table keyed by name: roles -> <role>."""
    return "<" + (field_name[:-1] if field_name.endswith("s") else field_name) + ">"


def type_words(annotation, metadata=(), *, plural: bool = False) -> str:
    """The type of a key in words: "positive integer", "list of codes", "one of "a"/"b"."."""
    words = _validator_words(metadata)
    if words:
        return words[plural]
    annotation, _optional = _unwrap_optional(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        base, *inner = typing.get_args(annotation)
        return type_words(base, inner, plural=plural)
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + "/".join(f'"{value}"' if isinstance(value, str) else str(value) for value in arguments)
    if origin in (tuple, list):
        if origin is list or (len(arguments) == 2 and arguments[1] is Ellipsis):
            return f"list of {type_words(arguments[0], plural=True)}"
        if len(set(arguments)) == 1:
            return f"[low, high]: two {type_words(arguments[0], plural=True)}"
        return "[" + ", ".join(type_words(argument) for argument in arguments) + "]"
    if origin is dict:
        key, value = arguments
        return f"table of {type_words(key)} = {type_words(value)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_words(argument) for argument in arguments)
    if _is_model(annotation):
        return "table"
    if annotation in PLAIN_WORDS:
        return PLAIN_WORDS[annotation][plural]
    return getattr(annotation, "__name__", str(annotation))


def _toml(value) -> str:
    """A default as it would be written in the file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, datetime.time):
        return f'"{value:%H:%M}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(entry) for entry in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml(entry)}" for key, entry in value.items()) + " }" if value else "{}"
    if isinstance(value, BaseModel):
        # In the models' order (the set of given fields has none): the same text on every run.
        given = [name for name in type(value).model_fields if name in value.model_fields_set]
        return _toml({name: getattr(value, name) for name in given or type(value).model_fields})
    return str(value)


def default_words(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "optional"
    if isinstance(value, BaseModel) and not value.model_fields_set:
        return "optional (all its keys at their defaults)"
    if isinstance(value, tuple | list | dict) and not value:
        return "optional (none)"
    return f"`{_toml(value)}`"


def _constraints(field: FieldInfo) -> str:
    notes = []
    for entry in field.metadata:
        if getattr(entry, "pattern", None):
            notes.append(f"matching `{entry.pattern}`")
        if getattr(entry, "min_length", None):
            notes.append(f"at least {entry.min_length}")
    return f" ({', '.join(notes)})" if notes else ""


def _own_doc(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__") or ""
    return " ".join(doc.split())


def tables() -> list[Table]:
    """The top level, then every table of the file, depth first in the order of the models' fields."""
    found: list[Table] = [Table("", schema.Protocol, "file", "")]

    def walk(model: type[BaseModel], prefix: str):
        for name, field in model.model_fields.items():
            sub = _sub_table(field.annotation)
            if sub is None:
                continue
            shape, child = sub
            path = f"{prefix}{name}"
            if shape == "keyed":
                path += "." + _key_name(name)
            found.append(Table(path, child, shape, field.description or ""))
            walk(child, path + ".")

    walk(schema.Protocol, "")
    return found


def _anchor(path: str) -> str:
    return path.replace("<", "").replace(">", "") or "the-file"


def _heading(table: Table) -> str:
    if table.shape == "file":
        return "The file's top level"
    return f"`[[{table.path}]]`" if table.shape == "list" else f"`[{table.path}]`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The whole reference as Markdown."""
    all_tables = tables()
    by_path = {table.path: table for table in all_tables}
    lines = [
        "# Protocol file reference",
        "",
        "<!-- Generated from trialsite/protocol_schema.py by `python manage.py protocol_reference`."
        " Do not edit by hand. -->",
        "",
        "Every table and key a protocol file (`protocols/<NCT id>.toml`) may hold, written from the models"
        " that validate it, so it always says what the loader accepts. [docs/protocol.md](protocol.md) explains"
        " how to write one; `python manage.py load_protocol --check FILE` validates a file without loading it."
        " A key that is not listed here is refused (a misspelt key would otherwise be ignored). The rules that"
        " relate one table to another (every arm names every kit type in a blinded trial, block sizes are"
        " multiples of the ratio total, ...) are in docs/protocol.md.",
        "",
        "A *code* is a letter, then up to 19 letters, digits or underscores. *Text* is never empty. A *list of"
        " tables* is written `[[path]]` once per entry, or inline as `key = [{ ... }, { ... }]`.",
        "",
        "## Tables",
        "",
    ]
    for table in all_tables[1:]:
        depth = table.path.count(".") - table.path.count("<")
        lines.append(f"{'  ' * depth}- [{_heading(table)}](#{_anchor(table.path)})")
    lines.append("")
    for table in all_tables:
        lines += [f'<a id="{_anchor(table.path)}"></a>', "", f"## {_heading(table)}", ""]
        if table.shape == "file":
            about = "The tables of a protocol file; those marked required must be present."
        else:
            own = _own_doc(table.model)
            # A description the model's own docstring already opens with is said once.
            if table.description and own.startswith(table.description.rstrip(".")):
                about = own
            else:
                about = " ".join(part for part in (table.description, own) if part)
        if table.shape == "list":
            about += " A list: one table per entry."
        elif table.shape == "keyed":
            parent = table.path.rsplit(".", 1)[0]
            about += f" One table per {_key_name(parent.rsplit('.', 1)[-1])[1:-1]}, named in the key."
        lines += [about.strip(), "", "| key | type | required / default | description |", "|---|---|---|---|"]
        for name, field in table.model.model_fields.items():
            sub = _sub_table(field.annotation)
            if sub is None:
                kind = type_words(field.annotation, field.metadata) + _constraints(field)
            else:
                child_path = f"{table.path}.{name}".lstrip(".") + (f".{_key_name(name)}" if sub[0] == "keyed" else "")
                child = by_path[child_path]
                words = {"table": "table", "list": "list of tables", "keyed": "tables by name"}[sub[0]]
                kind = f"{words}{_constraints(field)}, see [{_heading(child)}](#{_anchor(child.path)})"
            lines.append(
                f"| `{name}` | {_cell(kind)} | {_cell(default_words(field))} | {_cell(field.description or '')} |"
            )
        lines.append("")
    return "\n".join(lines)


def is_current(path: Path) -> bool:
    return path.exists() and path.read_text(encoding="utf-8") == render()
