"""TF Serving's REST API (app/api/tfserving.py): its documented requests, answers and errors."""

import base64
import json

import httpx
import numpy as np
import pytest

from app.api import tfserving
from app.errors import InvalidInput
from app.runtime.repository import VersionStatus
from tests.support.images import jpeg, png
from tests.support.models import IMAGE_SIZE, LABELS, MODEL_NAME

# `curl -d` sends its body as a form; TF Serving reads it as JSON whatever the content type says.
CURL_D = {"Content-Type": "application/x-www-form-urlencoded"}
AVAILABLE = {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def predict_scores(client, data: bytes) -> np.ndarray:
    """/predict's probabilities for one file, in class order."""
    response = client.post("/predict", files={"file": ("a.jpg", data)}, params={"top_k": len(LABELS)})
    assert response.status_code == 200, response.text
    by_index = {p["index"]: p["score"] for p in response.json()["results"][0]["predictions"]}
    return np.array([by_index[i] for i in range(len(LABELS))])


# The documentation's examples, with only the host and port changed, against a real server.


def test_the_documented_status_request_answers_tf_servings_shape(live_server):
    response = httpx.get(f"{live_server.url}/v1/models/{MODEL_NAME}")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"model_version_status": [AVAILABLE]}


def test_the_documented_unknown_model_request_answers_404_as_documented(live_server):
    response = httpx.post(
        f"{live_server.url}/v1/models/half:predict", content='{"instances": [1.0,5.0]}', headers=CURL_D
    )

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Servable not found for request: Latest(half)"}


@pytest.mark.parametrize(
    "request_body, answer_key",
    [
        (lambda images: {"instances": [b64(image) for image in images]}, "predictions"),
        (lambda images: {"instances": [{"image_bytes": b64(image)} for image in images]}, "predictions"),
        (lambda images: {"inputs": {"image_bytes": [b64(image) for image in images]}}, "outputs"),
        (lambda images: {"inputs": [b64(image) for image in images]}, "outputs"),
        (
            lambda images: {"signature_name": "serving_default", "instances": [b64(i) for i in images]},
            "predictions",
        ),
    ],
    ids=["b64-instances", "named-instances", "columnar-inputs", "columnar-list", "signature-named"],
)
def test_encoded_images_get_the_probabilities_predict_gives(live_server, request_body, answer_key):
    images = [jpeg(seed=1), png(seed=2)]

    response = httpx.post(
        f"{live_server.url}/v1/models/{MODEL_NAME}:predict",
        content=json.dumps(request_body(images)),
        headers=CURL_D,
        timeout=60,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == [answer_key]
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        for answer, image in zip(body[answer_key], images, strict=True):
            np.testing.assert_allclose(answer, predict_scores(client, image), atol=1e-6)


# Through the app.


def test_a_version_and_an_unknown_version_or_model_have_status_answers(client):
    assert client.get(f"/v1/models/{MODEL_NAME}/versions/1").json() == {"model_version_status": [AVAILABLE]}

    unknown_version = client.get(f"/v1/models/{MODEL_NAME}/versions/2")
    unknown_model = client.get("/v1/models/half")

    assert (unknown_version.status_code, unknown_version.json()) == (
        404,
        {"error": f"Could not find version 2 of model {MODEL_NAME}"},
    )
    assert (unknown_model.status_code, unknown_model.json()) == (
        404,
        {"error": "Could not find any versions of model half"},
    )


def test_status_lists_versions_newest_first_with_the_reason_a_version_failed():
    statuses = [
        VersionStatus(1, "AVAILABLE"),
        VersionStatus(3, "END", "models/inception_v2/3: no saved_model.pb in it"),
        VersionStatus(2, "LOADING"),
    ]

    body = tfserving.model_status_body(MODEL_NAME, statuses, None)

    assert body == {
        "model_version_status": [
            {
                "version": "3",
                "state": "END",
                "status": {
                    "error_code": "UNKNOWN",
                    "error_message": "models/inception_v2/3: no saved_model.pb in it",
                },
            },
            {"version": "2", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}},
            AVAILABLE,
        ]
    }


