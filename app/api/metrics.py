"""GET /metrics: Prometheus metrics for requests, inference, batching and the model versions served.

Names and labels are a contract: alerts are written against them (docs/api.md lists them).
"""

import time
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.runtime.repository import ModelRepository

STATES = ("LOADING", "AVAILABLE", "UNLOADING", "END")

router = APIRouter(tags=["monitoring"])


class Metrics:
    """The service's metrics, in a registry of its own so that each app instance counts for itself."""

    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry()
        by_request = ["route", "method", "status"]
        self.requests = Counter(
            "http_requests", "HTTP requests by route, method and status.", by_request, registry=self.registry
        )
        self.request_seconds = Histogram(
            "http_request_duration_seconds",
            "Time from receiving a request to the end of its response.",
            by_request,
            registry=self.registry,
        )
        # The series of each (route, method, status) seen, as the registry keeps them anyway.
        self._by_request: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.in_progress = Gauge(
            "http_requests_in_progress", "Requests being served.", registry=self.registry
        )
        self.inference_seconds = Histogram(
            "inference_batch_duration_seconds",
            "Time the model takes for one batch.",
            ["version"],
            registry=self.registry,
        )
        sizes = sorted({2**i for i in range(max_batch_size.bit_length())} | {max_batch_size})
        self.batch_size = Histogram(
            "inference_batch_size",
            "Images per model call.",
            ["version"],
            buckets=sizes,
            registry=self.registry,
        )
        self.versions = VersionCollector()
        self.registry.register(self.versions)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request (by route template, not raw path) and its duration."""
        labels = (route, method, status)
        if (series := self._by_request.get(labels)) is None:  # `labels()` costs more than counting
            named = (route, method, str(status))
            series = self._by_request[labels] = (
                self.requests.labels(*named),
                self.request_seconds.labels(*named),
            )
        series[0].inc()
        series[1].observe(seconds)

    def observe_batch(self, version: int, size: int, seconds: float) -> None:
        """Record one model call of `version` (called on its inference thread)."""
        self.batch_size.labels(str(version)).observe(size)
        self.inference_seconds.labels(str(version)).observe(seconds)

    def watch(self, models: ModelRepository | None) -> None:
        """Report the versions of `models` and their queues from now on (None: stop)."""
        self.versions.models = models


class VersionCollector(Collector):
    """The served versions' lifecycle and queues, read from the model repository at each scrape."""

    def __init__(self) -> None:
        self.models: ModelRepository | None = None

    def collect(self) -> Iterator[Metric]:
        models = self.models
        depth = GaugeMetricFamily(
            "inference_queue_depth",
            "Images admitted and not yet in a batch (being decoded or queued), by version.",
            labels=["version"],
        )
        capacity = GaugeMetricFamily(
            "inference_queue_capacity", "Most images a version admits (MAX_QUEUE_SIZE).", labels=["version"]
        )
        state = GaugeMetricFamily(
            "model_version_state",
            "1 for each version's current state (LOADING, AVAILABLE, UNLOADING, END), 0 for the others.",
            labels=["name", "version", "state"],
        )
        failed = GaugeMetricFamily(
            "model_version_failed", "1 while the version's last load failed.", labels=["name", "version"]
        )
        failures = CounterMetricFamily(
            "inference_batch_failures",
            "Model calls that raised, by version. A failed batch of several images is retried one image "
            "at a time, so one bad image counts once for its batch and once alone.",
            labels=["version"],
        )
        info = InfoMetricFamily("model", "The model version served by default.")
        if models is not None:
            for version, classifier in models.available().items():
                depth.add_metric([str(version)], classifier.batcher.depth)
                capacity.add_metric([str(version)], classifier.batcher.max_queue_size)
                failures.add_metric([str(version)], classifier.batcher.failures)
            for status in models.statuses():
                for name in STATES:
                    state.add_metric([models.name, str(status.version), name], float(status.state == name))
                failed.add_metric([models.name, str(status.version)], float(status.error is not None))
            if served := models.available():
                model = served[max(served)].model
                info.add_metric(
                    [], {"name": model.name, "version": str(model.version), "device": model.device}
                )
        yield from (depth, capacity, state, failed, failures, info)


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (not raw path), method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts: the app raised

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            self.metrics.in_progress.dec()
            route = scope.get("route")  # set by the router on a match
            self.metrics.observe_request(
                route.path if route else "unmatched", scope["method"], status, time.perf_counter() - start
            )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {
                CONTENT_TYPE_LATEST: {
                    "example": 'http_requests_total{method="POST",route="/predict",status="200"} 42.0\n'
                    'inference_queue_depth{version="3"} 0.0\n'
                    'model_version_state{name="inception_v2",state="AVAILABLE",version="3"} 1.0\n'
                    'model_info{device="/CPU:0",name="inception_v2",version="3"} 1.0\n'
                }
            },
            "description": "Prometheus text format.",
        }
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests by route and status, inference time, batch sizes, queue depth."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
