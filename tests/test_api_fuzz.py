"""Property-based fuzzing of the whole REST API from its own OpenAPI schema (schemathesis),
as every role: no 5xx, and every response conforms to the schema it documents."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.meta import TestPhase
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests import factories

REQUESTS_SENT = []
ROLES = ["coordinator", "pharmacist", "investigator", "monitor", "statistician", "supply_manager"]
# Fuzzed examples per operation, each sent as all six roles; the coverage phase adds its own
# boundary cases. Over the 43 operations that is over two thousand requests (the module asserts
# at least 1,000). Twelve made this the second-longest file of `make test` (220 s of a 14-minute
# run on two cores) for examples that, derandomized, add little the first eight do not reach.
EXAMPLES_PER_OPERATION = 8


@pytest.fixture
def fuzz_data(cast, site):
    """Some records to find, so generated ids sometimes hit real rows, and a user holding every
    role, for whom no request stops at "you may not" before its input is read."""
    for _ in range(3):
        factories.make_participant(site, by=cast.coordinator)
    cast["every_role"] = factories.make_user_with_every_role(site, username="every_role")
    return cast


@pytest.fixture
def api_schema(fuzz_data):
    # Requests run in this process, inside the test's transaction; like Django's test client,
    # keep the handler from closing the test's database connection after each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    key = key_for(fuzz_data, "coordinator")
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


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_api_operation_fails_or_breaks_its_schema_for_any_role(case, fuzz_data):
    # A fuzzed request goes as each role in turn (and so meets each role's 404s and 403s). The
    # coverage phase's boundary and malformed values are about reading input, which only a role
    # allowed the operation reaches: they go once, as the user with every role. Sending them six
    # times made this test four minutes long for answers five of six roles get from access alone.
    roles = ["every_role"] if case.meta.phase.name == TestPhase.COVERAGE else ROLES
    for role in roles:
        key = key_for(fuzz_data, role)
        REQUESTS_SENT.append((case.meta.phase.name, case.operation.label))
        case.call_and_validate(
            headers={"Authorization": f"Token {key}"},
            checks=[not_a_server_error, response_schema_conformance, content_type_conformance, status_code_conformance],
        )


@pytest.fixture(scope="module", autouse=True)
def _at_least_a_thousand_requests():
    yield
    if REQUESTS_SENT:  # the module ran (not deselected)
        assert len(REQUESTS_SENT) >= 1000, f"only {len(REQUESTS_SENT)} generated requests"
