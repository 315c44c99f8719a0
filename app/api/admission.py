"""Shed load before reading the body: 503 at once when the target version's queue has no room anyway.

Without this, an overloaded service read and parsed every upload before the queue refused it,
and the refusals queued behind that work on the event loop (a median 503 of about 2 s at 384
concurrent requests). Requests past the door and not yet admitted (bodies being received or
parsed) count as one image each, so a burst that arrives together is shed at the door too, not
only once the queue is full. Only the path and query are read: which version a request targets is
known before its body.
"""

import re
from types import SimpleNamespace
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.problems import service_error
from app.errors import Overloaded, ServiceError
from app.runtime.batcher import Batcher

# The inference routes of the three APIs, and the route template each is counted under in /metrics.
INFERENCE_ROUTES = [
    (re.compile(r"/predict"), "/predict"),
    (
        re.compile(
            r"/v1/models/[^/:]+(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?:(?:predict|classify|regress)"
        ),
        "/v1/{path:path}",
    ),
    (re.compile(r"/v2/models/[^/]+(?:/versions/(?P<version>\d+))?/infer"), "/v2/models/{name}/infer"),
]


def target(scope: Scope) -> tuple[str, int | None, str | None] | None:
    """For an inference request: its route template, and the version or label it asks for."""
    if scope["method"] != "POST":
        return None
    for pattern, template in INFERENCE_ROUTES:
        if match := pattern.fullmatch(scope["path"]):
            wanted = match.groupdict()
            if template == "/predict":  # ?version= and ?label=
                query = parse_qs(scope["query_string"].decode("latin-1"))
                wanted = {"version": query.get("version", [None])[0], "label": query.get("label", [None])[0]}
            version = wanted.get("version")
            return template, int(version) if version and version.isdigit() else None, wanted.get("label")
    return None


def target_batcher(scope: Scope, version: int | None, label: str | None) -> Batcher | None:
    """The queue the request would join, or None when the route itself must answer (no such version)."""
    models = scope["app"].state.models
    if models is None:
        return None
    try:
        return models.get(version=version, label=label).batcher
    except ServiceError:
        return None


class ShedWhenFull:
    """Answers 503 with Retry-After, unread, to an inference request its queue has no room for."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight: dict[Batcher, int] = {}  # requests past the door and not finished, per queue

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wanted = target(scope) if scope["type"] == "http" else None
        batcher = target_batcher(scope, *wanted[1:]) if wanted else None
        if wanted is None or batcher is None:
            await self.app(scope, receive, send)
            return
        not_yet_admitted = max(self.in_flight.get(batcher, 0) - batcher.admissions, 0)
        if not batcher.has_room(not_yet_admitted + 1):
            error = Overloaded(
                f"{batcher.depth} images are waiting for the model and {not_yet_admitted} requests are "
                f"being received; MAX_QUEUE_SIZE is {batcher.max_queue_size}"
            )
            # Not routed yet: name the route for the metrics, which would count it as unmatched.
            scope["route"] = SimpleNamespace(path=wanted[0])
            response = await service_error(Request(scope), error)
            response.headers["connection"] = "close"  # the body stays unread
            await response(scope, receive, send)
            return
        self.in_flight[batcher] = self.in_flight.get(batcher, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[batcher] -= 1
            if not self.in_flight[batcher]:
                del self.in_flight[batcher]  # an unloaded version's queue is not kept alive
