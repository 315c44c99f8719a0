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
Warm-up's answer is then kept up to date from the live batches (`BatchTuner`): the machine may be
busier or quieter than when warm-up timed the model (a GPU shared with other jobs, a warm-up run on a
loaded host).
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
from typing import Any, Literal

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
# Live revision (`BatchTuner`). Each batch moves its size's estimate by LIVE_WEIGHT (about the last
# ten batches at that size count); every PROBE_EVERY-th batch is allowed the timed size above or below
# the choice, so those are timed under the same load as the choice itself; every CHECK_EVERY batches
# the estimates are compared, once each of the sizes compared has LIVE_MIN_BATCHES batches; a
# revision needs the same answer at AGREEING_CHECKS checks in a row, so a burst does not decide alone.
LIVE_WEIGHT = 0.1
PROBE_EVERY = 16
CHECK_EVERY = 64
LIVE_MIN_BATCHES = 8
AGREEING_CHECKS = 3


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


class BatchTuner:
    """Revises warm-up's batch choice from the model's live batches, at a few arithmetic operations
    a batch and no extra model call.

    Each batch's images per second is averaged (exponentially weighted) into the estimate of its size,
    counted at the timed size at or below it (a batch of 5 counts at 4). Probe batches keep the timed
    sizes either side of the choice measured: without them a service that chose batch 1 would never
    see a larger batch, and the sizes it did see would have been timed under other loads. The choice
    moves one timed size at a time, with hysteresis:
    - up when the larger size gives at least MIN_GAIN more images per second (warm-up's rule);
    - down only when the smaller size is at least as fast per image (it has the lower latency);
    - between the two it stays, so two sizes within the noise of each other do not take turns.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        choice: BatchChoice,
        *,
        probe_every: int = PROBE_EVERY,
        check_every: int = CHECK_EVERY,
        min_batches: int = LIVE_MIN_BATCHES,
        agreeing_checks: int = AGREEING_CHECKS,
    ) -> None:
        self.sizes = sorted(sizes)  # the timed sizes; the largest is MAX_BATCH_SIZE
        if choice.max_batch_size not in self.sizes:
            raise ValueError(f"the choice {choice.max_batch_size} is not one of the sizes {self.sizes}")
        self.choice = choice
        self.source: Literal["warm-up", "live"] = "warm-up"
        self.revised_at: float | None = None  # time.time() of the last revision
        self.revisions = 0
        self.images_per_second: dict[int, float] = {}  # live estimates by timed size
        self.batches: dict[int, int] = {}  # live batches counted at each timed size
        self._probe_every = probe_every
        self._check_every = check_every
        self._min_batches = min_batches
        self._agreeing_checks = agreeing_checks
        # The timed size each batch size counts at, by batch size.
        self._counted_at = [0] + [max(s for s in self.sizes if s <= n) for n in range(1, self.sizes[-1] + 1)]
        self._seen = 0
        self._proposed: BatchChoice | None = None
        self._agreed = 0

    def batch_limit(self) -> int:
        """The most images the next batch takes: the choice, or on a probe a timed size next to it."""
        if self._seen % self._probe_every:
            return self.choice.max_batch_size
        neighbours = self._neighbours()
        if not neighbours:
            return self.choice.max_batch_size
        return neighbours[self._seen // self._probe_every % len(neighbours)]

    def observe(self, size: int, seconds: float) -> BatchChoice | None:
        """Count a batch of `size` images that took the model `seconds`; the new choice when this
        batch completes a revision, else None."""
        at = self._counted_at[size]
        rate = size / max(seconds, 1e-9)
        if at in self.images_per_second:
            self.images_per_second[at] += LIVE_WEIGHT * (rate - self.images_per_second[at])
            self.batches[at] += 1
        else:  # its count first: `live_curve`, on another thread, reads the rates' sizes first
            self.batches[at] = 1
            self.images_per_second[at] = rate
        self._seen += 1
        if self._seen % self._check_every:
            return None
        return self._check()

    def live_curve(self) -> list[tuple[int, float, int]]:
        """(size, images per second, batches) for each size live batches were counted at, by size;
        safe to call from any thread (a dict's copy is atomic)."""
        rates = self.images_per_second.copy()
        return [(size, rate, self.batches[size]) for size, rate in sorted(rates.items())]

    def _neighbours(self) -> list[int]:
        """The timed sizes above and below the choice, the larger first."""
        index = self.sizes.index(self.choice.max_batch_size)
        return self.sizes[index + 1 : index + 2] + self.sizes[max(index - 1, 0) : index]

    def _estimate(self, size: int) -> float | None:
        return self.images_per_second[size] if self.batches.get(size, 0) >= self._min_batches else None

    def _proposal(self) -> BatchChoice:
        """The choice the live estimates call for now (see the class docstring)."""
        current = self.choice.max_batch_size
        rate = self._estimate(current)
        if rate is None:
            return self.choice
        for size in self._neighbours():  # the larger first: it wins if both qualify
            other = self._estimate(size)
            if other is None:
                continue
            if (size > current and other >= (1 + MIN_GAIN) * rate) or (size < current and other >= rate):
                return BatchChoice(size, wait=size > 1)
        return self.choice

    def _check(self) -> BatchChoice | None:
        proposal = self._proposal()
        if proposal == self.choice:
            self._proposed, self._agreed = None, 0
            return None
        self._agreed = self._agreed + 1 if proposal == self._proposed else 1
        self._proposed = proposal
        if self._agreed < self._agreeing_checks:
            return None
        self.choice, self.source, self.revised_at = proposal, "live", time.time()
        self.revisions += 1
        self._proposed, self._agreed = None, 0
        return proposal


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
        tuner: BatchTuner | None = None,
    ) -> None:
        """With a `tuner`, its choice sets the batch size in force and whether to wait
        `batch_timeout_s` for a batch to fill, and revises both while serving."""
        self._predict = predict
        self.max_batch_size = max_batch_size  # in force; the tuner's choice revises it
        self.batch_timeout_s = batch_timeout_s  # in force: 0 while the choice is not to wait
        self._timeout_when_waiting_s = batch_timeout_s
        self.tuner = tuner
        if tuner is not None:
            self._apply(tuner.choice)
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
                        limit = self.max_batch_size if self.tuner is None else self.tuner.batch_limit()
                        count = min(len(self._queue), limit)
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
        seconds = time.perf_counter() - start
        if self._on_batch is not None:
            self._on_batch(len(batch), seconds)
        self._deliver(batch, list(probabilities))
        if self.tuner is not None and (revised := self.tuner.observe(len(batch), seconds)):
            logger.info(
                "Live batches revised the batching: batches of up to %d, %s (live images/s by batch "
                "size: %s)",
                revised.max_batch_size,
                "waiting for one to fill" if revised.wait else "never waiting",
                ", ".join(f"{size}: {rate:.1f}" for size, rate, _ in self.tuner.live_curve()),
            )
            with self._condition:
                self._apply(revised)

    def _apply(self, choice: BatchChoice) -> None:
        self.max_batch_size = choice.max_batch_size
        self.batch_timeout_s = self._timeout_when_waiting_s if choice.wait else 0.0

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
