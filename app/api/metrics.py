"""GET /metrics: Prometheus metrics for requests, inference, batching and the model versions served.

Names and labels are a contract: alerts are written against them (docs/api.md lists them).
"""

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

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
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.runtime.repository import ModelRepository
from app.settings import DEFAULT_MAX_BATCH_SIZE

STATES = ("LOADING", "AVAILABLE", "UNLOADING", "END")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client went away before the answer

logger = logging.getLogger(__name__)

router = APIRouter(tags=["monitoring"])


class Metrics:
    """The service's metrics, in a registry of its own so that each app instance counts for itself."""

    def __init__(self, max_batch_size: int | None) -> None:
        """`max_batch_size`: MAX_BATCH_SIZE; unset, the batch-size buckets reach its largest default."""
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
        largest = max_batch_size or max(DEFAULT_MAX_BATCH_SIZE.values())
        sizes = sorted({2**i for i in range(largest.bit_length())} | {largest})
        self.batch_size = Histogram(
            "inference_batch_size",
            "Images per model call.",
            ["version"],
            buckets=sizes,
            registry=self.registry,
        )
        self.versions = VersionCollector()
        self.registry.register(self.versions)
        self.registry.register(ThreadCpuCollector())

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
        chosen = GaugeMetricFamily(
            "inference_batch_size_limit",
            "The largest batch each version forms: chosen at warm-up from its timed curve, revised from "
            "live batches, at most MAX_BATCH_SIZE.",
            labels=["version"],
        )
        revisions = CounterMetricFamily(
            "inference_batch_size_revisions",
            "How often live batches revised each version's batch choice.",
            labels=["version"],
        )
        live_curve = GaugeMetricFamily(
            "inference_batch_live_images_per_second",
            "The model's images per second at each batch size from live batches (exponentially "
            "weighted), by version.",
            labels=["version", "batch_size"],
        )
        curve = GaugeMetricFamily(
            "inference_batch_curve_images_per_second",
            "The model's images per second at each batch size timed at warm-up, by version.",
            labels=["version", "batch_size"],
        )
        decode_cpu = CounterMetricFamily(
            "inference_decode_cpu_seconds",
            "CPU seconds the decoder threads spent decoding and resizing images, by version; with "
            "inference_batch_duration_seconds_sum and the process's CPU time it gives what serving "
            "costs beyond decoding and the model.",
            labels=["version"],
        )
        model_cpu = CounterMetricFamily(
            "inference_model_cpu_seconds",
            "CPU seconds of the inference thread in model calls, by version; TensorFlow's own threads "
            "do the rest of the model's work (native_threads_cpu_seconds_total).",
            labels=["version"],
        )
        if models is not None:
            for version, classifier in models.available().items():
                depth.add_metric([str(version)], classifier.batcher.depth)
                capacity.add_metric([str(version)], classifier.batcher.max_queue_size)
                failures.add_metric([str(version)], classifier.batcher.failures)
                chosen.add_metric([str(version)], classifier.batcher.max_batch_size)
                for timing in classifier.model.batch_curve:
                    curve.add_metric([str(version), str(timing.batch_size)], timing.images_per_second)
                if (tuner := classifier.batcher.tuner) is not None:
                    revisions.add_metric([str(version)], tuner.revisions)
                    for size, rate, _ in tuner.live_curve():
                        live_curve.add_metric([str(version), str(size)], rate)
                decode_cpu.add_metric([str(version)], classifier.batcher.decode_cpu_seconds)
                model_cpu.add_metric([str(version)], classifier.batcher.inference_cpu_seconds)
            for status in models.statuses():
                for name in STATES:
                    state.add_metric([models.name, str(status.version), name], float(status.state == name))
                failed.add_metric([models.name, str(status.version)], float(status.error is not None))
            if served := models.available():
                model = served[max(served)].model
                info.add_metric(
                    [], {"name": model.name, "version": str(model.version), "device": model.device}
                )
        yield from (
            *(depth, capacity, state, failed, failures, info, chosen, revisions, curve, live_curve),
            *(decode_cpu, model_cpu),
        )


class ThreadCpuCollector(Collector):
    """CPU time by thread: the event loop's, and that of the threads Python did not start.

    The event loop's is the clock of the thread that collects: the /metrics route runs the
    collection on it. One thread parses, routes and answers every request, so its CPU time per
    request is the ceiling on requests per second, whatever the model's speed. The threads Python
    did not start are TensorFlow's op pools (most of them unnamed): their time is the model's, and
    the resizes', whichever thread called them.
    """

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "event_loop_cpu_seconds",
            "CPU seconds of the event loop's thread: HTTP parsing, routing, middleware and responses.",
            value=time.thread_time(),
        )
        yield CounterMetricFamily(
            "native_threads_cpu_seconds",
            "CPU seconds of the threads Python did not start (TensorFlow's op pools): the model's and "
            "the resizes' work.",
            value=native_threads_cpu_seconds(),
        )


def native_threads_cpu_seconds() -> float:
    """The CPU seconds of this process's threads that Python did not start, from /proc (Linux)."""
    started_by_python = {str(thread.native_id) for thread in threading.enumerate()}
    ticks = 0
    for task in Path("/proc/self/task").glob("*"):
        if task.name in started_by_python:
            continue
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / CLOCK_TICKS


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (not raw path), method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: int = HTTPStatus.INTERNAL_SERVER_ERROR  # unless a response starts: the app raised

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_and_note_status)
        except ClientDisconnect:
            # Nginx's 499: the client closed the connection before its request was read. Nothing
            # failed here, so no traceback: uvicorn would log one as "Exception in ASGI application".
            status = CLIENT_CLOSED_REQUEST
            logger.info(
                "The client went away before its request was read: %s %s", scope["method"], scope["path"]
            )
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
