"""Slow, idle and oversized clients against a real server (app/connections.py, app/api/body_limit.py).

Each test waits for the server to act, with a deadline well past the limit it tests: a server that
never cuts a slow client off fails the test, a busy machine only makes it slower.
"""

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.connections import Turns, uvicorn_mismatches
from tests.app.servers import (
    BOUNDARY,
    Server,
    metric,
    multipart,
    read_until_closed,
    running_server,
    start_server,
    stop,
    wait_for,
    wait_until_ready,
)
from tests.support.images import png

KEY = "connections-test-key"
HEADER_TIMEOUT_S = 10  # long enough that 200 connections open well within it, on the busiest machine
DEADLINE_S = 60


@pytest.fixture(scope="module")
def server(model_repository, tmp_path_factory) -> Iterator[Server]:
    server = start_server(
        model_repository,
        tmp_path_factory.mktemp("connections") / "server.log",
        HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        BODY_TIMEOUT_S="2",
        KEEP_ALIVE_TIMEOUT_S="1",
        MAX_HEADER_BYTES="4096",
        API_KEYS=KEY,
    )
    try:
        wait_until_ready(server)
        yield server
    finally:
        stop(server)


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)


def predict(server: Server) -> httpx.Response:
    return httpx.post(
        f"{server.url}/predict",
        files={"file": ("a.png", png())},
        headers={"x-api-key": KEY},
        timeout=DEADLINE_S,
    )


def still_open(connection: socket.socket) -> bool:
    """Whether the server has kept the connection open (nothing to read, no end of stream)."""
    connection.setblocking(False)
    try:
        return connection.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True


def read_while_trickling(connection: socket.socket, data: bytes) -> str:
    """What the server sends until it closes the connection, while `data` goes out a byte at a time."""
    stop_sending = threading.Event()

    def trickle() -> None:
        for byte in data:
            if stop_sending.wait(0.05):
                return
            try:
                connection.send(bytes([byte]))
            except OSError:  # the server closed the connection
                return

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        return read_until_closed(connection)
    finally:
        stop_sending.set()
        sender.join(timeout=DEADLINE_S)


def test_requests_let_in_together_start_a_few_per_turn_of_the_event_loop():
    """Between turns, the loop reads its sockets again; one cancelled while waiting gives up its turn."""

    async def scenario() -> tuple[dict[str, int], bool]:
        loop = asyncio.get_running_loop()
        turns = Turns(per_turn=2)
        turn = 0

        def count_turns() -> None:
            nonlocal turn
            turn += 1
            loop.call_soon(count_turns)

        count_turns()
        started: dict[str, int] = {}

        async def request(name: str) -> None:
            await turns.wait()
            started[name] = turn

        tasks = {name: asyncio.create_task(request(name)) for name in "abcdef"}
        await asyncio.sleep(0)  # each task has run to its turn: "a" and "b" have started
        tasks["c"].cancel()
        await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), DEADLINE_S)
        await asyncio.wait_for(turns.wait(), DEADLINE_S)  # once nobody waits, a request goes on at once
        return started, tasks["c"].cancelled()

    started, cancelled = asyncio.run(scenario())

    assert list(started) == ["a", "b", "d", "e", "f"] and cancelled
    assert started["a"] == started["b"] < started["d"] == started["e"] < started["f"]


def test_a_client_sending_headers_byte_by_byte_is_cut_off(server):
    with connect(server) as slowloris:
        slowloris.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nX-Api-Key: conn")

        assert read_until_closed(slowloris) == ""  # closed, unanswered: there was no request


def test_a_connection_that_never_sends_is_cut_off(server):
    with connect(server) as idle:
        assert read_until_closed(idle) == ""


def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(server):
    with connect(server) as kept:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")

        answer = read_until_closed(kept)

    assert answer.startswith("HTTP/1.1 200 OK")
    assert answer.endswith('{"status":"alive"}')


def test_a_trickling_body_gets_408(server):
    body = multipart("a.png", png())

    with connect(server) as trickler:
        trickler.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\n"
            + f"X-API-Key: {KEY}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        answer = read_while_trickling(trickler, body[:-1])  # never the whole body

    assert answer.startswith("HTTP/1.1 408 ")
    assert "content-type: application/problem+json" in answer.lower()
    assert answer.endswith('"detail":"The request body took over BODY_TIMEOUT_S (2 s)"}')


