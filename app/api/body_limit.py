"""Request body limits: MAX_UPLOAD_BYTES (413), BODY_TIMEOUT_S (408) and MAX_BODY_BYTES_HELD (503),
without reading too much.

A body over the size limit is refused without being read into memory; a body that trickles in is
cut off once BODY_TIMEOUT_S has passed since its headers, so a slow client cannot hold a request
(and its share of the upload buffers) open for ever. Bodies are held in memory until their request
ends, so the bytes of all of them together are bounded too (`BodyBudget`).
"""

import asyncio

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import service_error
from app.errors import BodyTimedOut, Overloaded, PayloadTooLarge, ServiceError

# The scope key under which a request's share of the budget is noted, from `BodyBudget.hold` on.
HELD = "app.body_budget.held"


def declared_body_bytes(scope: Scope) -> int | None:
    """The request's Content-Length, or None when it has none (a chunked body) or an unreadable one."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyBudget:
    """The request-body bytes held in memory at once, by the inference requests the door let in.

    Each upload is read whole before it is parsed, and held until its request ends: a burst of
    large uploads let in by the queue (which counts images, not bytes) would hold hundreds of times
    MAX_UPLOAD_BYTES, past any container's memory limit, and be OOM-killed with every request in
    flight. A body of known length is counted whole at the door, before any of it is read; a chunked
    one as its chunks arrive. Beyond the budget, requests are shed with 503 and Retry-After.
    """

    def __init__(self, max_bytes: int, max_body_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_body_bytes = max_body_bytes  # a body declared larger is refused unread (413)
        self.held = 0

    def refusal(self, scope: Scope) -> Overloaded | None:
        """The error to shed the request of `scope` with, at the door, if its body does not fit."""
        size = self._declared(scope)
        return None if self.fits(size) else self.overloaded(size)

    def admit(self, scope: Scope) -> None:
        """Count the declared body of the request of `scope`, let in at the door, until `release`."""
        self.hold(scope, self._declared(scope))

    def fits(self, size: int) -> bool:
        return self.held + size <= self.max_bytes

    def hold(self, scope: Scope, size: int) -> None:
        """Count `size` more bytes for the request of `scope`, until `release(scope)`."""
        scope[HELD] = scope.get(HELD, 0) + size
        self.held += size

    def counts(self, scope: Scope) -> bool:
        """Whether the request of `scope` is under the budget (the door let it in)."""
        return HELD in scope

    def release(self, scope: Scope) -> None:
        """The request of `scope` has ended: its bytes are free (nothing if it held none)."""
        self.held -= scope.pop(HELD, 0)

    def _declared(self, scope: Scope) -> int:
        """The bytes the door counts: Content-Length, or 0 for a chunked body or one never read."""
        declared = declared_body_bytes(scope)
        return declared if declared is not None and declared <= self.max_body_bytes else 0

    def overloaded(self, size: int) -> Overloaded:
        return Overloaded(
            f"{self.held} bytes of request bodies are held and this one brings {size}; "
            f"MAX_BODY_BYTES_HELD is {self.max_bytes}"
        )


class RequestBodyLimit:
    """Answers 413 to a body over `max_bytes` before the app has read it, 408 to one too slow.

    A declared Content-Length over the limit is refused before the app runs. A chunked body is
    counted as it streams in and refused the moment it passes the limit; the app then sees the
    client disconnect, and whatever it answers is dropped. A body still incomplete `timeout_s`
    after the request began is refused the same way. Either answer closes the connection, so the
    client stops sending.

    (Starlette's own `max_body_size` replaces the answer with a plain-text 413 when Content-Length
    is over the limit, which would break the one error shape.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float, budget: BodyBudget) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_body_bytes(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, self._too_large())
            return
        # A body of known length was counted whole at the door; a chunked one counts as it comes.
        budgeted_chunks = declared is None and self.budget.counts(scope)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        received = 0
        body_complete = refused = response_started = False

        async def refuse(error: ServiceError) -> Message:
            nonlocal refused
            refused = True
            if not response_started:
                await self._refuse(scope, receive, send, error)
            return {"type": "http.disconnect"}

        async def receive_guarded() -> Message:
            nonlocal received, body_complete
            if refused:
                return {"type": "http.disconnect"}
            if body_complete:  # only a disconnect can come now, whenever the client leaves
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):  # a timer, not wait_for's task per chunk
                    message = await receive()
            except TimeoutError:
                return await refuse(
                    BodyTimedOut(f"The request body took over BODY_TIMEOUT_S ({self.timeout_s:g} s)")
                )
            chunk = len(message.get("body", b""))
            received += chunk
            if received > self.max_bytes:
                return await refuse(self._too_large())
            if budgeted_chunks:
                if not self.budget.fits(chunk):
                    return await refuse(self.budget.overloaded(chunk))
                self.budget.hold(scope, chunk)
            body_complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def send_unless_refused(message: Message) -> None:
            nonlocal response_started
            if not refused:
                response_started = True
                await send(message)

        try:
            await self.app(scope, receive_guarded, send_unless_refused)
        except Exception:
            if not refused:  # after a 413 or 408 the app's reaction to the cut-off body does not matter
                raise

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body is over MAX_UPLOAD_BYTES ({self.max_bytes} bytes)")

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, error: ServiceError) -> None:
        response = await service_error(Request(scope, receive), error)
        response.headers["connection"] = "close"
        await response(scope, receive, send)
