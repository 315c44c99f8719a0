"""GET /metrics: Prometheus metrics for requests, inference, batching and the model served."""

import time

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.runtime.classifier import Classifier

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
        self.in_progress = Gauge(
            "http_requests_in_progress", "Requests being served.", registry=self.registry
        )
        self.inference_seconds = Histogram(
            "inference_batch_duration_seconds", "Time the model takes for one batch.", registry=self.registry
        )
        sizes = sorted({2**i for i in range(max_batch_size.bit_length())} | {max_batch_size})
        self.batch_size = Histogram(
            "inference_batch_size", "Images per model call.", buckets=sizes, registry=self.registry
        )
        self.queue_depth = Gauge(
            "inference_queue_depth",
            "Images admitted and not yet in a batch (being decoded or queued).",
            registry=self.registry,
        )
        self.model = Info("model", "The model being served.", registry=self.registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one model call (called on the inference thread)."""
        self.batch_size.observe(size)
        self.inference_seconds.observe(seconds)

    def watch(self, classifier: Classifier) -> None:
        """Report the model's identity and the batcher's queue depth."""
        model = classifier.model
        self.model.info({"name": model.name, "version": str(model.version), "device": model.device})
        self.queue_depth.set_function(lambda: classifier.batcher.depth)


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
            labels = (route.path if route else "unmatched", scope["method"], str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.request_seconds.labels(*labels).observe(time.perf_counter() - start)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {
                CONTENT_TYPE_LATEST: {
                    "example": 'http_requests_total{method="POST",route="/predict",status="200"} 42.0\n'
                    "inference_queue_depth 0.0\n"
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
