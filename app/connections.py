"""uvicorn's HTTP protocol, with what uvicorn's own settings leave open.

uvicorn closes an idle keep-alive connection (`timeout_keep_alive`) and caps open connections
(`limit_concurrency`), but with its httptools parser nothing bounds how long a client may take to
send a request's headers, nor how large they may grow: a client sending one header byte at a
time (slowloris) holds its connection for ever. `guarded_protocol` adds both bounds.

It also sheds load at the door: an inference request whose queue is full is answered 503 as soon
as its headers are parsed, without starting the app. Under overload most requests are refused,
and each refusal through the app's middleware stack cost the event loop as much as the requests
being served were waiting for (docs/reliability.md). A refused request with a small body keeps its
connection: the parser skips the body, and a client that retries does not pay for a new
connection, nor the event loop for accepting it. A request let in is counted by the door from that
moment until its app task ends: a burst whose headers are read in one turn of the event loop is
decided in that turn, before any of its app tasks has run.

The inference requests let in then start a few per turn of the event loop (`Turns`). Each one's
first step reads and parses its whole upload on the event loop (about a millisecond for four small
images); started together, the 60-odd requests a burst lets in held the loop for over 60 ms before
the requests arriving behind them could be refused. A few per turn, the loop reads the sockets
again between them, and a refusal waits for at most a few uploads' parsing.
"""

import asyncio
import inspect
import json
import logging
import re
from collections import deque
from http import HTTPStatus
from typing import Protocol

import uvicorn
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string


class Door(Protocol):
    """The app's admission at the door (app/api/admission.py)."""

    def refusal(self, scope: dict) -> Response | None:
        """The answer to refuse a request with, unread; None lets it in (counted until `leave`)."""

    def counts(self, scope: dict) -> bool:
        """Whether `refusal` let this request in bound for a queue (an inference request)."""

    def leave(self, scope: dict) -> None:
        """A request that `refusal` let in has finished."""


# A refused request's body up to this size is skipped to keep the connection; a larger one (or one
# of unknown size) is not worth receiving, and the connection is closed instead.
MAX_SKIPPED_BODY_BYTES = 1024 * 1024

TOO_LARGE = {
    "type": "about:blank",
    "title": "Request Header Fields Too Large",
    "status": 431,
    "detail": "The request line and headers are over MAX_HEADER_BYTES ({limit} bytes)",
}


class Turns:
    """Starts the requests that wait here a few per turn of the event loop, in the order they came.

    Up to `per_turn` requests start in a turn; the others wait for later turns. Between two turns
    the loop polls its sockets, so whatever arrived meanwhile is read (and refused, if it must be)
    before more requests' apps run. One per turn refused a burst no sooner, and under clients
    retrying at once it fed the model too slowly (docs/reliability.md): four is a few milliseconds
    of parsing between two reads of the sockets.
    """

    def __init__(self, per_turn: int = 4) -> None:
        self.per_turn = per_turn
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._started = 0  # requests started in this turn; `_next_turn` is due while there are any

    async def wait(self) -> None:
        """Return in a turn of the event loop that has started fewer than `per_turn` requests."""
        loop = asyncio.get_running_loop()
        if not self._waiting and self._started < self.per_turn:
            if not self._started:
                loop.call_soon(self._next_turn, loop)
            self._started += 1
            return
        turn = loop.create_future()
        self._waiting.append(turn)
        await turn

    def _next_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called once per turn while requests start: lets the next ones waiting start."""
        self._started = 0
        while self._waiting and self._started < self.per_turn:
            turn = self._waiting.popleft()
            if not turn.done():  # a request cancelled while it waited gives up its turn
                turn.set_result(None)
                self._started += 1
        if self._started:
            loop.call_soon(self._next_turn, loop)


# What this module relies on in uvicorn's private httptools protocol (pyproject.toml pins the range):
# the methods it overrides, the uvicorn methods that must call an override for it to take effect,
# and the state of the protocol and of its request cycle it reads or sets.
OVERRIDES = (
    "connection_made", "data_received", "connection_lost", "on_message_begin", "on_url", "on_header",
    "on_headers_complete", "on_message_complete", "send_400_response", "_start_asgi_task",
)  # fmt: skip
CALLERS = {
    "_start_asgi_task": ("on_headers_complete", "on_response_complete"),
    "send_400_response": ("data_received",),
}
PROTOCOL_STATE = (
    "loop", "logger", "access_logger", "access_log", "timeout_keep_alive_task", "timeout_keep_alive",
    "server_state", "transport", "pipeline", "expect_100_continue", "cycle",
)  # fmt: skip
CYCLE_STATE = ("scope", "keep_alive", "more_body", "response_complete")


class UvicornMismatch(RuntimeError):
    """The installed uvicorn's HTTP protocol is not the one `GuardedHttpToolsProtocol` extends."""


