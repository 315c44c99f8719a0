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

from app.connections import Turns
from tests.app.servers import (
    BOUNDARY,
    Server,
    multipart,
    read_until_closed,
    start_server,
    stop,
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
    stop_sending = threading.Event()

    with connect(server) as trickler:
        trickler.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\n"
            + f"X-API-Key: {KEY}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )

        def trickle() -> None:
            for byte in body[:-1]:  # never the whole body
                if stop_sending.wait(0.05):
                    return
                try:
                    trickler.send(bytes([byte]))
                except OSError:  # the server closed the connection
                    return

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            answer = read_until_closed(trickler)
        finally:
            stop_sending.set()
            sender.join(timeout=DEADLINE_S)

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
