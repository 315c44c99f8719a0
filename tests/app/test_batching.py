"""The dynamic batcher, driven from an event loop as the routes drive it, over the real model."""

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.errors import InferenceFailed, ModelNotReady, Overloaded, RequestTimedOut
from app.main import create_app
from app.runtime.batcher import BatchChoice, Batcher, BatchTuner, choose_batching
from app.runtime.model import MIN_ROUNDS, Model, load_version, place_on_device, timed_batch_sizes
from tests.hostile_model import HOSTILE_MODEL, WHITE, mean_colour_probabilities, save_test_model
from tests.support.http import samples
from tests.support.images import png
from tests.support.models import IMAGE_SIZE, MODEL_NAME


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


def test_decoding_cpu_time_is_counted_for_images_prepared_on_the_pool(make_batcher, decoders):
    batcher = make_batcher()

    async def run() -> None:
        with batcher.admit(1) as admission:
            await admission.predict([image(1)])
        assert batcher.decode_cpu_seconds == 0  # pixels given: nothing decoded
        with batcher.admit(2) as admission:
            await admission.prepare_and_predict(decoders, busy_image, [2, 3])

    within_deadline(run())

    assert batcher.decode_cpu_seconds > 0


def busy_image(value: int) -> np.ndarray:
    """An image that takes some CPU to make, as decoding does."""
    np.linalg.svd(np.random.default_rng(value).random((200, 200)))
    return image(value)


# Choosing the batch size from the model's curve: what the rule gives on curves of each shape.


@pytest.mark.parametrize(
    ("images_per_second", "chosen"),
    [
        ({1: 24.2, 2: 16.6, 4: 12.8, 8: 11.6, 16: 18.0, 32: 18.1}, BatchChoice(1, wait=False)),  # inverted
        ({1: 100.0, 2: 101.0, 4: 103.0, 8: 104.0}, BatchChoice(1, wait=False)),  # flat within noise
        ({1: 74.4, 2: 117.4, 4: 174.3, 8: 229.6, 16: 245.7, 32: 271.7}, BatchChoice(32, wait=True)),
        ({1: 50.0, 2: 90.0, 4: 150.0, 8: 153.0, 16: 155.0}, BatchChoice(4, wait=True)),  # a plateau
        ({1: 30.0, 2: 20.0, 4: 25.0, 8: 40.0}, BatchChoice(8, wait=True)),  # dips, then beats batch 1
        ({1: 30.0, 2: 31.0, 4: 32.0, 8: 33.0}, BatchChoice(4, wait=True)),  # small steps, once 5 % in all
        ({1: 42.0}, BatchChoice(1, wait=False)),
    ],
)
def test_the_batch_size_chosen_is_where_throughput_stops_growing_by_five_percent(images_per_second, chosen):
    assert choose_batching(images_per_second) == chosen


@pytest.mark.parametrize(
    ("largest", "sizes"),
    [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8]), (33, [1, 2, 4, 8, 16, 32, 33])],
)
def test_the_curve_is_timed_at_powers_of_two_and_the_largest_batch(largest, sizes):
    assert timed_batch_sizes(largest) == sizes


# Per batch size: milliseconds each call sleeps, besides the ops around the sleep (5 to 40 ms per
# call with a load average of 20 on two cores). Large against that: the inverted curve would choose
# batch 2 only if the median call at batch 1 were delayed by over 110 ms (plus half of any delay at
# batch 2), and the fixed cost less than batch 4 only if the one at 4 were, by over 135 ms.
SLEEPY_MODELS = {
    "inverted": lambda batch: 100 * batch * batch,  # 100, 200 ms per image at batch 1, 2
    "per_call": lambda batch: 150,  # 150, 75, 37.5 ms per image at batch 1, 2, 4
}