def test_headers_over_the_limit_get_431(server):
    with connect(server) as big:
        big.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 8192 + b"\r\n\r\n")

        answer = read_until_closed(big)

    assert answer.startswith("HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert answer.endswith('"detail":"The request line and headers are over MAX_HEADER_BYTES (4096 bytes)"}')


def test_other_clients_are_served_while_200_slow_connections_are_open(server):
    slow = [connect(server) for _ in range(200)]
    try:
        for connection in slow:
            connection.sendall(b"POST /predict HTTP/1.1\r\nHost: te")

        response = predict(server)

        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["filename"] == "a.png"
        assert all(still_open(connection) for connection in slow)  # the slow ones were there throughout
    finally:
        for connection in slow:
            connection.close()


def test_api_keys_guard_the_real_server_and_never_reach_its_log(server):
    refused = httpx.post(f"{server.url}/predict", files={"file": ("a.png", png())}, timeout=DEADLINE_S)
    wrong = httpx.get(
        f"{server.url}/model", headers={"authorization": "Bearer not-the-key"}, timeout=DEADLINE_S
    )

    assert (refused.status_code, wrong.status_code) == (401, 401)
    assert refused.headers["www-authenticate"] == 'Bearer realm="inception-v2-service"'
    assert predict(server).status_code == 200
    assert httpx.get(f"{server.url}/readyz", timeout=DEADLINE_S).status_code == 200
    assert KEY not in server.output() and "not-the-key" not in server.output()


@pytest.fixture(scope="module")
def full_server(model_repository, tmp_path_factory) -> Iterator[Server]:
    """A queue of one image: an upload in progress fills it, and the door refuses the next request."""
    log = tmp_path_factory.mktemp("full") / "server.log"
    limits = {"MAX_QUEUE_SIZE": "1", "MAX_FILES": "1", "BODY_TIMEOUT_S": "5", "KEEP_ALIVE_TIMEOUT_S": "1"}
    with running_server(model_repository, log, **limits) as server:
        yield server


def refused_at_the_door(server: Server) -> tuple[socket.socket, bytes]:
    """A connection whose request the door has refused, kept open for its body; and that body.

    An upload in progress fills the queue while the refused request's head is sent (the upload's
    own BODY_TIMEOUT_S then ends it)."""
    body = multipart("a.png", png())
    head = (
        f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    ).encode()
    filling = connect(server)
    filling.sendall(head + body[:10])
    wait_for(lambda: metric(server, "http_requests_in_progress") == 2, "one upload in progress")
    refused = connect(server)
    refused.sendall(head)
    answer = refused.recv(65536).decode()
    filling.close()
    assert answer.startswith("HTTP/1.1 503 Service Unavailable\r\n"), answer
    assert "connection: close" not in answer.lower()  # kept, for the body to be skipped
    return refused, body


def test_a_refused_request_whose_body_trickles_is_cut_off_after_body_timeout(full_server):
    connection, body = refused_at_the_door(full_server)
    with connection:
        assert read_while_trickling(connection, body) == ""  # within DEADLINE_S, or recv raises
    assert "refused request's body took over BODY_TIMEOUT_S" in full_server.output()


def test_a_connection_idle_after_a_refused_requests_body_is_closed_after_the_keep_alive_timeout(
    full_server,
):
    connection, body = refused_at_the_door(full_server)
    with connection:
        connection.sendall(body)

        assert read_until_closed(connection) == ""


def test_a_client_hanging_up_mid_upload_is_counted_as_499_in_one_quiet_line(full_server):
    def hung_up() -> float:
        return metric(full_server, "http_requests_total", route="/predict", method="POST", status="499") or 0

    before = hung_up()
    body = multipart("a.png", png())
    with connect(full_server) as leaving:
        leaving.sendall(
            f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n".encode()
            + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n".encode()
            + body[:100]
        )
        wait_for(lambda: metric(full_server, "http_requests_in_progress") == 2, "the upload in progress")

    wait_for(lambda: hung_up() == before + 1, "the hang-up counted")
    output = full_server.output()
    assert "Exception in ASGI application" not in output and "Traceback" not in output
    assert "INFO:     The client went away before its request was read: POST /predict" in output


def test_the_installed_uvicorn_calls_every_override_and_keeps_the_state_read():
    assert uvicorn_mismatches() == []


class ProtocolBefore045(HttpToolsProtocol):
    """uvicorn's protocol as it was before 0.45: the app's task started in `on_headers_complete`."""

    _start_asgi_task = None

    def on_headers_complete(self) -> None:
        self.loop.create_task(self.cycle.run_asgi(self.app))


class CycleWithoutMoreBody(RequestResponseCycle):
    def __init__(self, scope: dict) -> None:
        self.scope = scope
        self.keep_alive: bool = True
        self.response_complete = False


def test_a_uvicorn_that_would_not_call_an_override_is_named_at_start_up():
    """Checked when `python -m app` makes its protocol (`guarded_protocol`), which then exits."""
    assert uvicorn_mismatches(ProtocolBefore045, CycleWithoutMoreBody) == [
        "ProtocolBefore045._start_asgi_task is gone: the override would never be called",
        "ProtocolBefore045.on_headers_complete no longer calls self._start_asgi_task()",
        "CycleWithoutMoreBody no longer sets self.more_body",
    ]