@pytest.mark.parametrize(
    "path", [f"/v1/models/{MODEL_NAME}/metadata", f"/v1/models/{MODEL_NAME}/versions/1/metadata"]
)
def test_metadata_gives_the_saved_models_signature_defs_in_tf_servings_json(client, path):
    response = client.get(path)

    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"] == {"name": MODEL_NAME, "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {
        "serving_default",
        "predict_pixels",
        "resize_image",
        "features",
        "__saved_model_init_op",
    }

    def dims(*sizes: int) -> dict:
        return {"dim": [{"size": str(size), "name": ""} for size in sizes], "unknown_rank": False}

    probabilities = {"dtype": "DT_FLOAT", "tensor_shape": dims(-1, len(LABELS))}
    assert signatures["serving_default"] == {
        "inputs": {
            "image_bytes": {
                "name": "serving_default_image_bytes:0",
                "dtype": "DT_STRING",
                "tensor_shape": dims(-1),
            }
        },
        "outputs": {"probabilities": {"name": "StatefulPartitionedCall_2:0", **probabilities}},
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }
    assert signatures["predict_pixels"]["inputs"] == {
        "pixels": {
            "name": "predict_pixels_pixels:0",
            "dtype": "DT_FLOAT",
            "tensor_shape": dims(-1, IMAGE_SIZE, IMAGE_SIZE, 3),
        }
    }
    assert signatures["resize_image"]["inputs"]["image"]["tensor_shape"] == dims(-1, -1, 3)
    assert signatures["resize_image"]["outputs"]["pixels"]["tensor_shape"] == dims(IMAGE_SIZE, IMAGE_SIZE, 3)


@pytest.mark.parametrize("format_", ["instances", "inputs"])
def test_predict_pixels_takes_nested_lists(client, predict_pixels, format_):
    pixels = np.random.default_rng(1).uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)

    response = client.post(
        f"/v1/models/{MODEL_NAME}/versions/1:predict",
        json={"signature_name": "predict_pixels", format_: pixels.tolist()},
    )

    assert response.status_code == 200, response.text
    [answer] = response.json().values()
    np.testing.assert_allclose(answer, predict_pixels(pixels), atol=1e-6)


def test_pixels_may_be_named_in_row_format(client, predict_pixels):
    pixels = np.full((1, IMAGE_SIZE, IMAGE_SIZE, 3), 128, np.float32)

    response = client.post(
        f"/v1/models/{MODEL_NAME}:predict",
        json={"signature_name": "predict_pixels", "instances": [{"pixels": pixels[0].tolist()}]},
    )

    np.testing.assert_allclose(response.json()["predictions"], predict_pixels(pixels), atol=1e-6)


PIXELS_8 = np.zeros((1, 8, 8, 3)).tolist()
IMAGE = b64(png())