def export_sleepy_model(version_dir: Path, metadata_from: Path, sleep_ms) -> None:
    """A SavedModel with the service's two signatures whose `predict_pixels` sleeps per call for
    `sleep_ms(batch size)` (a TensorFlow expression), so its batch curve has the shape we give it,
    and answers as tests/hostile_model.py's model does."""
    import tensorflow as tf

    # tf.data's sleep transformation (for tests, not in tf's public API): the only sleep that a
    # SavedModel keeps. It sleeps before each element is read; reading an empty dataset reads one.
    from tensorflow.python.data.experimental.ops.testing import sleep

    @tf.function(
        input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="pixels")]
    )
    def predict_pixels(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        batch = tf.cast(tf.shape(pixels)[0], tf.int64)
        slept = (
            tf.data.Dataset.range(0)
            .apply(sleep(sleep_ms(batch) * 1000))
            .reduce(tf.constant(0, tf.int64), tf.add)
        )
        with tf.control_dependencies([slept]):
            return mean_colour_probabilities(pixels)

    save_test_model(version_dir, metadata_from, predict_pixels, IMAGE_SIZE)


@pytest.fixture(scope="module")
def sleepy_repository(model_repository, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("sleepy-models")
    for name, sleep_ms in SLEEPY_MODELS.items():
        export_sleepy_model(
            base / name / "1", model_repository / MODEL_NAME / "1" / "metadata.json", sleep_ms
        )
    return base


def batching_of(sleepy_repository: Path, make_settings, name: str, max_batch_size: int) -> tuple[dict, dict]:
    """The sleepy model `name`'s batching in /model, and its metrics, served with its curve timed."""
    # The smallest budget: MIN_ROUNDS timed calls at each size, however slow.
    settings = make_settings(
        model_base_path=sleepy_repository,
        model_name=name,
        max_batch_size=max_batch_size,
        batch_measure_s=0.001,
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/predict", files={"file": ("a.png", png())}).status_code == 200
        runtime = client.get("/model").json()["runtime"]
        return runtime, samples(client)


def test_a_model_slower_per_image_in_batches_runs_one_image_at_a_time_without_waiting(
    sleepy_repository, make_settings
):
    runtime, metrics = batching_of(sleepy_repository, make_settings, "inverted", max_batch_size=2)

    batching = runtime["batching"]
    assert (batching["max_batch_size"], batching["batch_timeout_ms"]) == (1, 0)
    assert (batching["source"], batching["revised_at"], batching["revisions"]) == ("warm-up", None, 0)
    # The one image posted ran as a batch of 1, a probe allowed up to 2 (a lone image forms no more).
    assert [(t["batch_size"], t["batches"]) for t in batching["live_curve"]] == [(1, 1)]
    assert [(t["batch_size"], t["calls"]) for t in batching["curve"]] == [(1, MIN_ROUNDS), (2, MIN_ROUNDS)]
    first, second = batching["curve"]
    assert first["images_per_second"] > second["images_per_second"]
    assert second["ms_per_call"] >= 400  # it slept, so the curve is the model's own
    assert (runtime["max_batch_size"], runtime["batch_timeout_ms"], runtime["batch_measure_s"]) == (
        2,
        5,
        0.001,
    )
    assert runtime["warmup_seconds"] > runtime["first_calls_seconds"] > 0
    version = (("version", "1"),)
    assert metrics[("inference_batch_size_limit", version)] == 1
    assert metrics[("inference_batch_size_revisions_total", version)] == 0
    live = batching["live_curve"][0]["images_per_second"]
    assert metrics[("inference_batch_live_images_per_second", (("batch_size", "1"), *version))] == live
    for timing in batching["curve"]:
        key = (
            "inference_batch_curve_images_per_second",
            (("batch_size", str(timing["batch_size"])), *version),
        )
        assert metrics[key] == pytest.approx(timing["images_per_second"])
    assert metrics[("inference_decode_cpu_seconds_total", version)] > 0  # the PNG posted
    assert metrics[("inference_model_cpu_seconds_total", version)] > 0
    assert metrics[("event_loop_cpu_seconds_total", ())] > 0


def test_a_model_with_a_fixed_cost_per_call_gets_the_largest_batch_and_waits_for_it(
    sleepy_repository, make_settings
):
    runtime, metrics = batching_of(sleepy_repository, make_settings, "per_call", max_batch_size=4)

    batching = runtime["batching"]
    assert (batching["max_batch_size"], batching["batch_timeout_ms"]) == (4, 5)
    assert [t["batch_size"] for t in batching["curve"]] == [1, 2, 4]
    assert metrics[("inference_batch_size_limit", (("version", "1"),))] == 4


def test_a_version_of_the_same_network_takes_the_curve_of_the_version_serving(
    sleepy_repository, make_settings, tmp_path
):
    shutil.copytree(sleepy_repository / "per_call" / "1", tmp_path / "per_call" / "2")
    shutil.copytree(sleepy_repository / "per_call" / "1", tmp_path / "per_call" / "1")
    settings = make_settings(
        model_base_path=tmp_path,
        model_name="per_call",
        model_version_policy="all",
        max_batch_size=4,
        batch_measure_s=0.001,
    )
    with TestClient(create_app(settings)) as client:  # loads version 2 first, then 1 beside it
        first, second = (client.get(f"/model?version={v}").json()["runtime"] for v in (1, 2))

    assert [t["batch_size"] for t in second["batching"]["curve"]] == [1, 2, 4]
    assert first["batching"] == second["batching"] | {"live_curve": []}
    assert first["batching"]["curve_version"] == 2
    assert second["warmup_seconds"] - second["first_calls_seconds"] > 3 * 0.150  # it slept, timing
    assert first["warmup_batch_sizes"] == [1, 2, 3, 4]  # the first calls are still made


def test_the_batch_size_is_taken_as_set_when_the_curve_is_not_timed(client):
    batching = client.get("/model").json()["runtime"]["batching"]  # the shared app: BATCH_MEASURE_S=0

    assert batching == {
        "max_batch_size": 8,
        "batch_timeout_ms": 5,
        "source": "settings",
        "revised_at": None,
        "revisions": 0,
        "curve": [],
        "curve_version": None,
        "live_curve": [],
    }


def test_the_cpu_time_of_tensorflows_own_threads_is_counted(client):
    # Warm-up ran the model at 8 batch sizes on TensorFlow's threads: well over a clock tick.
    assert samples(client)[("native_threads_cpu_seconds_total", ())] > 0


# Revising the choice from live batches: the rule on synthetic timings, then the real batcher.


def feed(tuner: BatchTuner, images_per_second: dict[int, float], batches: int) -> list[BatchChoice]:
    """Run `batches` batches through `tuner` as a saturated queue would (each as large as the tuner
    allows) on a model with this curve; the revisions, in order."""
    revisions = []
    for _ in range(batches):
        size = tuner.batch_limit()
        if revised := tuner.observe(size, size / images_per_second[size]):
            revisions.append(revised)
    return revisions


def small_tuner(sizes: list[int], chosen: int) -> BatchTuner:
    return BatchTuner(
        sizes,
        BatchChoice(chosen, wait=chosen > 1),
        probe_every=2,
        check_every=4,
        min_batches=2,
        agreeing_checks=2,
    )


def test_probes_try_the_sizes_either_side_of_the_choice_in_turn():
    tuner = BatchTuner([1, 2, 4, 8], BatchChoice(4, wait=True), probe_every=3)
    limits = []
    for _ in range(12):
        limits.append(tuner.batch_limit())
        tuner.observe(limits[-1], 1.0)

    assert limits == [8, 4, 4, 2, 4, 4, 8, 4, 4, 2, 4, 4]
    assert sorted(tuner.batches.items()) == [(2, 2), (4, 8), (8, 2)]


def test_a_batch_counts_at_the_timed_size_at_or_below_it():
    tuner = BatchTuner([1, 2, 4, 6], BatchChoice(4, wait=True))
    for size in (5, 3, 6, 1):
        tuner.observe(size, 0.5)

    assert tuner.live_curve() == [(1, 2.0, 1), (2, 6.0, 1), (4, 10.0, 1), (6, 12.0, 1)]


@pytest.mark.parametrize(
    ("chosen", "live", "revised"),
    [
        (1, {1: 10.0, 2: 10.6}, [BatchChoice(2, wait=True)]),  # 5 % more: up, as warm-up would
        (2, {1: 10.0, 2: 20.0, 4: 40.0}, [BatchChoice(4, wait=True)]),  # up again, to the largest
        (4, {1: 50.0, 2: 50.0, 4: 49.0}, [BatchChoice(2, wait=True), BatchChoice(1, wait=False)]),
        (2, {1: 10.0, 2: 10.4, 4: 10.8}, []),  # within 5 % both ways: stays
        (2, {1: 10.2, 2: 10.0, 4: 10.4}, [BatchChoice(1, wait=False)]),  # batch 1 as fast: down
    ],
)
def test_live_batches_move_the_choice_one_size_at_a_time_with_hysteresis(chosen, live, revised):
    tuner = small_tuner(sorted(live), chosen)

    assert feed(tuner, live, 200) == revised
    assert tuner.revisions == len(revised)
    assert tuner.source == ("live" if revised else "warm-up")
    assert (tuner.revised_at is not None) == bool(revised)


def test_a_revision_waits_for_the_same_answer_at_consecutive_checks():
    tuner = small_tuner([1, 2], 2)
    curve = {1: 30.0, 2: 10.0}

    # Check 1 (batch 4) is the first with enough batches at both sizes, and proposes batch 1.
    assert feed(tuner, curve, 7) == []
    assert feed(tuner, curve, 1) == [BatchChoice(1, wait=False)]  # check 2 agrees


def test_a_passing_slowdown_of_the_batch_size_in_force_revises_nothing():
    tuner = BatchTuner([1, 2], BatchChoice(2, wait=True), probe_every=8, check_every=8, min_batches=1)
    usual = {1: 10.0, 2: 30.0}

    assert feed(tuner, usual, 24) == []
    assert feed(tuner, {1: 10.0, 2: 2.0}, 8) == []  # a check's worth of slow calls at batch 2
    assert feed(tuner, usual, 200) == []


def test_a_curve_that_turns_over_after_a_revision_is_followed_back():
    tuner = small_tuner([1, 2, 4], 4)

    assert feed(tuner, {1: 40.0, 2: 20.0, 4: 10.0}, 200) == [BatchChoice(2, True), BatchChoice(1, False)]
    assert feed(tuner, {1: 10.0, 2: 20.0, 4: 40.0}, 400) == [BatchChoice(2, True), BatchChoice(4, True)]
    assert tuner.revisions == 4


@pytest.fixture(scope="module")
def switched_model(model_repository, tmp_path_factory) -> tuple[Model, Path]:
    """A sleepy model whose curve the test switches by writing `switch`: "fixed" sleeps 150 ms a call
    (twice as fast per image at batch 2), "cubic" 150 ms x batch^3 (four times slower at batch 2)."""
    import tensorflow as tf

    base = tmp_path_factory.mktemp("switched-model")
    switch = base / "switch"
    switch.write_text("fixed")

    def sleep_ms(batch: tf.Tensor) -> tf.Tensor:
        # The path depends on the input (an empty string made from it), or TensorFlow's optimiser
        # would read the file once, when it first runs the function, as a constant.
        path = tf.strings.join([str(switch), tf.strings.regex_replace(tf.strings.as_string(batch), ".*", "")])
        cubic = tf.io.read_file(path) == "cubic"
        return tf.where(cubic, 150 * batch * batch * batch, tf.constant(150, tf.int64))

    export_sleepy_model(base / "1", model_repository / MODEL_NAME / "1" / "metadata.json", sleep_ms)
    return load_version(base / "1", place_on_device(None, 0, 0)), switch


def serve_until_revised(
    model: Model, switch: Path, warmed_up_as: str, serving_as: str
) -> tuple[tuple[int, float], Batcher]:
    """Warm `model` up with its curve `warmed_up_as`, then serve it with its curve `serving_as` to four
    clients until live batches revise the choice. The choice warm-up made (largest batch, timeout),
    and the batcher, closed."""
    switch.write_text(warmed_up_as)
    model.warm_up([1, 2], measure_seconds=0.001)
    curve = {timing.batch_size: timing.images_per_second for timing in model.batch_curve}
    tuner = small_tuner(sorted(curve), choose_batching(curve).max_batch_size)
    batcher = Batcher(
        model.infer,
        max_batch_size=2,
        batch_timeout_s=0.005,
        max_queue_size=64,
        request_timeout_s=FOREVER_S,
        tuner=tuner,
    )
    warm_up_choice = (batcher.max_batch_size, batcher.batch_timeout_s)
    switch.write_text(serving_as)

    async def client(value: int) -> None:
        while not tuner.revisions:
            await predict_one(batcher, image(value))

    async def clients() -> None:
        await asyncio.gather(*(client(value) for value in range(4)))

    try:
        # About 8 batches of at most 1.2 s each; the deadline is for the busiest machine.
        asyncio.run(asyncio.wait_for(clients(), 200))
    finally:
        batcher.close()
    return warm_up_choice, batcher


@pytest.mark.timeout(300)
def test_live_batches_raise_the_batch_size_when_the_model_has_grown_faster_in_batches(switched_model):
    warm_up_choice, batcher = serve_until_revised(*switched_model, "cubic", "fixed")

    assert warm_up_choice == (1, 0)
    assert (batcher.max_batch_size, batcher.batch_timeout_s) == (2, 0.005)  # waits for a batch again
    assert (batcher.tuner.source, batcher.tuner.revisions) == ("live", 1)


@pytest.mark.timeout(300)
def test_live_batches_lower_the_batch_size_when_the_model_has_grown_slower_in_batches(switched_model):
    warm_up_choice, batcher = serve_until_revised(*switched_model, "fixed", "cubic")

    assert warm_up_choice == (2, 0.005)
    assert (batcher.max_batch_size, batcher.batch_timeout_s) == (1, 0)  # and stops waiting
    assert (batcher.tuner.source, batcher.tuner.revisions) == ("live", 1)
