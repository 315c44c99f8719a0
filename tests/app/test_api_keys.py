"""API keys (app/api/api_keys.py) through the real app: who gets in, and what the others are told."""

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.support.http import files, problem
from tests.support.images import png

UNAUTHORIZED = "urn:inception-v2-service:problem:unauthorized"
MISSING = "An API key is required: send Authorization: Bearer <key> or X-API-Key: <key>"


@pytest.fixture(scope="module")
def guarded(make_settings):
    """Two keys at once, as during a rotation."""
    with TestClient(create_app(make_settings(api_keys="old-key-1234,new-key-5678"))) as client:
        yield client


def predict(client: TestClient, **headers: str):
    return client.post("/predict", files=files(("a.png", png())), headers=headers)


def refused(response, detail: str) -> None:
    problem(response, 401, UNAUTHORIZED, "Unauthorized", detail)
    assert response.headers["www-authenticate"] == 'Bearer realm="inception-v2-service"'


def test_without_api_keys_configured_no_key_is_needed(client):
    assert predict(client).status_code == 200


def test_a_request_without_a_key_is_refused(guarded):
    refused(predict(guarded), MISSING)


@pytest.mark.parametrize(
    "headers",
    [{"authorization": "Bearer nope"}, {"x-api-key": "old-key-123"}, {"authorization": "Basic old-key-1234"}],
)
def test_a_wrong_key_is_refused(guarded, headers):
    detail = MISSING if headers.get("authorization", "").startswith("Basic") else "The API key is not valid"
    refused(predict(guarded, **headers), detail)


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer new-key-5678"},
        {"authorization": "bearer old-key-1234"},
        {"x-api-key": "old-key-1234"},
        {"x-api-key": "new-key-5678"},
    ],
)
def test_every_configured_key_works_in_either_header(guarded, headers):
    response = predict(guarded, **headers)

    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["filename"] == "a.png"


def test_every_route_needs_a_key_even_unknown_ones(guarded):
    refused(guarded.get("/model"), MISSING)
    refused(guarded.get("/no/such/route"), MISSING)


def test_health_checks_docs_and_metrics_stay_open(guarded):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert guarded.get(path).status_code == 200, path
    assert guarded.get("/v2/health/live").status_code != 401  # the Open Inference Protocol's probes


def test_metrics_can_require_a_key(make_settings):
    settings = make_settings(api_keys="k-1234", metrics_require_key=True)
    with TestClient(create_app(settings)) as client:
        refused(client.get("/metrics"), MISSING)
        assert client.get("/metrics", headers={"x-api-key": "k-1234"}).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_keys_can_come_from_a_file(make_settings, tmp_path):
    key_file = tmp_path / "api-keys"
    key_file.write_text("from-file-1\n\nfrom-file-2\n")
    with TestClient(create_app(make_settings(api_keys="from-env", api_keys_file=key_file))) as client:
        for key in ("from-env", "from-file-1", "from-file-2"):
            assert predict(client, authorization=f"Bearer {key}").status_code == 200
        refused(predict(client, authorization="Bearer from-file-3"), "The API key is not valid")


def test_keys_are_not_shown_by_the_settings(make_settings):
    settings = make_settings(api_keys="s3cret-key")

    assert "s3cret-key" not in repr(settings)
    assert "s3cret-key" not in str(settings.model_dump())


def test_openapi_describes_the_keys_so_that_authorize_in_docs_sends_one(guarded):
    spec = guarded.get("/openapi.json").json()

    assert spec["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "X-API-Key: <key>"},
    }
    assert spec["security"] == [{"bearer": []}, {"apiKey": []}]  # either one
    assert spec["paths"]["/healthz"]["get"]["security"] == []  # open: no key asked for
    assert spec["paths"]["/metrics"]["get"]["security"] == []
    assert "security" not in spec["paths"]["/predict"]["post"]  # the document's default: a key


def test_openapi_asks_for_no_key_when_none_is_configured(client):
    spec = client.get("/openapi.json").json()

    assert "securitySchemes" not in spec["components"] and "security" not in spec
