"""MAX_UPLOAD_BYTES: refuse large request bodies with 413 without reading them into memory."""

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import service_error
from app.errors import PayloadTooLarge


class RequestBodyLimit:
    """Answers 413 to a body over `max_bytes`, before the app has read it.

    A declared Content-Length over the limit is refused before the app runs. A chunked body is
    counted as it streams in and refused the moment it passes the limit; the app then sees the
    client disconnect, and whatever it answers is dropped. The 413 closes the connection, so the
    client stops sending.

    (Starlette's own `max_body_size` replaces the answer with a plain-text 413 when Content-Length
    is over the limit, which would break the one error shape.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Request(scope).headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        refused = response_started = False

        async def receive_counting() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                refused = True
                if not response_started:
                    await self._refuse(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: Message) -> None:
            nonlocal response_started
            if not refused:
                response_started = True
                await send(message)

        try:
            await self.app(scope, receive_counting, send_unless_refused)
        except Exception:
            if not refused:  # after a 413 the app's reaction to the cut-off body does not matter
                raise

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(f"The request body is over MAX_UPLOAD_BYTES ({self.max_bytes} bytes)")
        response = await service_error(Request(scope, receive), error)
        response.headers["connection"] = "close"
        await response(scope, receive, send)
