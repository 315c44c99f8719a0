"""The real thing: `python -m app` on 127.0.0.1, over real sockets."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests import image_corpus
from tests.app.servers import (
    BOUNDARY,
    Server,
    metric,
    multipart,
    read_until_closed,
    start_server,
    stop,
    wait_for,
    wait_until_ready,
)
from tests.hostile_model import GREY, HOSTILE_MODEL
from tests.support import ROOT
from tests.support.images import png, solid_png
from tests.support.logs import error_lines


def healthcheck(port: int) -> int:
    env = {"PORT": str(port), "PATH": os.environ.get("PATH", "")}
    return subprocess.run([sys.executable, "-m", "app.healthcheck"], cwd=ROOT, env=env, timeout=10).returncode


@pytest.fixture(scope="module")
def server(model_repository, tmp_path_factory) -> Iterator[Server]:
    server = start_server(
        model_repository, tmp_path_factory.mktemp("server") / "server.log", MAX_UPLOAD_BYTES="1000000"
    )
    try:
        wait_until_ready(server)
        yield server
    finally:
        stop(server)


def test_the_server_says_how_to_try_it_once_ready(server):
    assert f"Ready. Try: curl -F file=@image.jpg http://127.0.0.1:{server.port}/predict" in server.output()


def test_a_start_logs_no_tensorflow_lines_that_read_as_errors(server):
    # On a CPU machine the GPU-enabled wheel logs "E0000 ... failed call to cuInit" unless quieted.
    assert error_lines(server.output()) == []


# TensorFlow's notice on CPUs with AVX-512 (port.cc), written before its log level applies: an INFO
# line, which the service leaves (TF_ENABLE_ONEDNN_OPTS=0 would hide it by giving up oneDNN's speed).
ONEDNN_NOTICE = (
    "I0000 00:00:1733349000.123456    1234 port.cc:153] oneDNN custom operations are on. You may see "
    "slightly different numerical results due to floating-point round-off errors from different "
    "computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`."
)
CUINIT_ERROR = (
    "E0000 00:00:1733349000.123456    1234 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)"
)


def test_what_reads_as_an_error_on_either_kind_of_cpu():
    """The start's check holds on a CPU with AVX-512 as on one without: the oneDNN notice is no error."""
    crash = "ERROR:    Exception in ASGI application"
    log = "\n".join([ONEDNN_NOTICE, "INFO:     Application startup complete.", CUINIT_ERROR, crash])

    assert error_lines(log) == [CUINIT_ERROR, crash]


def test_the_server_predicts(server, serving_default):
    data = png(seed=11)

    response = httpx.post(f"{server.url}/predict", files={"file": ("a.png", data)}, params={"top_k": 3})

    assert response.status_code == 200
    predictions = response.json()["results"][0]["predictions"]
    scores = np.array([p["score"] for p in sorted(predictions, key=lambda p: p["index"])])
    np.testing.assert_allclose(scores, serving_default(data), atol=1e-5)


def test_photos_get_the_scores_tf_serving_would_give(server, serving_default):
    """The README's promise as a user meets it: JPEGs and WebP through the port, as serving_default."""
    names = ["baseline-420.jpg", "progressive.jpg", "cmyk.jpg", "grayscale.jpg", "lossy.webp"]
    corpus = image_corpus.corpus()

    response = httpx.post(
        f"{server.url}/predict", files=[("file", (name, corpus[name])) for name in names], params={"top_k": 3}
    )

    assert response.status_code == 200, response.text
    for name, result in zip(names, response.json()["results"], strict=True):
        scores = np.array([p["score"] for p in sorted(result["predictions"], key=lambda p: p["index"])])
        np.testing.assert_allclose(scores, serving_default(corpus[name]), atol=1e-6, err_msg=name)


def test_the_healthcheck_passes_once_ready(server):
    assert healthcheck(server.port) == 0


