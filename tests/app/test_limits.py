"""Every limit of the issue, each refused with its status and problem body."""

import socket

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.servers import BOUNDARY, metric, multipart, running_server, wait_for
from tests.support.http import files, problem
from tests.support.images import png

URN = "urn:inception-v2-service:problem:"


def too_large(response: httpx.Response) -> None:
    """`response` refuses a body over `limited`'s MAX_UPLOAD_BYTES, and closes the connection."""
    problem(
        response,
        413,
        URN + "payload-too-large",
        "Request body too large",
        "The request body is over MAX_UPLOAD_BYTES (20000 bytes)",
    )
    assert response.headers["connection"] == "close"


def too_many_files(response: httpx.Response) -> None:
    """`response` refuses a request with more images than `limited`'s MAX_FILES."""
    problem(
        response,
        413,
        URN + "too-many-files",
        "Too many files",
        "More than 2 images in one request; the most allowed is 2",
    )


@pytest.fixture(scope="module")
def limited(make_settings):
    settings = make_settings(max_upload_bytes=20_000, max_image_pixels=1000, max_files=2, max_queue_size=4)
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_body_over_max_upload_bytes_is_refused(limited):
    response = limited.post("/predict", files=files(("big.png", b"\0" * 20_001)))

    too_large(response)


def test_a_chunked_body_over_max_upload_bytes_is_refused(limited):
    def chunks():
        yield b"--x\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\n"
        for _ in range(30):
            yield b"\0" * 1000

    response = limited.post(
        "/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )

    assert "content-length" not in response.request.headers
    too_large(response)


def test_an_image_over_max_image_pixels_is_refused_and_named(limited):
    response = limited.post("/predict", files=files(("small.png", png(10, 10)), ("big.png", png(40, 30))))

    problem(
        response,
        413,
        URN + "image-too-large",
        "Image too large",
        "'big.png': 40x30 is 1200 pixels, over MAX_IMAGE_PIXELS (1000)",
        filename="big.png",
    )


def test_more_files_than_max_files_is_refused(limited):
    response = limited.post("/predict", files=files(*[(f"{i}.png", png(10, 10)) for i in range(3)]))

    too_many_files(response)


def test_a_full_queue_answers_503_with_retry_after(limited):
    with limited.app.state.dataplane.model().batcher.admit(3):  # three images already waiting, room for one
        response = limited.post("/predict", files=files(("a.png", png(10, 10)), ("b.png", png(10, 10))))
        room_for_one = limited.post("/predict", files=files(("a.png", png(10, 10))))

    problem(
        response,
        503,
        URN + "overloaded",
        "Overloaded",
        "3 images are waiting for the model; MAX_QUEUE_SIZE is 4",
    )
    assert response.headers["retry-after"] == "1"
    assert room_for_one.status_code == 200


def test_an_image_that_waited_past_request_timeout_ms_answers_503(make_settings):
    settings = make_settings(request_timeout_ms=1, batch_timeout_ms=0)

    with TestClient(create_app(settings)) as client:
        # Decoding and resizing a megapixel PNG alone takes longer than a millisecond.
        response = client.post("/predict", files=files(("large.png", png(1000, 1000))))

    problem(
        response,
        503,
        URN + "request-timed-out",
        "Timed out waiting for the model",
        "Waited over REQUEST_TIMEOUT_MS (1 ms) for the model",
    )
    assert response.headers["retry-after"] == "1"


def test_max_files_is_counted_as_the_multipart_body_is_parsed(limited):
    """The third file is refused as its part begins: the malformed part after it is never parsed."""
    parts = b"".join(
        b"--x\r\nContent-Disposition: form-data; name=file; filename=%d.png\r\n\r\n%s\r\n" % (i, png(10, 10))
        for i in range(3)
    )
    unparsed = b"--x\r\nContent-Disposition: form-data; filename=no-name.png\r\n\r\nxx\r\n--x--\r\n"

    response = limited.post(
        "/predict", content=parts + unparsed, headers={"content-type": "multipart/form-data; boundary=x"}
    )

    too_many_files(response)


def over_budget(response: httpx.Response, held: int, brings: int) -> None:
    """`response` is the 503 of a body that MAX_BODY_BYTES_HELD (30000) has no room for."""
    detail = f"{held} bytes of request bodies are held and this one brings {brings}; "
    detail += "MAX_BODY_BYTES_HELD is 30000"
    problem(response, 503, URN + "overloaded", "Overloaded", detail)
    assert response.headers["retry-after"] == "1"


@pytest.fixture
def budgeted(make_settings):
    """Room for 30 kB of request bodies at once, of which another upload in progress holds 20 kB."""
    settings = make_settings(max_upload_bytes=20_000, max_body_bytes_held=30_000)
    with TestClient(create_app(settings)) as client:
        budget = client.app.state.door.budget
        elsewhere: dict = {}
        budget.hold(elsewhere, 20_000)
        yield client
        budget.release(elsewhere)
        assert budget.held == 0  # every request's bytes were released when it ended


def test_a_body_over_what_max_body_bytes_held_has_left_answers_503_unread(budgeted):
    big, small = png(80, 60), png(10, 10)
    assert 10_000 < len(big) < 20_000 and len(small) < 1000

    refused = budgeted.post("/predict", files=files(("big.png", big)))
    let_in = budgeted.post("/predict", files=files(("small.png", small)))

    over_budget(refused, held=20_000, brings=int(refused.request.headers["content-length"]))
    assert let_in.status_code == 200, let_in.text


def test_a_chunked_body_counts_as_it_arrives(budgeted):
    body = b"--x\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\n" + b"\0" * 16_000

    response = budgeted.post(
        "/predict", content=iter([body]), headers={"content-type": "multipart/form-data; boundary=x"}
    )

    assert "content-length" not in response.request.headers  # nothing to count at the door
    over_budget(response, held=20_000, brings=len(body))
    assert response.headers["connection"] == "close"


def test_a_real_server_sheds_bodies_beyond_the_budget_at_the_door_and_frees_them(model_repository, tmp_path):
    """Through uvicorn: the door in the HTTP protocol counts a body before reading any of it."""
    upload = png(100, 60)  # two of them are over the budget; one is not
    body = multipart("a.png", upload)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    ).encode()

    def post() -> httpx.Response:
        return httpx.post(f"{server.url}/predict", files=files(("a.png", upload)), timeout=60)

    limits = {"MAX_UPLOAD_BYTES": "20000", "MAX_BODY_BYTES_HELD": "30000"}
    with running_server(model_repository, tmp_path / "server.log", **limits) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as holding:
            holding.sendall(head + body[:10])  # an upload in progress holds its whole declared body
            wait_for(lambda: metric(server, "http_requests_in_progress") == 2, "one upload in progress")
            refused = post()
            holding.sendall(body[10:])
            held_answer = holding.recv(65536)
        wait_for(lambda: post().status_code == 200, "the finished upload's bytes released")

    over_budget(refused, held=len(body), brings=int(refused.request.headers["content-length"]))
    assert held_answer.startswith(b"HTTP/1.1 200 OK\r\n")
