"""Shedding at the door (app/api/admission.py): a full queue refuses before the body is read."""

import base64
import http.client
import json
import socket

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.admission import target
from app.main import create_app
from tests.app.servers import BOUNDARY, metric, multipart, running_server, wait_for
from tests.support.http import files, problem, samples
from tests.support.images import png
from tests.support.models import MODEL_NAME

OVERLOADED = "urn:inception-v2-service:problem:overloaded"


def test_a_full_queue_sheds_inference_requests_unread_with_retry_after(make_settings):
    with TestClient(create_app(make_settings(max_queue_size=16))) as client:
        batcher = client.app.state.dataplane.model().batcher
        with batcher.admit(16):  # as if 16 images were waiting
            shed = client.post("/predict", files=files(("a.png", png())))
            other_routes = [client.get(path).status_code for path in ("/healthz", "/model", "/metrics")]
        admitted = client.post("/predict", files=files(("a.png", png())))

    detail = "16 images are waiting for the model; MAX_QUEUE_SIZE is 16"
    problem(shed, 503, OVERLOADED, "Overloaded", detail)
    assert shed.headers["retry-after"] == "1"
    assert shed.headers["connection"] == "close"  # its body was never read
    assert other_routes == [200, 200, 200]  # only requests that queue images are shed
    assert admitted.status_code == 200


def test_a_request_the_queue_has_room_for_at_the_door_is_still_checked_for_all_its_images(make_settings):
    uploads = files(*[(f"{i}.png", png(seed=i)) for i in range(3)])
    with TestClient(create_app(make_settings(max_queue_size=16))) as client:
        batcher = client.app.state.dataplane.model().batcher
        with batcher.admit(14):
            response = client.post("/predict", files=uploads)

    detail = "14 images are waiting for the model; MAX_QUEUE_SIZE is 16"
    problem(response, 503, OVERLOADED, "Overloaded", detail)


def test_requests_decided_together_at_the_door_are_each_counted_as_they_are_let_in(make_settings):
    """The HTTP protocol asks the door as each request's headers are read, so requests read in one
    turn of the event loop are decided before any of their app tasks has run: the door counts each
    one as it lets it in, as many images as recent requests brought, and refuses the rest unread."""
    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"", "headers": []}
    with TestClient(create_app(make_settings(max_queue_size=16))) as client:
        door = client.app.state.door
        batcher = client.app.state.dataplane.model().batcher
        for _ in range(20):  # recent requests brought 4 images each
            with batcher.admit(4):
                pass
        burst = [dict(scope) for _ in range(6)]
        answers = [door.refusal(request) for request in burst]
        door.leave(burst[0])  # one of those let in has finished
        next_one = door.refusal(dict(scope))
        with batcher.admit(8):  # one of those being received turns out to bring 8 images
            later = door.refusal(dict(scope))

    assert [answer is None for answer in answers] == [True, True, True, True, False, False]
    detail = (
        "0 images are waiting for the model and 4 requests are being received (lately 4.0 images per "
        "request); MAX_QUEUE_SIZE is 16"
    )
    for refused in answers[4:]:
        assert refused is not None and refused.status_code == 503
        assert json.loads(refused.body)["detail"] == detail
    assert next_one is None
    assert later is not None  # answered as things are now, not as the last refusal said
    assert json.loads(later.body)["detail"] == (
        "8 images are waiting for the model and 3 requests are being received (lately 4.8 images per "
        "request); MAX_QUEUE_SIZE is 16"
    )


V1_PREDICT = "/v1/models/{name:tfs_part}:{method:tfs_method}"


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("POST", "/predict", b"version=2", ("/predict", 2, None)),
        ("POST", "/predict", b"label=stable", ("/predict", None, "stable")),
        ("POST", "/predict", b"version=%C2%B2", ("/predict", None, None)),  # the route refuses it
        ("POST", "/v1/models/inception_v2:predict", b"", (V1_PREDICT, None, None)),
        (
            "POST",
            "/v1/models/inception_v2/labels/canary:classify",
            b"",
            ("/v1/models/{name:tfs_part}/labels/{label:tfs_part}:{method:tfs_method}", None, "canary"),
        ),
        (
            "POST",
            "/v1/models/inception_v2/versions/3:predict",
            b"",
            ("/v1/models/{name:tfs_part}/versions/{version:int}:{method:tfs_method}", 3, None),
        ),
        (
            "POST",
            "/v2/models/inception_v2/versions/3/infer",
            b"",
            ("/v2/models/{name}/versions/{version}/infer", 3, None),
        ),
        ("POST", "/v2/models/inception_v2/infer", b"", ("/v2/models/{name}/infer", None, None)),
        ("GET", "/predict", b"", None),
        ("POST", "/v1/models/inception_v2", b"", None),
        ("POST", "/v2/models/inception_v2/ready", b"", None),
    ],
)
def test_the_door_knows_each_inference_route_from_the_router(make_settings, method, path, query, expected):
    routes = create_app(make_settings()).state.door.routes
    scope = {"type": "http", "method": method, "path": path, "query_string": query}

    assert target(routes, scope) == expected


def test_a_shed_v1_request_is_counted_under_the_route_a_served_one_is(make_settings):
    """Per-route 503 ratios need both under one template: the router's, not a catch-all's."""
    predict = f"/v1/models/{MODEL_NAME}:predict"
    with TestClient(create_app(make_settings(max_queue_size=16))) as client:
        served = client.post(predict, json={"instances": [{"b64": base64.b64encode(png()).decode()}]})
        with client.app.state.dataplane.model().batcher.admit(16):
            shed = client.post(predict, json={"instances": []})
        counted = samples(client)

    assert (served.status_code, shed.status_code) == (200, 503)
    for status in ("200", "503"):
        labels = (("method", "POST"), ("route", V1_PREDICT), ("status", status))
        assert counted[("http_requests_total", labels)] == 1