MALFORMED = [
    pytest.param(
        ":predict",
        {"instances": [{"b64": "é"}]},
        400,
        "instances[0]: 'b64' is not valid base64",
        id="not-ascii",
    ),
    pytest.param(
        ":predict",
        {"signature_name": "serving_default"},
        400,
        "Missing 'inputs' or 'instances' key",
        id="no-instances",
    ),
    pytest.param(
        ":predict",
        {"instances": [IMAGE], "inputs": [IMAGE]},
        400,
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists",
        id="both-formats",
    ),
    pytest.param(
        ":predict",
        {"instances": IMAGE},
        400,
        "Expecting 'instances' to be an list/array",
        id="instances-not-a-list",
    ),
    pytest.param(
        ":predict", {"instances": []}, 400, "'instances' is empty: send at least one image", id="no-images"
    ),
    pytest.param(
        ":predict",
        {"instances": [{"b64": "not base64!"}]},
        400,
        "instances[0]: 'b64' is not valid base64",
        id="bad-b64",
    ),
    pytest.param(
        ":predict",
        {"instances": [1.0, 2.0, 5.0]},
        400,
        'instances[0]: expected an encoded image as {"b64": "<base64 of the file>"}',
        id="not-b64-object",
    ),
    pytest.param(
        ":predict",
        {"instances": [b64(b"plain text")]},
        400,
        "'instances[0]': not a JPEG, PNG, GIF, BMP or WebP image",
        id="not-an-image",
    ),
    pytest.param(
        ":predict",
        {"instances": [{"image": IMAGE}]},
        400,
        "instances[0]: names the input(s) 'image'; the signature's one input is 'image_bytes'",
        id="unknown-input-name",
    ),
    pytest.param(
        ":predict",
        {"signature_name": "classify", "instances": [IMAGE]},
        400,
        'Serving signature name: "classify" not found in signature def',
        id="unknown-signature",
    ),
    pytest.param(
        ":predict",
        {"signature_name": "resize_image", "instances": [IMAGE]},
        400,
        'Serving signature name: "resize_image" is not served by :predict; use "serving_default" '
        '(encoded images as {"b64": ...}) or "predict_pixels" (pixels as nested lists)',
        id="resize-signature",
    ),
    pytest.param(
        ":predict",
        {"signature_name": "predict_pixels", "instances": PIXELS_8},
        400,
        f"pixels of shape [1, 8, 8, 3]; the model takes [images, {IMAGE_SIZE}, {IMAGE_SIZE}, 3] "
        "(height, width, RGB)",
        id="wrong-pixel-shape",
    ),
    pytest.param(
        ":predict",
        {"signature_name": "predict_pixels", "inputs": [[[1, 2, 3]], [[1, 2]]]},
        400,
        "'inputs': pixels must be nested lists of numbers, [images][height][width][3]",
        id="ragged-pixels",
    ),
    pytest.param(
        ":predict",
        {"instances": [IMAGE] * 17},
        400,
        "17 images in one request; the most allowed is 16",
        id="too-many-images",
    ),
    pytest.param(
        ":classify",
        {"examples": [{"image_bytes": IMAGE}]},
        400,
        "The model has no classify signature: its signatures are predict signatures; use :predict",
        id="classify",
    ),
    pytest.param(
        "/versions/2:predict",
        {"instances": [IMAGE]},
        404,
        f"version 2 of {MODEL_NAME}, which is not served; available: 1",
        id="unknown-version",
    ),
    pytest.param(
        "/labels/canary:predict",
        {"instances": [IMAGE]},
        404,
        f"No version of {MODEL_NAME} is labelled 'canary'; labels: none",
        id="unknown-label",
    ),
]


@pytest.mark.parametrize("path, body, status, error", MALFORMED)
def test_a_malformed_predict_request_gets_tf_servings_error_shape(client, path, body, status, error):
    response = client.post(f"/v1/models/{MODEL_NAME}{path}", json=body)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": error}


def test_nan_pixels_are_refused(client):
    pixels = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3))
    pixels[0, 0, 0, 0] = np.nan
    body = json.dumps(
        {"signature_name": "predict_pixels", "instances": pixels.tolist()}
    )  # NaN, as TF Serving allows

    response = client.post(f"/v1/models/{MODEL_NAME}:predict", content=body)

    assert (response.status_code, response.json()) == (
        400,
        {"error": "pixels hold NaN or infinite values; the model takes RGB values in 0..255"},
    )


@pytest.mark.parametrize(
    "method, path, error",
    [
        ("POST", f"/v1/models/{MODEL_NAME}:predict", "JSON Parse error: Expecting value at offset: 0"),
        (
            "GET",
            f"/v1/models/{MODEL_NAME}:predict",
            f"Malformed request: GET /v1/models/{MODEL_NAME}:predict",
        ),
        ("POST", f"/v1/models/{MODEL_NAME}", f"Malformed request: POST /v1/models/{MODEL_NAME}"),
        (
            "GET",
            f"/v1/models/{MODEL_NAME}/versions/one",
            f"Malformed request: GET /v1/models/{MODEL_NAME}/versions/one",
        ),
        ("GET", "/v1/models", "Missing model name in request."),
    ],
)
def test_other_requests_under_v1_are_400_as_in_tf_serving(client, method, path, error):
    response = client.request(method, path, content="not json")

    assert (response.status_code, response.json()) == (400, {"error": error})


