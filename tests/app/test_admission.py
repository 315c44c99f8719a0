"""Shedding at the door (app/api/admission.py): a full queue refuses before the body is read."""

import pytest
from fastapi.testclient import TestClient

from app.api.admission import target
from app.main import create_app
from tests.app.conftest import files, png, problem

OVERLOADED = "urn:inception-v2-service:problem:overloaded"


def test_a_full_queue_sheds_inference_requests_unread_with_retry_after(make_settings):
    with TestClient(create_app(make_settings(max_queue_size=16))) as client:
        batcher = client.app.state.models.get().batcher
        with batcher.admit(16):  # as if 16 images were waiting
            shed = client.post("/predict", files=files(("a.png", png())))
            other_routes = [client.get(path).status_code for path in ("/healthz", "/model", "/metrics")]
        admitted = client.post("/predict", files=files(("a.png", png())))

    detail = "16 images are waiting for the model and 0 requests are being received; MAX_QUEUE_SIZE is 16"
    problem(shed, 503, OVERLOADED, "Overloaded", detail)
    assert shed.headers["retry-after"] == "1"
    assert shed.headers["connection"] == "close"  # its body was never read
    assert other_routes == [200, 200, 200]  # only requests that queue images are shed
    assert admitted.status_code == 200


def test_a_request_the_queue_has_room_for_at_the_door_is_still_checked_for_all_its_images(make_settings):
    uploads = files(*[(f"{i}.png", png(seed=i)) for i in range(3)])
    with TestClient(create_app(make_settings(max_queue_size=16))) as client:
        batcher = client.app.state.models.get().batcher
        with batcher.admit(14):
            response = client.post("/predict", files=uploads)

    detail = "14 images are waiting for the model; MAX_QUEUE_SIZE is 16"
    problem(response, 503, OVERLOADED, "Overloaded", detail)


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("POST", "/predict", b"version=2", ("/predict", 2, None)),
        ("POST", "/predict", b"label=stable", ("/predict", None, "stable")),
        ("POST", "/v1/models/inception_v2:predict", b"", ("/v1/{path:path}", None, None)),
        ("POST", "/v1/models/inception_v2/labels/canary:classify", b"", ("/v1/{path:path}", None, "canary")),
        ("POST", "/v2/models/inception_v2/versions/3/infer", b"", ("/v2/models/{name}/infer", 3, None)),
        ("GET", "/predict", b"", None),
        ("POST", "/v1/models/inception_v2", b"", None),
        ("POST", "/v2/models/inception_v2/ready", b"", None),
    ],
)
def test_the_door_knows_each_inference_route_and_its_target_version(method, path, query, expected):
    assert target({"method": method, "path": path, "query_string": query}) == expected


def test_the_standard_protocols_are_shed_in_their_own_error_shape(make_settings):
    with TestClient(create_app(make_settings(max_queue_size=16))) as client:
        batcher = client.app.state.models.get().batcher
        with batcher.admit(16):
            response = client.post("/v2/models/inception_v2/infer", json={"inputs": []})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    detail = "16 images are waiting for the model and 0 requests are being received; MAX_QUEUE_SIZE is 16"
    assert response.json() == {"error": detail}