def test_the_standard_protocols_are_shed_in_their_own_error_shape(make_settings):
    with TestClient(create_app(make_settings(max_queue_size=16))) as client:
        batcher = client.app.state.dataplane.model().batcher
        with batcher.admit(16):
            response = client.post("/v2/models/inception_v2/infer", json={"inputs": []})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    detail = "16 images are waiting for the model; MAX_QUEUE_SIZE is 16"
    assert response.json() == {"error": detail}


def test_a_real_server_sheds_at_the_http_protocol_with_keys_checked_first(model_repository, tmp_path):
    """Through uvicorn, the door in the HTTP protocol (app/connections.py) answers as the app would."""
    key = "admission-test-key"
    body = multipart("a.png", png())
    head = (
        f"POST /predict HTTP/1.1\r\nHost: test\r\nX-API-Key: {key}\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    ).encode()
    log = tmp_path / "server.log"
    with running_server(
        model_repository, log, MAX_QUEUE_SIZE="2", MAX_FILES="2", API_KEYS=key, BODY_TIMEOUT_S="60"
    ) as server:
        # Two uploads whose bodies have not arrived yet fill a queue of 2: each counts as one image.
        waiting = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(2)]
        for connection in waiting:
            connection.sendall(head + body[:10])
        # http_requests_in_progress counts the two uploads and the scrape itself.
        wait_for(lambda: metric(server, "http_requests_in_progress") == 3, "two uploads in progress")

        shed = httpx.post(f"{server.url}/predict", files=files(("b.png", png())), headers={"x-api-key": key})
        unauthorised = httpx.post(f"{server.url}/predict", files=files(("b.png", png())))

        for connection in waiting:
            connection.sendall(body[10:])
        answers = [read_response_status(connection) for connection in waiting]
        for connection in waiting:
            connection.close()
        after = httpx.post(f"{server.url}/predict", files=files(("c.png", png())), headers={"x-api-key": key})
        shed_count = metric(server, "http_requests_total", route="/predict", method="POST", status="503")

    detail = (
        "0 images are waiting for the model and 2 requests are being received (lately 1.0 images per "
        "request); MAX_QUEUE_SIZE is 2"
    )
    problem(shed, 503, OVERLOADED, "Overloaded", detail)
    assert shed.headers["retry-after"] == "1"
    assert "connection" not in shed.headers  # the protocol's door, not the middleware's: kept alive
    assert unauthorised.status_code == 401  # a request without a key learns nothing of the load
    assert answers == [200, 200]
    assert after.status_code == 200
    assert shed_count == 1
    assert '"POST /predict HTTP/1.1" 503' in log.read_text()  # in the access log, as the app's own answers


def read_response_status(connection: socket.socket) -> int:
    return int(connection.recv(65536).split(b" ", 2)[1])


def test_a_connection_refused_at_the_door_serves_its_next_request_after_the_skipped_body(
    model_repository, tmp_path
):
    """Refusing unread must keep the connection in step: the next request starts after the body."""
    body = multipart("a.png", png())
    post = (
        f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    ).encode() + body
    huge = (
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Length: 50000000\r\n"
        + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n".encode()
    )
    with running_server(
        model_repository, tmp_path / "server.log", MAX_QUEUE_SIZE="1", MAX_FILES="1"
    ) as server:
        waiting = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        waiting.sendall(post[:-10])  # an upload in progress fills the queue of one
        wait_for(lambda: metric(server, "http_requests_in_progress") == 2, "one upload in progress")

        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as connection:
            connection.sendall(post + post)  # two requests back to back, both refused
            first, second = read_responses(connection, 2)
            waiting.sendall(post[-10:])  # the queue empties
            (answered,) = read_responses(waiting, 1)
            connection.sendall(post)
            (third,) = read_responses(connection, 1)
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as connection:
            waiting.sendall(post[:-10])
            wait_for(lambda: metric(server, "http_requests_in_progress") == 2, "one upload in progress")
            connection.sendall(huge)  # too large to skip: refused, and the connection closed
            (refused_huge,) = read_responses(connection, 1)
            assert connection.recv(1) == b""
        waiting.close()

    assert [first.status, second.status, answered.status, third.status] == [503, 503, 200, 200]
    assert first.getheader("connection") is None and second.getheader("connection") is None
    assert refused_huge.status == 503 and refused_huge.getheader("connection") == "close"


def read_responses(connection: socket.socket, count: int) -> list[http.client.HTTPResponse]:
    """`count` responses read in turn from one connection, each with its body (`.body`)."""
    reader = _Reader(connection)
    responses = []
    for _ in range(count):
        response = http.client.HTTPResponse(reader)  # type: ignore[arg-type]
        response.begin()
        response.body = response.read()  # type: ignore[attr-defined]
        responses.append(response)
    return responses


class _Reader:
    """A socket as http.client reads it: one buffered file for every response on the connection,
    which a response does not close when it has read its body."""

    def __init__(self, connection: socket.socket) -> None:
        self.file = connection.makefile("rb")

    def makefile(self, mode: str) -> "_Reader":
        return self

    def __getattr__(self, name: str) -> object:
        return getattr(self.file, name)

    def close(self) -> None:
        pass
