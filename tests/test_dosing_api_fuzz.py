"""Fuzzing of the dosing, pharmacy and supply operations with real visits and kits in the
database (so generated ids hit rows, not only 404s): no 5xx, every response matches its schema,
and no blinded role ever reads a content."""

import datetime
import re

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests import dosing_factories as df
from tests import factories

ROLES = ["coordinator", "pharmacist", "investigator", "monitor", "statistician", "supply_manager"]
BLINDED = {"coordinator", "pharmacist", "investigator", "monitor"}
DOSING_PATHS = r"/(visits|kits|pharmacy|shipments|accountability|supply)/"
REVEALING = re.compile(r"\b(active|placebo)\b", re.IGNORECASE)


@pytest.fixture
def dosing_data(cast, site):
    for arm, content in (("COMBO", "active"), ("PBO", "placebo")):
        df.randomized_participant(site, arm_code=arm, by=cast.coordinator, day0=datetime.date(2026, 11, 3))
        for kit_type in ("INF", "TAB"):
            df.make_kit(kit_type=kit_type, content=content, site=site)
            df.make_kit(kit_type=kit_type, content=content, site=None, status="in_depot")
    return cast


@pytest.fixture
def dosing_schema(dosing_data):
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    key = key_for(dosing_data, "coordinator")
    yield schemathesis.openapi.from_wsgi(
        "/api/v1/schema/", get_wsgi_application(), headers={"Authorization": f"Token {key}"}
    )
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def key_for(cast, role: str) -> str:
    """One API token per role for the whole test (each example reuses it)."""
    if f"key:{role}" not in cast:
        cast[f"key:{role}"] = factories.api_key(cast[role])
    return cast[f"key:{role}"]


schema = schemathesis.pytest.from_fixture("dosing_schema").include(path_regex=DOSING_PATHS)


@schema.parametrize()
# Six examples per operation, each as all six roles (eight took two minutes of `make test`).
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_dosing_operations_never_fail_break_their_schema_or_unblind(case, dosing_data):
    for role in ROLES:
        key = key_for(dosing_data, role)
        response = case.call_and_validate(
            headers={"Authorization": f"Token {key}"},
            checks=[not_a_server_error, response_schema_conformance, content_type_conformance, status_code_conformance],
        )
        if role in BLINDED:
            assert not REVEALING.search(response.text), (role, case.operation.label, response.text[:300])
