"""Dynamic batching: images of concurrent requests merged into batches for one inference thread.

Requests are admitted up to MAX_QUEUE_SIZE images, then decode their images on a pool of threads;
the thread that finishes a request's last image queues its pixels, so the inference thread is woken
without a trip through the event loop. The inference thread takes the queue in arrival order, so
latency is fair under load.
It starts a batch as soon as one of these holds:
- the queue holds MAX_BATCH_SIZE images;
- no admitted image is still being decoded: nothing else is on its way, so waiting would only
  add latency (a lone client never waits for a batch to fill);
- the oldest queued image has waited BATCH_TIMEOUT_MS.
While a batch runs, new images queue up and form the next batch, so batches grow with the load.

How large a batch to form is the model's own answer on this machine (`choose_batching`): a CPU may
run a network faster per image at batch 1 than at any larger batch, a GPU gains up to hundreds.
"""

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import numpy as np

from app.errors import InferenceFailed, ModelNotReady, Overloaded, RequestTimedOut

logger = logging.getLogger(__name__)

Predict = Callable[[np.ndarray], np.ndarray]
BatchObserver = Callable[[int, float], None]
# How much each request moves `Batcher.images_per_request`: about the last ten requests count.
RECENT_WEIGHT = 0.2
# A larger batch is chosen only for this much more throughput than the size chosen below it: a
# smaller gain is within what a busy machine's timings vary by, and each larger batch costs every
# image in it the latency of the whole call.
MIN_GAIN = 0.05


@dataclass(frozen=True)
class BatchChoice:
    """The largest batch the batcher forms, and whether an image waits for others to join it."""

    max_batch_size: int
    wait: bool


def choose_batching(images_per_second: dict[int, float], gain: float = MIN_GAIN) -> BatchChoice:
    """The batch size beyond which the model's throughput stops growing by more than `gain`.

    Going up the sizes measured, a size is taken when it beats the size taken so far by `gain`:
    on a curve that keeps rising that is the largest, on a flat or falling one it is the smallest,
    and on one that dips and recovers it is a larger size only if that beats the smaller ones.
    Waiting for a batch to fill pays only when a batch is faster per image than one image alone.
    """
    sizes = sorted(images_per_second)
    chosen = sizes[0]
    for size in sizes[1:]:
        if images_per_second[size] >= (1 + gain) * images_per_second[chosen]:
            chosen = size
    return BatchChoice(chosen, wait=chosen > 1)


@dataclass(eq=False)
class _Item:
    pixels: np.ndarray | None  # None while its image is being decoded
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    expires_at: float
    queued_at: float = field(default_factory=time.monotonic)


