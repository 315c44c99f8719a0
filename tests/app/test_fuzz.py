"""Property-based fuzzing of every route, from the service's own /openapi.json, against a real server.

schemathesis generates requests from the published schema (valid and invalid: wrong types, missing
parts, odd strings and bytes for the uploads, odd tensors and shapes for TF Serving's /v1 and the
Open Inference Protocol's /v2) and checks each answer: never a 5xx, a status code and body the
schema documents, and every error in its protocol's shape: an RFC 9457 problem from the service's
own API, `{"error": ...}` from /v1 and /v2. Bounded: MAX_EXAMPLES cases per operation, no deadline
per case (the machine may be busy), and pytest-timeout over the whole.
"""

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.app.servers import Server, running_server
from tests.support.models import MODEL_NAME

MAX_EXAMPLES = 100
PROBLEM_FIELDS = {"type", "title", "status", "detail"}


@pytest.fixture(scope="module")
def fuzzed_server(model_repository, tmp_path_factory) -> Iterator[Server]:
    with running_server(model_repository, tmp_path_factory.mktemp("fuzz") / "server.log") as server:
        yield server


@schemathesis.check
def errors_are_in_their_protocols_shape(ctx, response, case) -> None:
    """Every 4xx/5xx of the service's own API is `application/problem+json` with RFC 9457's members,
    its status matching; of /v1 and /v2, `{"error": "..."}` as TF Serving and Triton answer."""
    if response.status_code < 400:
        return
    body = response.json()
    if case.operation.path.startswith(("/v1/", "/v2")):
        assert response.headers["content-type"][0] == "application/json", response.headers
        assert body.keys() == {"error"} and isinstance(body["error"], str), body
        return
    assert response.headers["content-type"][0] == "application/problem+json", response.headers
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == response.status_code, body


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    errors_are_in_their_protocols_shape,
]


def naming_the_served_model(case: Case) -> Case:
    """`case`, with the model a /v1 or /v2 path names the one served."""
    if "name" in case.path_parameters:
        case.path_parameters = case.path_parameters | {"name": MODEL_NAME}
    return case


# The operations fuzzed by each test, by path (one test for all would outlast pytest-timeout), and
# some of each that must be among them.
API_PARTS = {
    "service": (
        lambda path: not path.startswith(("/v1/", "/v2")),
        {"POST /predict", "GET /model", "GET /healthz", "GET /readyz", "GET /metrics"},
    ),
    "tf-serving": (
        lambda path: path.startswith("/v1/"),
        {
            "GET /v1/models/{name}",
            "GET /v1/models/{name}/versions/{version}/metadata",
            "POST /v1/models/{name}:{method}",
            "POST /v1/models/{name}/labels/{label}:{method}",
        },
    ),
    "open-inference": (
        lambda path: path.startswith("/v2"),
        {
            "GET /v2/health/ready",
            "GET /v2/models/{name}/versions/{version}/ready",
            "POST /v2/models/{name}/infer",
            "POST /v2/models/{name}/versions/{version}/infer",
        },
    ),
}


@pytest.mark.parametrize("part", API_PARTS)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_survives_fuzzing_and_keeps_its_contract(fuzzed_server, mode, part):
    # Each operation driven by hypothesis directly: schemathesis' own pytest loader does not run
    # under this pytest version.
    in_part, expected = API_PARTS[part]
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    tried: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if not in_part(operation.path):
            continue
        tried[operation.label] = 0

        strategy = operation.as_strategy(mode)
        if mode == GenerationMode.POSITIVE and operation.path.startswith(("/v1/", "/v2/")):
            strategy = strategy.map(naming_the_served_model)  # else nearly every case is a 404

        @given(case=strategy)
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            tried[case.operation.label] += 1
            case.call_and_validate(checks=CHECKS, timeout=60)

        try:
            fuzz()
        except Unsatisfiable:  # nothing invalid can be sent to an operation without parameters
            assert mode == GenerationMode.NEGATIVE and not operation.body and not operation.query
    print(f"fuzzed ({mode}) {sum(tried.values())} requests: {tried}")
    assert expected <= set(tried)
