"""A refusal defined once, at import, is still written in the reader's language: messages kept
on classes or modules are lazy, translated when shown."""

from __future__ import annotations

import ast
import pathlib

from django.conf import settings
from django.utils import translation
from rest_framework.test import APIClient

from enrollment.models import Outcome, Screening
from randomization import services
from tests import factories

NOT_ELIGIBLE_ZH = "只有符合入选的受试者才能随机。"
NOT_LAZY = {"gettext", "ngettext", "pgettext", "npgettext"}
ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_a_class_level_refusal_comes_out_in_chinese():
    with translation.override("zh-hans"):
        assert str(services.NotEligible().message) == NOT_ELIGIBLE_ZH
    with translation.override("en"):
        assert str(services.NotEligible().message) == "Only an eligible participant can be randomized."


def test_the_api_refuses_an_ineligible_randomization_in_the_readers_language(trial, site, cast):
    randomization_list = services.list_generate(
        trial=trial, seed="lazy", slots_per_stratum=4, created_by=cast.statistician
    )
    services.list_lock(randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD)
    participant = factories.make_participant(site, by=cast.coordinator)
    Screening.objects.filter(pk=participant.pk).update(outcome=Outcome.INELIGIBLE)
    api = APIClient()
    api.force_login(cast.coordinator)
    api.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    answer = api.post(f"/api/v1/participants/{participant.pk}/randomize/", {}, format="json")
    assert answer.status_code == 400
    assert NOT_ELIGIBLE_ZH in str(answer.json())


def module_level_gettext_calls(path: pathlib.Path) -> list[str]:
    """Calls of a non-lazy gettext imported from django.utils.translation that run at import:
    outside any function body."""
    tree = ast.parse(path.read_text())
    names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "django.utils.translation"
        for alias in node.names
        if alias.name in NOT_LAZY
    }
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if not inside and isinstance(child, ast.Call) and getattr(child.func, "id", None) in names:
                found.append(f"{path.relative_to(ROOT)}:{child.lineno}")
            visit(child, inside)

    if names:
        visit(tree, False)
    return found


def test_no_message_is_translated_at_import():
    packages = ("trialsite", "enrollment", "randomization", "schedules", "dosing", "reports")
    found = [
        call
        for package in packages
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
        for call in module_level_gettext_calls(path)
    ]
    assert found == []
