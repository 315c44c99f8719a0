"""Shed load before reading the body: 503 at once when the target version's queue has no room anyway.

Without this, an overloaded service read and parsed every upload before the queue refused it,
and the refusals queued behind that work on the event loop (a median 503 of about 2 s at 384
concurrent requests). Requests past the door and not yet admitted (bodies being received or
parsed) count as many images as recent requests brought on average, so a burst that arrives
together is shed at the door too, not only once the queue is full. The request at the door itself
counts as one image, the least it can bring: where one image would fit, the queue decides. Only the
path and query are read: which version a request targets is known before its body.

The door knows the inference routes from the app's router, and counts a request it sheds under the
route template the router would have matched.
"""

import math
import time
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from fastapi.routing import APIRoute
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.api_keys import KeyRing
from app.api.body_limit import BodyBudget
from app.api.problems import service_error_response
from app.api.protocols import is_whole_number
from app.errors import Overloaded, ServiceError
from app.runtime.batcher import Batcher

# The scope key under which the HTTP protocol's door notes the queue of a request it let in and counted.
COUNTED_AT_DOOR = "app.door.counted"


def inference_routes(routes: Iterable[BaseRoute], endpoints: Iterable[Callable[..., Any]]) -> list[APIRoute]:
    """The routes of the app that serve one of the inference `endpoints`, in the router's order."""
    inference = set(endpoints)
    return [route for route in routes if isinstance(route, APIRoute) and route.endpoint in inference]


def target(routes: Sequence[APIRoute], scope: Scope) -> tuple[str, int | None, str | None] | None:
    """For an inference request: its route template, and the version or label it asks for (in the
    path, or in /predict's query). A version that is not a whole number is left to the route to refuse."""
    if scope["method"] != "POST":
        return None
    for route in routes:
        match, matched = route.matches(scope)
        if match is Match.FULL:
            wanted = matched["path_params"]
            if not wanted and scope["query_string"]:  # no path parameters (/predict): ?version=, ?label=
                query = parse_qs(scope["query_string"].decode("latin-1"))
                wanted = {"version": query.get("version", [None])[0], "label": query.get("label", [None])[0]}
            version = wanted.get("version")
            if isinstance(version, str):
                version = int(version) if is_whole_number(version) else None
            return route.path, version, wanted.get("label")
    return None


class Door:
    """Which inference requests to shed, and the count of those let in, for the middleware and the
    HTTP protocol alike (app/connections.py asks before uvicorn starts the app at all).

    Made once per app (`app.state.door`); the models are looked up in `state.dataplane` at each request.
    """

    def __init__(self, state: State, keys: KeyRing, routes: Sequence[APIRoute], budget: BodyBudget) -> None:
        self.state = state
        self.keys = keys
        self.routes = routes  # the inference routes (`inference_routes`)
        self.budget = budget
        self.in_flight: dict[Batcher, int] = {}  # requests past the door and not finished, per queue
        self._last_refusal: tuple[tuple[str, str], Response] | None = None  # (route, detail), answer

    def check(self, scope: Scope) -> tuple[str, Batcher, Overloaded | None] | None:
        """For an inference request: its route template, its queue, and the error to shed it with
        (None to let it in). None for every other request, and for one naming no available version."""
        wanted = target(self.routes, scope)
        batcher = self.target_batcher(*wanted[1:]) if wanted else None
        if wanted is None or batcher is None:
            return None
        not_yet_admitted = max(self.in_flight.get(batcher, 0) - batcher.admissions, 0)
        # This request might bring a single image: only the others are guessed at (the queue decides).
        expected = math.ceil(not_yet_admitted * batcher.images_per_request) + 1
        if batcher.has_room(expected):
            return wanted[0], batcher, self.budget.refusal(scope)
        receiving = (
            f" and {not_yet_admitted} requests are being received (lately "
            f"{batcher.images_per_request:.1f} images per request)"
            if not_yet_admitted
            else ""
        )
        error = Overloaded(
            f"{batcher.depth} images are waiting for the model{receiving}; "
            f"MAX_QUEUE_SIZE is {batcher.max_queue_size}"
        )
        return wanted[0], batcher, error

    def target_batcher(self, version: int | None, label: str | None) -> Batcher | None:
        """The queue the request would join, or None when the route itself must answer (no such version)."""
        try:
            return self.state.dataplane.model(version=version, label=label).batcher
        except ServiceError:
            return None

    def refusal(self, scope: Scope) -> Response | None:
        """The 503 for a request to shed before any of the app runs, counted in the metrics as the
        app would; None to leave the request to the app (keys are checked first, as the app does).

        An inference request let in is counted from here, not from when its app task first runs:
        requests whose headers arrive together are decided together, before any of their tasks has
        run. It stays counted until `leave(scope)`, and the middleware does not count it again.

        The answer is the one only the protocol sends, unread by anyone else: the last one is
        reused while it would come out the same, as a burst's refusals mostly do (rendering it was
        half of this method's time)."""
        started = time.perf_counter()
        decision = self.check(scope)
        if decision is None or not self.keys.admits(scope):
            return None
        route, batcher, error = decision
        if error is None:
            self.let_in(scope, batcher)
            return None
        said = (route, str(error))
        if self._last_refusal is None or self._last_refusal[0] != said:
            self._last_refusal = (said, self.shed(scope, route, batcher, error))
        self.state.metrics.observe_request(
            route, scope["method"], HTTPStatus.SERVICE_UNAVAILABLE, time.perf_counter() - started
        )
        return self._last_refusal[1]

    def shed(self, scope: Scope, route: str, batcher: Batcher, error: Overloaded) -> Response:
        """The 503 answering `error`; whoever sends it decides whether the connection stays."""
        # Not routed: name the route, which the metrics would otherwise count as unmatched.
        scope["route"] = SimpleNamespace(path=route)
        return service_error_response(Request(scope), error)

    def let_in(self, scope: Scope, batcher: Batcher) -> None:
        """Count the request of `scope` as on its way to `batcher`'s queue, until `leave(scope)`."""
        self.in_flight[batcher] = self.in_flight.get(batcher, 0) + 1
        scope[COUNTED_AT_DOOR] = batcher
        self.budget.admit(scope)

    def counts(self, scope: Scope) -> bool:
        """Whether `let_in` counted the request of `scope` (until `leave(scope)`)."""
        return COUNTED_AT_DOOR in scope

    def leave(self, scope: Scope) -> None:
        """The request that `let_in` counted has finished (nothing for a request it did not count)."""
        self.budget.release(scope)
        if (batcher := scope.pop(COUNTED_AT_DOOR, None)) is not None:
            self.in_flight[batcher] -= 1
            if not self.in_flight[batcher]:
                del self.in_flight[batcher]  # an unloaded version's queue is not kept alive


class ShedWhenFull:
    """Answers 503 with Retry-After, unread, to an inference request its queue has no room for."""

    def __init__(self, app: ASGIApp, door: Door) -> None:
        self.app = app
        self.door = door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        counted = scope["type"] != "http" or self.door.counts(scope)  # the protocol's door let it in
        decision = None if counted else self.door.check(scope)
        if decision is None:
            await self.app(scope, receive, send)
            return
        route, batcher, error = decision
        if error is not None:
            response = self.door.shed(scope, route, batcher, error)
            response.headers["connection"] = "close"  # the body stays unread
            await response(scope, receive, send)
            return
        self.door.let_in(scope, batcher)
        try:
            await self.app(scope, receive, send)
        finally:
            self.door.leave(scope)
