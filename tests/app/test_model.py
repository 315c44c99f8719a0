from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import DEFAULT_MAX_BATCH_SIZE
from tests.devices import expected_device
from tests.support.models import IMAGE_SIZE, LABELS


def test_model_describes_the_served_model(client):
    response = client.get("/model")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "inception_v2"
    assert body["version"] == 1
    assert body["labels"] == LABELS
    assert body["input"] == {
        "height": IMAGE_SIZE,
        "width": IMAGE_SIZE,
        "jpeg_scaling": "dct",
        "central_crop": None,
        "resize": "bilinear",
    }
    assert body["training"] == {"params": {"epochs": 0}, "data": {"images": 0}, "metrics": {}}
    assert set(body["signatures"]) == {"serving_default", "predict_pixels", "resize_image", "features"}
    assert body["created_at"].endswith("Z")


def test_model_lists_the_architecture_layer_by_layer(client):
    architecture = client.get("/model").json()["architecture"]

    assert architecture["name"] == "inception_v2_seed"
    assert architecture["input_shape"] == [IMAGE_SIZE, IMAGE_SIZE, 3]
    assert architecture["num_classes"] == len(LABELS)
    assert architecture["total_params"] == sum(layer["params"] for layer in architecture["layers"])
    # All but the moving mean and variance of end_conv's batch norm (8 filters).
    assert architecture["trainable_params"] == architecture["total_params"] - 2 * 8
    layers = {layer["name"]: layer for layer in architecture["layers"]}
    assert layers["concat_1"] == {
        "name": "concat_1",
        "type": "Concatenate",
        "output_shape": [IMAGE_SIZE, IMAGE_SIZE, 256],
        "params": 0,
    }
    assert layers["Predictions"]["output_shape"] == [len(LABELS)]


def test_model_reports_how_it_runs(client):
    runtime = client.get("/model").json()["runtime"]

    assert runtime["device"] == expected_device()
    assert runtime["load_seconds"] > 0
    assert runtime["warmup_seconds"] > 0
    assert runtime["warmup_batch_sizes"] == list(range(1, 9))
    assert runtime["max_batch_size"] == 8
    assert runtime["batch_timeout_ms"] == 5
    assert runtime["max_queue_size"] == 256
    assert runtime["request_timeout_ms"] == 10_000


def test_max_batch_size_unset_is_the_default_for_the_device_tensorflow_reports(make_settings):
    with TestClient(create_app(make_settings(max_batch_size=None))) as client:
        runtime = client.get("/model").json()["runtime"]

    largest = DEFAULT_MAX_BATCH_SIZE["GPU" if "GPU" in expected_device() else "CPU"]
    assert runtime["max_batch_size"] == largest
    assert runtime["warmup_batch_sizes"] == list(range(1, largest + 1))
    assert runtime["batching"]["max_batch_size"] == largest  # as set: the shared settings time nothing
