"""Property-based fuzzing of every route, from the service's own /openapi.json, against a real server.

schemathesis generates requests from the published schema (valid and invalid: wrong types, missing
parts, odd strings and bytes for the uploads) and checks each answer: never a 5xx, a status code
and body the schema documents, and every error an RFC 9457 problem. Bounded: MAX_EXAMPLES cases per
operation, no deadline per case (the machine may be busy), and pytest-timeout over the whole.
"""

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.app.servers import Server, running_server

MAX_EXAMPLES = 100
PROBLEM_FIELDS = {"type", "title", "status", "detail"}


@pytest.fixture(scope="module")
def fuzzed_server(model_repository, tmp_path_factory) -> Iterator[Server]:
    with running_server(model_repository, tmp_path_factory.mktemp("fuzz") / "server.log") as server:
        yield server


@schemathesis.check
def errors_are_problem_details(ctx, response, case) -> None:
    """Every 4xx/5xx is `application/problem+json` with RFC 9457's members, its status matching."""
    if response.status_code < 400:
        return
    assert response.headers["content-type"][0] == "application/problem+json", response.headers
    body = response.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == response.status_code, body


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    errors_are_problem_details,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_survives_fuzzing_and_keeps_its_contract(fuzzed_server, mode):
    # Each operation driven by hypothesis directly: schemathesis' own pytest loader does not run
    # under this pytest version.
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    tried: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        tried[operation.label] = 0

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            tried[case.operation.label] += 1
            case.call_and_validate(checks=CHECKS, timeout=60)

        try:
            fuzz()
        except Unsatisfiable:  # nothing invalid can be sent to an operation without parameters
            assert mode == GenerationMode.NEGATIVE and not operation.body and not operation.query
    print(f"fuzzed ({mode}) {sum(tried.values())} requests: {tried}")
    assert {"POST /predict", "GET /model", "GET /healthz", "GET /readyz", "GET /metrics"} <= set(tried)
