"""Request body limits: MAX_UPLOAD_BYTES (413) and BODY_TIMEOUT_S (408), without reading too much.

A body over the size limit is refused without being read into memory; a body that trickles in is
cut off once BODY_TIMEOUT_S has passed since its headers, so a slow client cannot hold a request
(and its share of the upload buffers) open for ever.
"""

import asyncio

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import service_error
from app.errors import BodyTimedOut, PayloadTooLarge, ServiceError


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

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Request(scope).headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send, self._too_large())
            return
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
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                return await refuse(self._too_large())
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