def test_b64_may_come_wrapped_and_unpadded_as_command_line_tools_print_it():
    data = png()
    text = base64.b64encode(data).decode().rstrip("=")
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))

    assert tfserving.encoded_image({"b64": wrapped}, "instances[0]") == data


def test_an_object_of_other_keys_is_not_taken_for_binary_data():
    with pytest.raises(InvalidInput, match="names the input"):
        tfserving.tensor_values({"inputs": {"b64": "AA==", "x": 1}}, "image_bytes")


# Several versions: 1 (stable) and 2 (canary) serving, 3 failed to load.


def test_status_lists_every_version_newest_first_with_why_one_failed(versions_app):
    response = versions_app.get(f"/v1/models/{MODEL_NAME}")

    [three, two, one] = response.json()["model_version_status"]
    assert (three["version"], three["state"], three["status"]["error_code"]) == ("3", "END", "UNKNOWN")
    assert "3: not a loadable SavedModel (" in three["status"]["error_message"]
    assert two == AVAILABLE | {"version": "2"}
    assert one == AVAILABLE
    assert versions_app.get(f"/v1/models/{MODEL_NAME}/labels/canary").json() == {
        "model_version_status": [AVAILABLE | {"version": "2"}]
    }


@pytest.mark.parametrize(
    "path, version",
    [("", 2), ("/versions/1", 1), ("/versions/2", 2), ("/labels/stable", 1), ("/labels/canary", 2)],
)
def test_predict_and_metadata_answer_from_the_version_or_label_named(versions_app, path, version):
    image = png(seed=9)

    predicted = versions_app.post(f"/v1/models/{MODEL_NAME}{path}:predict", json={"instances": [b64(image)]})
    described = versions_app.get(f"/v1/models/{MODEL_NAME}{path}/metadata")

    assert predicted.status_code == 200, predicted.text
    assert predicted.headers["X-Model-Version"] == str(version)
    expected = versions_app.post(
        "/predict", files={"file": ("a.png", image)}, params={"top_k": len(LABELS), "version": version}
    )
    by_index = {p["index"]: p["score"] for p in expected.json()["results"][0]["predictions"]}
    np.testing.assert_allclose(predicted.json()["predictions"][0], [by_index[i] for i in range(3)], atol=1e-6)
    assert described.json()["model_spec"]["version"] == str(version)


def test_a_version_that_failed_to_load_cannot_be_asked_for(versions_app):
    response = versions_app.post(f"/v1/models/{MODEL_NAME}/versions/3:predict", json={"instances": [IMAGE]})

    assert response.status_code == 404
    assert response.json()["error"].startswith(f"version 3 of {MODEL_NAME}")


def test_a_number_beyond_float_is_a_400(client):
    body = '{"signature_name": "predict_pixels", "instances": [' + "1" * 400 + "]}"

    response = client.post(f"/v1/models/{MODEL_NAME}:predict", content=body)

    assert (response.status_code, response.json()) == (
        400,
        {"error": "'instances': pixels must be nested lists of numbers, [images][height][width][3]"},
    )


def test_json_nested_past_the_parsers_limit_is_a_400(client):
    body = '{"instances": ' + "[" * 100_000 + "]" * 100_000 + "}"

    response = client.post(f"/v1/models/{MODEL_NAME}:predict", content=body)

    assert (response.status_code, response.json()) == (400, {"error": "JSON Parse error: nested too deeply"})


def test_instances_are_counted_before_any_is_decoded(client):
    """Seventeen instances are refused for their number: the one that is not base64 is never decoded."""
    instances = [{"b64": IMAGE}] * 16 + [{"b64": "not base64!"}]

    response = client.post(f"/v1/models/{MODEL_NAME}:predict", json={"instances": instances})

    assert (response.status_code, response.json()) == (
        400,
        {"error": "17 images in one request; the most allowed is 16"},
    )
