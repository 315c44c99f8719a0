"""Shedding at the door (app/api/admission.py): a full queue refuses before the body is read."""

from fastapi.testclient import TestClient

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