def uvicorn_mismatches(protocol: type = HttpToolsProtocol, cycle: type = RequestResponseCycle) -> list[str]:
    """What of `OVERRIDES`, `CALLERS` and the state above `protocol` and `cycle` lack: each an override
    uvicorn would never call, or state it no longer keeps. Read from their code, not by running it."""
    problems = []
    for name in OVERRIDES:
        if not callable(getattr(protocol, name, None)):
            problems.append(f"{protocol.__name__}.{name} is gone: the override would never be called")
    for name, callers in CALLERS.items():
        for caller in callers:
            method = getattr(protocol, caller, None)
            if method is None or f"self.{name}(" not in inspect.getsource(method):
                problems.append(f"{protocol.__name__}.{caller} no longer calls self.{name}()")
    for cls, names in ((protocol, PROTOCOL_STATE), (cycle, CYCLE_STATE)):
        init = inspect.getsource(cls.__init__)
        for name in names:
            if not re.search(rf"\bself\.{name}\b\s*(?::[^=\n]+)?=", init):
                problems.append(f"{cls.__name__} no longer sets self.{name}")
    return problems


def check_uvicorn() -> None:
    """Raise `UvicornMismatch` naming every hook that would fail to take, rather than let the limits
    and the door lapse in silence."""
    if problems := uvicorn_mismatches():
        raise UvicornMismatch(
            f"uvicorn {uvicorn.__version__} does not work as app/connections.py expects "
            "(install the version pyproject.toml pins):\n  " + "\n  ".join(problems)
        )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request head is too slow or too large.

    The clock starts when the connection opens, or when the next request on it begins, and stops
    once the headers are complete; the body has its own deadline (BODY_TIMEOUT_S, in the app). The
    body of a request refused at the door never reaches the app: the protocol bounds it instead.
    """

    header_timeout_s: float
    max_header_bytes: int
    body_timeout_s: float
    door: Door
    turns: Turns  # one per server: its inference requests start a few per turn of the loop

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self._header_timer = None
        self._skip_timer = None
        self._head_too_large = False
        super().connection_made(transport)
        self._await_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # a further request on a kept-alive connection
            self._await_headers()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:  # raised by a parser callback: uvicorn would answer 400
            self._refuse_large_head()
        else:
            super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app) -> None:  # type: ignore[no-untyped-def]
        """Ask the door first; uvicorn starts the app here, once a request's headers are complete."""
        response = self.door.refusal(cycle.scope)
        if response is None:
            super()._start_asgi_task(cycle, _through_the_door(app, self.door, self.turns))
        else:
            self._refuse(cycle, response)

    def _refuse(self, cycle: RequestResponseCycle, response: Response) -> None:
        """Write `response` unread. Keep the connection when its body is small enough to skip (the
        parser drops it), else close it, as the app's own 503 does."""
        cycle.response_complete = True  # the parser now drops the body
        keep_alive = cycle.keep_alive and not self.expect_100_continue and _small_body(cycle.scope)
        status = response.status_code
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
        for name, value in [*self.server_state.default_headers, *response.raw_headers]:
            head.append(name + b": " + value + b"\r\n")
        if not keep_alive:
            head.append(b"connection: close\r\n")
        self.transport.write(b"".join(head) + b"\r\n" + response.body)
        if keep_alive:
            if cycle.more_body:  # its body is still to come (a pipelined one may have come whole)
                self._skip_timer = self.loop.call_later(self.body_timeout_s, self._cut_off_skipped_body)
            self.on_response_complete()  # the keep-alive timer, or the next pipelined request
        else:
            self.transport.close()
        if self.access_log and self.access_logger.isEnabledFor(logging.INFO):  # not for nothing
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(cycle.scope),
                cycle.scope["method"],
                get_path_with_query_string(cycle.scope),
                cycle.scope["http_version"],
                status,
            )

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._skip_timer is not None:
            # A refused request's body, skipped to its end. The bytes that brought it stopped
            # uvicorn's keep-alive timer, and only a response restarts it: restart it here.
            self._stop_skip_timer()
            if self.timeout_keep_alive_task is None and not self.pipeline:
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

    def data_received(self, data: bytes) -> None:
        awaiting_headers = self._header_timer is not None
        super().data_received(data)
        # A head arriving in pieces is counted by the byte: httptools buffers an unfinished header.
        if awaiting_headers and self._header_timer is not None and not self.transport.is_closing():
            self._received_head_bytes += len(data)
            if self._received_head_bytes > self.max_header_bytes:
                self._refuse_large_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        self._stop_skip_timer()
        super().connection_lost(exc)

    def _count_head(self, size: int) -> None:
        """Count a complete piece of the head; over the limit, stop the parser (it raises)."""
        self._parsed_head_bytes += size
        if self._parsed_head_bytes > self.max_header_bytes:
            self._head_too_large = True
            raise ValueError("request head over MAX_HEADER_BYTES")

    def _await_headers(self) -> None:
        self._received_head_bytes = self._parsed_head_bytes = 0
        self._head_too_large = False
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._cut_off)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cut_off(self) -> None:
        """Headers too slow: close without an answer, as nginx does (the client sent no request)."""
        self._header_timer = None
        if not self.transport.is_closing():
            self.logger.info("Closed a connection whose request headers took over HEADER_TIMEOUT_S")
            self.transport.close()

    def _stop_skip_timer(self) -> None:
        if self._skip_timer is not None:
            self._skip_timer.cancel()
            self._skip_timer = None

    def _cut_off_skipped_body(self) -> None:
        """A refused request's body too slow: the answer is sent, so close, as for slow headers."""
        self._skip_timer = None
        if not self.transport.is_closing():
            self.logger.info("Closed a connection whose refused request's body took over BODY_TIMEOUT_S")
            self.transport.close()

    def _refuse_large_head(self) -> None:
        self._stop_header_timer()
        detail = TOO_LARGE["detail"].format(limit=self.max_header_bytes)
        body = json.dumps({**TOO_LARGE, "detail": detail}, separators=(",", ":"))
        head = (
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/problem+json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body.encode())
        self.transport.close()


def _through_the_door(app: ASGIApp, door: Door, turns: Turns) -> ASGIApp:
    """`app`, starting the requests the door let in on their turn, and telling the door when each
    has finished."""

    async def app_on_its_turn(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if door.counts(scope):
                await turns.wait()
            await app(scope, receive, send)
        finally:
            door.leave(scope)

    return app_on_its_turn


def _small_body(scope: dict) -> bool:
    """Whether the request declares a body of at most MAX_SKIPPED_BODY_BYTES (chunked ones do not)."""
    headers = dict(scope["headers"])
    if b"transfer-encoding" in headers:
        return False
    declared = headers.get(b"content-length", b"0")
    return declared.isdigit() and int(declared) <= MAX_SKIPPED_BODY_BYTES


def guarded_protocol(
    header_timeout_s: float, max_header_bytes: int, body_timeout_s: float, door: Door
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`, with these limits and this door; raises
    `UvicornMismatch` if the installed uvicorn would not call its overrides."""
    check_uvicorn()
    return type(
        "GuardedHttpTools",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": header_timeout_s,
            "max_header_bytes": max_header_bytes,
            "body_timeout_s": body_timeout_s,
            "door": door,
            "turns": Turns(),
        },
    )
