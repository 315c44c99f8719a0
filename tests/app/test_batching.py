"""The dynamic batcher, driven from an event loop as the routes drive it, over the real model."""

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.errors import InferenceFailed, ModelNotReady, Overloaded, RequestTimedOut
from app.runtime.batcher import Batcher
from app.runtime.model import Model, load_version, place_on_device
from tests.app.conftest import HOSTILE_MODEL
from tests.conftest import IMAGE_SIZE, MODEL_NAME
from tests.hostile_model import WHITE


@pytest.fixture(scope="module")
def model(model_repository) -> Model:
    return load_version(model_repository / MODEL_NAME / "1", place_on_device(None, 0, 0))


class Recorder:
    """The model's predict, noting which images (by their constant pixel value) each batch held.

    Clearing `open` holds the inference thread before its next batch, as a slow model would;
    `entered` is set once the thread holds a batch.
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        self.batches: list[list[int]] = []
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.open.wait(timeout=DEADLINE_S)
        self.batches.append([int(image[0, 0, 0]) for image in pixels])
        return self.model.predict(pixels)


# Long enough for the busiest machine; a batcher that waited for a timeout of FOREVER_S misses it.
DEADLINE_S = 30
FOREVER_S = 3600


def within_deadline(coroutine):
    """Run `coroutine`, failing the test if it has not finished within DEADLINE_S."""
    return asyncio.run(asyncio.wait_for(coroutine, DEADLINE_S))


async def until(condition, what: str) -> None:
    """Yield to the event loop until `condition()` holds; fail after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.001)


def image(value: int) -> np.ndarray:
    return np.full((IMAGE_SIZE, IMAGE_SIZE, 3), value, np.float32)


@pytest.fixture
def recorder(model) -> Recorder:
    return Recorder(model)


@pytest.fixture
def make_batcher(recorder) -> Iterator:
    batchers = []

    def make(**options) -> Batcher:
        settings = {
            "max_batch_size": 8,
            "batch_timeout_s": 1.0,
            "max_queue_size": 64,
            "request_timeout_s": 10.0,
        }
        batcher = Batcher(recorder, **(settings | options))
        batchers.append(batcher)
        return batcher

    yield make
    for batcher in batchers:
        batcher.close()


async def predict_one(batcher: Batcher, pixels: np.ndarray) -> np.ndarray:
    with batcher.admit(1) as admission:
        (probabilities,) = await admission.predict([pixels])
        return probabilities


def test_a_lone_image_runs_at_once_without_waiting_for_the_batch_timeout(make_batcher, recorder, model):
    batcher = make_batcher(batch_timeout_s=FOREVER_S)

    probabilities = within_deadline(predict_one(batcher, image(7)))

    assert recorder.batches == [[7]]
    np.testing.assert_allclose(probabilities, model.predict(image(7)[np.newaxis])[0], atol=1e-6)


def test_concurrent_requests_share_batches_in_arrival_order(make_batcher, recorder, model):
    batcher = make_batcher(max_batch_size=8)
    values = list(range(20))

    async def run() -> list[np.ndarray]:
        return await asyncio.gather(*(predict_one(batcher, image(v)) for v in values))

    results = within_deadline(run())

    assert max(len(batch) for batch in recorder.batches) > 1
    assert all(len(batch) <= 8 for batch in recorder.batches)
    assert [v for batch in recorder.batches for v in batch] == values  # first in, first out
    expected = model.predict(np.stack([image(v) for v in values]))
    np.testing.assert_allclose(np.stack(results), expected, atol=1e-5)


def test_images_still_being_decoded_are_waited_for_up_to_the_batch_timeout(make_batcher, recorder):
    batcher = make_batcher(batch_timeout_s=0.2)

    async def run() -> float:
        with batcher.admit(2) as admission:  # two admitted, only one arrives
            start = time.perf_counter()
            await admission.predict([image(1)])
            return time.perf_counter() - start

    waited = within_deadline(run())

    assert waited >= 0.2  # a lower bound: a busy machine only makes the wait longer
    assert recorder.batches == [[1]]


def test_a_request_whose_images_all_arrive_is_not_kept_waiting(make_batcher, recorder):
    batcher = make_batcher(batch_timeout_s=FOREVER_S)

    async def run() -> None:
        with batcher.admit(3) as admission:
            await admission.predict([image(1), image(2), image(3)])

    within_deadline(run())

    assert recorder.batches == [[1, 2, 3]]


def test_a_batch_the_model_fails_on_is_retried_image_by_image_and_counted(hostile_repository):
    hostile = load_version(hostile_repository.base / HOSTILE_MODEL / "1", place_on_device(None, 0, 0))
    recorder = Recorder(hostile)
    batcher = Batcher(
        recorder,
        max_batch_size=8,
        batch_timeout_s=FOREVER_S,
        max_queue_size=64,
        request_timeout_s=FOREVER_S,
    )

    async def run() -> list:
        with batcher.admit(1) as a, batcher.admit(1) as b, batcher.admit(1) as c:
            # All three are admitted before any arrives, so they form one batch.
            return await asyncio.gather(
                a.predict([image(1)]),
                b.predict([image(WHITE)]),
                c.predict([image(3)]),
                return_exceptions=True,
            )

    try:
        first, second, third = within_deadline(run())
    finally:
        batcher.close()

    assert recorder.batches == [[1, WHITE, 3], [1], [WHITE], [3]]  # TensorFlow raised on the whole batch
    assert batcher.failures == 2  # the batch of three, then the white image alone
    assert isinstance(second, InferenceFailed)
    np.testing.assert_allclose(first[0], hostile.predict(image(1)[np.newaxis])[0])
    np.testing.assert_allclose(third[0], hostile.predict(image(3)[np.newaxis])[0])