def test_a_declared_oversize_body_is_refused_before_it_is_sent(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000000\r\n\r\n"
        )
        answer = read_until_closed(connection)  # no body byte was sent

    assert answer.startswith("HTTP/1.1 413 ")
    assert "content-type: application/problem+json" in answer.lower()
    assert answer.endswith('"detail":"The request body is over MAX_UPLOAD_BYTES (1000000 bytes)"}')


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(server):
    sent = 0

    def endless_upload() -> Iterator[bytes]:
        nonlocal sent
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
        while sent < 32_000_000:
            sent += 65536
            yield b"\0" * 65536

    response = httpx.post(
        f"{server.url}/predict",
        content=endless_upload(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )

    assert response.status_code == 413
    assert response.json()["detail"] == "The request body is over MAX_UPLOAD_BYTES (1000000 bytes)"
    assert sent < 16_000_000  # refused at 1 MB; the rest is what socket buffers took meanwhile


def test_a_client_that_disconnects_has_its_queued_images_withdrawn(hostile_repository, tmp_path):
    server = start_server(
        hostile_repository.base, tmp_path / "server.log", MODEL_NAME=HOSTILE_MODEL, MAX_BATCH_SIZE="4"
    )
    try:
        wait_until_ready(server)
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(
                httpx.post, f"{server.url}/predict", files={"file": ("grey.png", solid_png(GREY))}, timeout=60
            )
            wait_for(hostile_repository.entered.exists, "the model holds the grey image")
            body = multipart("queued.png", png(seed=3))
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as leaving:
                leaving.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: test\r\n"
                    + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                wait_for(
                    lambda: metric(server, "inference_queue_depth", version="1") == 1, "the image queued"
                )
            # The socket is closed: the queue empties while the model still holds the grey image.
            closed = {"route": "/predict", "method": "POST", "status": "499"}
            wait_for(lambda: metric(server, "http_requests_total", **closed) == 1, "a 499 counted")
            assert metric(server, "inference_queue_depth", version="1") == 0
            hostile_repository.gate.touch()
            assert held.result(timeout=60).status_code == 200
        assert metric(server, "inference_batch_size_count", version="1") == 1  # the withdrawn image never ran
    finally:
        hostile_repository.gate.unlink(missing_ok=True)
        hostile_repository.entered.unlink(missing_ok=True)
        stop(server)


def test_sigterm_turns_readiness_off_at_once_and_finishes_admitted_requests(model_repository, tmp_path):
    server = start_server(model_repository, tmp_path / "server.log", SHUTDOWN_DELAY_S="5")
    try:
        assert healthcheck(server.port) == 1  # still importing TensorFlow: not even listening
        wait_until_ready(server)
        in_flight = 6
        responses: list[httpx.Response] = []

        def slow_upload(i: int) -> None:
            body = multipart(f"{i}.png", png(200, 200, seed=i))
            parts = [body[j : j + len(body) // 10 + 1] for j in range(0, len(body), len(body) // 10 + 1)]

            def trickle() -> Iterator[bytes]:
                for part in parts:  # about 1.5 s in all: the upload is under way at SIGTERM
                    time.sleep(0.15)
                    yield part

            headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
            responses.append(
                httpx.post(f"{server.url}/predict", content=trickle(), headers=headers, timeout=60)
            )

        clients = [threading.Thread(target=slow_upload, args=(i,)) for i in range(in_flight)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 10
        while "http_requests_in_progress 7.0" not in httpx.get(f"{server.url}/metrics").text:  # and /metrics
            assert time.monotonic() < deadline, "the uploads never started"
            time.sleep(0.02)

        server.process.send_signal(signal.SIGTERM)
        # Within SHUTDOWN_DELAY_S the listener stays open: a load balancer sees 503 and new
        # requests are still served.
        readiness = httpx.get(f"{server.url}/readyz", timeout=5)
        late = httpx.post(
            f"{server.url}/predict", files={"file": ("late.png", png(60, 60), "image/png")}, timeout=30
        )
        for client in clients:
            client.join(timeout=60)

        assert (readiness.status_code, readiness.json()["detail"]) == (503, "The service is shutting down")
        assert late.status_code == 200, late.text
        assert [r.status_code for r in responses] == [200] * in_flight
        assert all(len(r.json()["results"]) == 1 for r in responses)
        assert server.process.wait(timeout=60) == 0
        assert "Finished server process" in server.output()
    finally:
        stop(server)


def test_a_second_sigterm_ends_the_shutdown_delay(model_repository, tmp_path):
    server = start_server(model_repository, tmp_path / "server.log", SHUTDOWN_DELAY_S="300")
    try:
        wait_until_ready(server)
        server.process.send_signal(signal.SIGTERM)
        assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 503
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, "exited long before the 300 s delay"
    finally:
        stop(server)
