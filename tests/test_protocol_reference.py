"""docs/protocol-reference.md is written from the protocol models; these tests keep it current and complete."""

import re

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from trialsite.protocol_reference import REFERENCE_PATH, render
from trialsite.protocol_schema import Protocol


def test_the_committed_reference_is_what_the_models_say():
    # On failure: `python manage.py protocol_reference`, then commit docs/protocol-reference.md.
    call_command("protocol_reference", "--check")


def test_the_check_refuses_a_stale_reference(tmp_path, settings):
    settings.BASE_DIR = tmp_path
    (tmp_path / REFERENCE_PATH).parent.mkdir(parents=True)
    (tmp_path / REFERENCE_PATH).write_text(render().replace("`target_enrollment`", "`enrollment`"))
    with pytest.raises(CommandError, match="protocol_reference"):
        call_command("protocol_reference", "--check")
    call_command("protocol_reference")
    call_command("protocol_reference", "--check")


def _keys_by_table() -> dict[str, set[str]]:
    """Every key of every table, found from pydantic's JSON schema (not the reference's own walk):
    table path ("" for the top level, "roles.<role>" for tables by name) -> its keys."""
    schema = Protocol.model_json_schema()
    definitions = schema["$defs"]
    found: dict[str, set[str]] = {}

    def models_in(node):
        """(how it nests: "" or "<key>", definition) for each model a property holds."""
        if "$ref" in node:
            yield "", definitions[node["$ref"].rsplit("/", 1)[-1]]
        for option in node.get("anyOf", ()):
            yield from models_in(option)
        if isinstance(node.get("items"), dict):
            yield from models_in(node["items"])
        if isinstance(node.get("additionalProperties"), dict):
            for _nesting, definition in models_in(node["additionalProperties"]):
                yield "<key>", definition

    def walk(definition, path):
        found[path] = set(definition["properties"])
        for name, node in definition["properties"].items():
            for nesting, child in models_in(node):
                child_path = f"{path}.{name}".lstrip(".")
                if nesting:
                    child_path += f".<{name.removesuffix('s')}>"
                walk(child, child_path)

    walk(schema, "")
    return found


def _documented_keys() -> dict[str, set[str]]:
    text = (settings.BASE_DIR / REFERENCE_PATH).read_text(encoding="utf-8")
    sections = re.split(r'^<a id="([^"]+)"></a>$', text, flags=re.M)
    return {
        anchor: set(re.findall(r"^\| `(\w+)` \|", body, flags=re.M))
        for anchor, body in zip(sections[1::2], sections[2::2], strict=True)
    }


def test_every_key_of_every_table_is_in_the_reference():
    documented = _documented_keys()
    expected = _keys_by_table()
    assert {"trial", "eligibility.criteria", "randomization.factors", "schedule.treatment", "dosing.infusion"} <= set(
        expected
    )
    assert {"roles.<role>", "forms.items", "forms.items.show_if", "code_lists.entries"} <= set(expected)
    missing = []
    for path, keys in expected.items():
        anchor = path.replace("<", "").replace(">", "") or "the-file"
        missing += [f"{path}.{key}".lstrip(".") for key in sorted(keys - documented.get(anchor, set()))]
    assert missing == []


def test_keys_are_described_in_words():
    text = render()
    assert '| `masking` | one of "single"/"none" | `"single"` |' in text
    assert "| `vial_sizes_mg` | list of positive integers (at least 1) | required |" in text
    assert "| `effective_date` | date (such as 2024-06-01) | optional |" in text
    assert '| `send_time` | time HH:MM | `"09:00"` |' in text
    assert "Per kit type, what this arm's kit of that type holds" in text