class Batcher:
    """Runs `predict` on one thread over batches of queued images (see the module docstring)."""

    def __init__(
        self,
        predict: Predict,
        *,
        max_batch_size: int,
        batch_timeout_s: float,
        max_queue_size: int,
        request_timeout_s: float,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.batch_timeout_s = batch_timeout_s
        self.max_queue_size = max_queue_size
        self.request_timeout_s = request_timeout_s
        self._on_batch = on_batch
        self._condition = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._incoming = 0  # admitted images not queued yet: still being decoded
        self.admissions = 0  # requests holding room, from `admit` to its exit
        # Images per request, averaged over recent requests: what a request not read yet will likely
        # ask for (the door's guess, app/api/admission.py). 1 until requests have been seen.
        self.images_per_request = 1.0
        self.failures = 0  # model calls that raised (the metrics read it)
        # CPU seconds the decoder threads spent preparing this batcher's images, and the inference
        # thread in model calls (TensorFlow's own threads do the rest of the model's work): with the
        # process's CPU clock they tell what serving costs beyond them (benchmarks/load.py).
        self.decode_cpu_seconds = 0.0
        self.inference_cpu_seconds = 0.0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Images admitted and not yet in a batch (being decoded, or queued)."""
        return len(self._queue) + self._incoming

    def has_room(self, count: int) -> bool:
        """Whether `count` more images would be admitted now (a hint: `admit` decides)."""
        return not self._closing and self.depth + count <= self.max_queue_size

    @contextmanager
    def admit(self, count: int) -> Iterator["Admission"]:
        """Reserve room for `count` images, or raise `Overloaded`; the room is freed on exit."""
        with self._condition:
            self.images_per_request += RECENT_WEIGHT * (count - self.images_per_request)
            if self._closing:
                raise ModelNotReady("The service is shutting down")
            if self.depth + count > self.max_queue_size:
                raise Overloaded(
                    f"{self.depth} images are waiting for the model; MAX_QUEUE_SIZE is {self.max_queue_size}"
                )
            self._incoming += count
            self.admissions += 1
        admission = Admission(self, count, time.monotonic() + self.request_timeout_s)
        try:
            yield admission
        finally:
            with self._condition:
                admission.closed = True  # images still being decoded will not be queued
                self._incoming -= admission.unqueued
                admission.unqueued = 0
                self.admissions -= 1
                self._condition.notify()

    def close(self) -> None:
        """Finish the images already queued, then stop the inference thread."""
        with self._condition:
            self._closing = True
            self._condition.notify()
        self._thread.join()

    def _enqueue(self, admission: "Admission", items: list[_Item]) -> None:
        with self._condition:
            self._enqueue_locked(admission, items)

    def _enqueue_locked(self, admission: "Admission", items: list[_Item]) -> None:
        self._incoming -= len(items)
        admission.unqueued -= len(items)
        if self._closing:
            self._deliver(items, [ModelNotReady("The service is shutting down")] * len(items))
            return
        now = time.monotonic()
        for item in items:
            item.queued_at = now  # BATCH_TIMEOUT_MS counts from here, not from before decoding
        self._queue.extend(items)
        self._condition.notify()

    def _withdraw(self, admission: "Admission", items: list[_Item]) -> None:
        """Take the images of a request that was cancelled out of the queue, and keep the ones still
        being decoded out of it."""
        gone = set(items)
        with self._condition:
            admission.closed = True
            self._queue = deque(item for item in self._queue if item not in gone)

    def _run(self) -> None:
        while batch := self._next_batch():
            self._infer(batch)

    def _next_batch(self) -> list[_Item]:
        """Wait for the next batch (see the module docstring); an empty list once closed and drained."""
        with self._condition:
            while True:
                self._drop_expired()
                if self._queue:
                    wait = self._queue[0].queued_at + self.batch_timeout_s - time.monotonic()
                    ready = len(self._queue) >= self.max_batch_size or not self._incoming or self._closing
                    if ready or wait <= 0:
                        count = min(len(self._queue), self.max_batch_size)
                        return [self._queue.popleft() for _ in range(count)]
                    self._condition.wait(wait)
                elif self._closing:
                    return []
                else:
                    self._condition.wait()

    def _drop_expired(self) -> None:
        """Fail the queued images that waited past REQUEST_TIMEOUT_MS."""
        now = time.monotonic()
        kept: deque[_Item] = deque()
        expired = []
        for item in self._queue:
            if now > item.expires_at:
                expired.append(item)
            else:
                kept.append(item)
        self._queue = kept
        if expired:
            error = RequestTimedOut(
                f"Waited over REQUEST_TIMEOUT_MS ({self.request_timeout_s * 1000:g} ms) for the model"
            )
            self._deliver(expired, [error] * len(expired))

    def _infer(self, batch: list[_Item]) -> None:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            probabilities = self._predict(np.stack([item.pixels for item in batch]))
        except Exception:
            self.failures += 1  # only this thread writes it
            if len(batch) > 1:  # find the image at fault; the others still get their answers
                logger.warning(
                    "The model failed on a batch of %d images; retrying them one by one", len(batch)
                )
                for item in batch:
                    self._infer([item])
                return
            logger.exception("Inference failed on one image")
            self._deliver(batch, [InferenceFailed("The model failed on this image; see the server log")])
            return
        self.inference_cpu_seconds += time.thread_time() - cpu  # only this thread writes it
        if self._on_batch is not None:
            self._on_batch(len(batch), time.perf_counter() - start)
        self._deliver(batch, list(probabilities))

    @staticmethod
    def _deliver(items: list[_Item], outcomes: list) -> None:
        """Hand results or errors to the requests' event loops, one wake-up per loop."""
        pairs = zip(items, outcomes, strict=True)
        for loop, group in groupby(pairs, key=lambda pair: pair[0].loop):
            loop.call_soon_threadsafe(_resolve, [(item.future, outcome) for item, outcome in group])


class Admission:
    """Room reserved in the batcher for the images of one request.

    `unqueued` and `closed` change under the batcher's lock: decoder threads queue images too.
    """

    def __init__(self, batcher: Batcher, count: int, expires_at: float) -> None:
        self._batcher = batcher
        self.unqueued = count
        self.closed = False
        self._expires_at = expires_at
        self._decoding = 0
        self._errors: dict[int, BaseException] = {}

    async def predict(self, pixels: list[np.ndarray]) -> list[np.ndarray]:
        """Queue the images' pixels and wait for their probabilities, in the same order."""
        if len(pixels) > self.unqueued:
            raise ValueError(f"{len(pixels)} images for {self.unqueued} admitted")
        loop = asyncio.get_running_loop()
        items = [_Item(p, loop.create_future(), loop, self._expires_at) for p in pixels]
        self._batcher._enqueue(self, items)
        return await self._results(items)

    async def prepare_and_predict(
        self, decoders: Executor, prepare: Callable[[Any], np.ndarray], inputs: Sequence[Any]
    ) -> list[np.ndarray]:
        """Run `prepare` on each input on the `decoders` pool and wait for the probabilities of the
        pixels it returns, in input order.

        The thread that prepares the last input queues all of them for the inference thread: one
        thread hand-off per request instead of two through the event loop. If any `prepare`
        raises, nothing is queued and this raises the error of the first failed input.
        """
        if len(inputs) > self.unqueued or self._decoding:
            raise ValueError(f"{len(inputs)} images for {self.unqueued} admitted")
        loop = asyncio.get_running_loop()
        items = [_Item(None, loop.create_future(), loop, self._expires_at) for _ in inputs]
        self._decoding = len(items)
        for index, given in enumerate(inputs):
            decoders.submit(self._prepare, prepare, given, index, items)
        return await self._results(items)

    def _prepare(
        self, prepare: Callable[[Any], np.ndarray], given: Any, index: int, items: list[_Item]
    ) -> None:
        """On a decoder thread: prepare input `index`; the last one of the request queues them all."""
        started = time.thread_time()
        try:
            items[index].pixels = prepare(given)
        except Exception as error:  # an invalid image, or a bug: the request answers it either way
            failed: BaseException | None = error
        else:
            failed = None
        cpu_seconds = time.thread_time() - started
        batcher = self._batcher
        with batcher._condition:
            batcher.decode_cpu_seconds += cpu_seconds
            if failed is not None:
                self._errors[index] = failed
            self._decoding -= 1
            if self._decoding or self.closed:  # more to come, or the request is gone (cancelled)
                return
            if self._errors:  # the room is given back when the request leaves `admit`
                first = self._errors[min(self._errors)]
                batcher._deliver(items, [first] * len(items))
                return
            batcher._enqueue_locked(self, items)

    async def _results(self, items: list[_Item]) -> list[np.ndarray]:
        try:
            if len(items) == 1:  # the common case, without gather's bookkeeping
                return [await items[0].future]
            outcomes = await asyncio.gather(*(item.future for item in items), return_exceptions=True)
        except asyncio.CancelledError:  # the client is gone: nobody will read these answers
            self._batcher._withdraw(self, items)
            raise
        for outcome in outcomes:  # the first error in input order
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes


def _resolve(outcomes: list[tuple[asyncio.Future, object]]) -> None:
    for future, outcome in outcomes:
        if future.done():  # the request was cancelled (client gone)
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
