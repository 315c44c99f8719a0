from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.devices import expected_device
from tests.hostile_model import HOSTILE_MODEL, WHITE
from tests.support.http import files, problem, samples
from tests.support.images import png, solid_png

V1 = (("version", "1"),)


def batch_sizes(metrics: dict[tuple, float]) -> tuple[float, float]:
    """How many model calls, and how many images they held."""
    return metrics[("inference_batch_size_count", V1)], metrics[("inference_batch_size_sum", V1)]


@pytest.fixture
def fresh(make_settings):
    with TestClient(create_app(make_settings(batch_timeout_ms=500))) as client:
        yield client


def test_requests_are_counted_and_timed_by_route_template_and_status(fresh):
    fresh.post("/predict", files=files(("a.png", png())))
    fresh.post("/predict", files=files(("a.txt", b"text")))
    fresh.get("/no/such/page")

    metrics = samples(fresh)

    ok = (("method", "POST"), ("route", "/predict"), ("status", "200"))
    assert metrics[("http_requests_total", ok)] == 1
    assert (
        metrics[("http_requests_total", (("method", "POST"), ("route", "/predict"), ("status", "415")))] == 1
    )
    assert (
        metrics[("http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    )
    assert metrics[("http_request_duration_seconds_count", ok)] == 1
    assert metrics[("http_request_duration_seconds_sum", ok)] > 0


def test_the_model_and_queue_are_reported(fresh):
    metrics = samples(fresh)

    model = (("device", expected_device()), ("name", "inception_v2"), ("version", "1"))
    assert metrics[("model_info", model)] == 1
    assert metrics[("inference_queue_depth", V1)] == 0
    assert metrics[("inference_queue_capacity", V1)] == 256
    for state in ("LOADING", "AVAILABLE", "UNLOADING", "END"):
        labels = (("name", "inception_v2"), ("state", state), ("version", "1"))
        assert metrics[("model_version_state", labels)] == (state == "AVAILABLE")
    assert metrics[("model_version_failed", (("name", "inception_v2"), ("version", "1")))] == 0
    assert metrics[("http_requests_in_progress", ())] == 1  # this very request


def test_the_images_of_one_request_share_one_batch(fresh):
    fresh.post("/predict", files=files(*[(f"{i}.png", png(seed=i)) for i in range(6)]))

    metrics = samples(fresh)

    assert batch_sizes(metrics) == (1, 6)
    assert metrics[("inference_batch_size_bucket", (("le", "4.0"), *V1))] == 0
    assert metrics[("inference_batch_size_bucket", (("le", "8.0"), *V1))] == 1
    assert metrics[("inference_batch_duration_seconds_count", V1)] == 1


def test_concurrent_requests_are_batched_together(fresh):
    def post(i: int) -> int:
        return fresh.post("/predict", files=files((f"{i}.png", png(seed=i)))).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, range(16)))

    calls, images = batch_sizes(samples(fresh))
    assert statuses == [200] * 16
    assert images == 16
    assert calls < 16


def test_a_batch_the_model_fails_on_is_counted_and_retried_image_by_image(make_settings, hostile_repository):
    settings = make_settings(model_base_path=hostile_repository.base, model_name=HOSTILE_MODEL)
    with TestClient(create_app(settings)) as client:
        good = client.post("/predict", files=files(("a.png", png())))
        bad = client.post("/predict", files=files(("a.png", png()), ("white.png", solid_png(WHITE))))
        metrics = samples(client)

    assert good.status_code == 200
    problem(
        bad,
        500,
        "urn:inception-v2-service:problem:inference-failed",
        "Inference failed",
        "The model failed on this image; see the server log",
    )
    assert metrics[("inference_batch_failures_total", V1)] == 2  # the pair, then the white image alone
    assert batch_sizes(metrics) == (2, 2)  # the good request, and the good image of the pair alone