def test_a_full_queue_refuses_new_requests(make_batcher):
    batcher = make_batcher(max_queue_size=4)

    with batcher.admit(3):
        message = "3 images are waiting for the model; MAX_QUEUE_SIZE is 4"
        with pytest.raises(Overloaded, match=message), batcher.admit(2):
            pass
        with batcher.admit(1):
            assert batcher.depth == 4
    assert batcher.depth == 0


def test_an_image_that_waited_past_the_request_timeout_is_dropped(make_batcher, recorder):
    batcher = make_batcher(request_timeout_s=0.05, batch_timeout_s=0.0)

    async def run() -> None:
        with batcher.admit(1) as admission:
            await asyncio.sleep(0.1)  # as if decoding took that long
            await admission.predict([image(1)])

    with pytest.raises(RequestTimedOut, match="Waited over REQUEST_TIMEOUT_MS \\(50 ms\\)"):
        within_deadline(run())
    assert recorder.batches == []  # the model never spent time on it


def test_images_of_a_cancelled_request_are_withdrawn(make_batcher, recorder):
    batcher = make_batcher()
    recorder.open.clear()

    async def run() -> None:
        blocking = asyncio.ensure_future(predict_one(batcher, image(1)))
        await asyncio.to_thread(recorder.entered.wait, DEADLINE_S)  # the inference thread holds image 1
        abandoned = asyncio.ensure_future(predict_one(batcher, image(2)))
        await until(lambda: batcher.depth == 1, "image 2 queued")
        abandoned.cancel()  # as when its client disconnects
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        assert batcher.depth == 0  # withdrawn, though the inference thread is still held
        recorder.open.set()
        await blocking
        await predict_one(batcher, image(3))

    within_deadline(run())

    assert recorder.batches == [[1], [3]]


@pytest.fixture
def decoders() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2, thread_name_prefix="decode") as pool:
        yield pool


def test_images_prepared_on_the_pool_come_back_in_input_order(make_batcher, recorder, model, decoders):
    batcher = make_batcher()

    async def run() -> list[np.ndarray]:
        with batcher.admit(3) as admission:
            return await admission.prepare_and_predict(decoders, image, [4, 5, 6])

    results = within_deadline(run())

    assert recorder.batches == [[4, 5, 6]]  # queued together by the thread that prepared the last
    expected = model.predict(np.stack([image(v) for v in (4, 5, 6)]))
    np.testing.assert_allclose(np.stack(results), expected, atol=1e-5)
    assert batcher.depth == 0


def test_a_request_whose_image_cannot_be_prepared_queues_none_of_its_images(make_batcher, recorder, decoders):
    batcher = make_batcher()

    def prepare(value: int) -> np.ndarray:
        if value >= 2:
            raise ValueError(f"bad image {value}")
        return image(value)

    async def run() -> None:
        with batcher.admit(4) as admission:
            await admission.prepare_and_predict(decoders, prepare, [1, 2, 3, 0])

    with pytest.raises(ValueError, match="bad image 2"):  # the first bad one in upload order
        within_deadline(run())
    assert recorder.batches == []  # the model never spent time on the good ones
    assert batcher.depth == 0
    within_deadline(predict_one(batcher, image(9)))
    assert recorder.batches == [[9]]


def test_a_request_cancelled_while_its_images_are_prepared_is_never_queued(make_batcher, recorder):
    batcher = make_batcher()
    decoders = ThreadPoolExecutor(1)  # one thread: what is submitted after runs after
    decoding, finish = threading.Event(), threading.Event()

    def prepare(value: int) -> np.ndarray:
        decoding.set()
        finish.wait(DEADLINE_S)
        return image(value)

    async def run() -> None:
        with batcher.admit(1) as admission:
            abandoned = asyncio.ensure_future(admission.prepare_and_predict(decoders, prepare, [1]))
            await asyncio.to_thread(decoding.wait, DEADLINE_S)
            abandoned.cancel()  # as when its client disconnects
            with pytest.raises(asyncio.CancelledError):
                await abandoned
        assert batcher.depth == 0  # its room is free while the decoder still works on it
        finish.set()
        await asyncio.to_thread(decoders.submit(lambda: None).result, DEADLINE_S)  # the decoder is done
        await predict_one(batcher, image(3))

    try:
        within_deadline(run())
    finally:
        decoders.shutdown()

    assert recorder.batches == [[3]]


def test_close_finishes_queued_images_then_refuses_new_ones(make_batcher, recorder):
    batcher = make_batcher()

    async def run() -> np.ndarray:
        task = asyncio.ensure_future(predict_one(batcher, image(5)))
        await asyncio.sleep(0)
        await asyncio.to_thread(batcher.close)
        return await task

    assert within_deadline(run()).shape == (3,)
    assert recorder.batches == [[5]]
    with pytest.raises(ModelNotReady), batcher.admit(1):
        pass
