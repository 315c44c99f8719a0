"""The Open Inference Protocol (app/api/v2.py), driven by Triton's own client against a real server."""

import base64
import http.client
import json
import struct

import numpy as np
import pytest
import tritonclient.http as httpclient
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from app.api import v2
from app.api.dataplane import DataPlane
from app.errors import InvalidInput
from app.main import create_app
from app.settings import Settings
from tests.support.images import jpeg, png
from tests.support.models import IMAGE_SIZE, LABELS, MODEL_NAME


@pytest.fixture(scope="module")
def triton(live_server):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{live_server.port}", network_timeout=60)
    yield client
    client.close()


def predict_scores(live_server, data: bytes) -> np.ndarray:
    """/predict's probabilities for one file, in class order."""
    import httpx

    response = httpx.post(
        f"{live_server.url}/predict",
        files={"file": ("a.jpg", data)},
        params={"top_k": len(LABELS)},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    by_index = {p["index"]: p["score"] for p in response.json()["results"][0]["predictions"]}
    return np.array([by_index[i] for i in range(len(LABELS))], dtype=np.float32)


def image_input(*images: bytes, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("image_bytes", [len(images)], "BYTES")
    if binary:
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    else:  # JSON strings cannot carry a JPEG's bytes: base64, as KServe's image examples send them
        encoded = [base64.b64encode(image).decode() for image in images]
        tensor.set_data_from_numpy(np.array(encoded, dtype=np.object_), binary_data=False)
    return tensor


def test_the_server_reports_live_ready_and_its_extensions(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(MODEL_NAME)
    assert triton.is_model_ready(MODEL_NAME, "1")
    metadata = triton.get_server_metadata()
    assert metadata["name"] == "inception-v2-service"
    assert set(metadata["extensions"]) >= {"binary_tensor_data", "classification"}


def test_model_metadata_names_the_inputs_and_output_with_datatypes_and_shapes(triton):
    expected = {
        "name": MODEL_NAME,
        "versions": ["1"],
        "platform": "tensorflow_savedmodel",
        "inputs": [
            {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
            {"name": "pixels", "datatype": "FP32", "shape": [-1, IMAGE_SIZE, IMAGE_SIZE, 3]},
        ],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(LABELS)]}],
    }

    assert triton.get_model_metadata(MODEL_NAME) == expected
    assert triton.get_model_metadata(MODEL_NAME, "1") == expected


@pytest.mark.parametrize("binary", [True, False], ids=["binary-data", "json"])
def test_a_jpeg_gets_the_probabilities_predict_gives(triton, live_server, binary):
    data = jpeg(seed=3)
    output = httpclient.InferRequestedOutput("probabilities", binary_data=binary)

    result = triton.infer(MODEL_NAME, [image_input(data, binary=binary)], outputs=[output])

    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (1, len(LABELS))
    np.testing.assert_allclose(probabilities[0], predict_scores(live_server, data), atol=1e-6)
    assert result.get_response()["model_version"] == "1"


def test_without_requested_outputs_every_output_comes_back_in_binary(triton, live_server):
    images = [jpeg(seed=4), png(seed=5)]

    result = triton.infer(MODEL_NAME, [image_input(*images)], model_version="1", request_id="42")

    response = result.get_response()
    assert response["id"] == "42"
    assert response["outputs"] == [
        {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [2, len(LABELS)],
            "parameters": {"binary_data_size": 2 * len(LABELS) * 4},
        }
    ]
    for probabilities, image in zip(result.as_numpy("probabilities"), images, strict=True):
        np.testing.assert_allclose(probabilities, predict_scores(live_server, image), atol=1e-6)


@pytest.mark.parametrize("binary", [True, False], ids=["binary-data", "json"])
def test_classification_gives_the_top_classes_as_score_index_label(triton, live_server, binary):
    data = jpeg(seed=6)
    output = httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)

    result = triton.infer(MODEL_NAME, [image_input(data, binary=binary)], outputs=[output])

    classes = result.as_numpy("probabilities")
    assert classes.shape == (1, 2)
    scores = predict_scores(live_server, data)
    best = np.argsort(-scores, kind="stable")[:2]
    parsed = [element.decode() if isinstance(element, bytes) else element for element in classes[0]]
    assert [entry.split(":", 1)[1] for entry in parsed] == [f"{i}:{LABELS[i]}" for i in best]
    np.testing.assert_allclose([float(entry.split(":")[0]) for entry in parsed], scores[best], atol=1e-6)


def test_pixels_in_fp32_get_the_saved_models_own_probabilities(triton, predict_pixels):
    pixels = np.random.default_rng(0).uniform(0, 255, (3, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    tensor = httpclient.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)

    result = triton.infer(MODEL_NAME, [tensor])

    np.testing.assert_allclose(result.as_numpy("probabilities"), predict_pixels(pixels), atol=1e-6)


def test_wrongly_shaped_pixels_are_a_400_naming_the_shape(triton):
    tensor = httpclient.InferInput("pixels", [1, 8, 8, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 8, 8, 3), np.float32))

    with pytest.raises(InferenceServerException) as error:
        triton.infer(MODEL_NAME, [tensor])

    assert error.value.status() == "400"
    assert error.value.message() == (
        f"pixels of shape [1, 8, 8, 3]; the model takes [images, {IMAGE_SIZE}, {IMAGE_SIZE}, 3] "
        "(height, width, RGB)"
    )


def test_a_file_that_is_not_an_image_is_a_400_naming_the_element(triton):
    with pytest.raises(InferenceServerException) as error:
        triton.infer(MODEL_NAME, [image_input(b"not an image")])

    assert error.value.status() == "400"
    assert error.value.message() == "'image_bytes[0]': not a JPEG, PNG, GIF, BMP or WebP image"


def test_an_unknown_model_or_version_is_a_404(triton):
    with pytest.raises(InferenceServerException) as unknown_model:
        triton.infer("resnet", [image_input(jpeg())])
    with pytest.raises(InferenceServerException) as unknown_version:
        triton.get_model_metadata(MODEL_NAME, "7")

    assert unknown_model.value.status() == "404"
    assert unknown_model.value.message() == f"Unknown model 'resnet': this server serves '{MODEL_NAME}'"
    assert unknown_version.value.status() == "404"
    assert not triton.is_model_ready(MODEL_NAME, "7")


def test_a_raw_binary_request_is_one_encoded_image(live_server):
    import httpx

    data = jpeg(seed=8)

    response = httpx.post(
        f"{live_server.url}/v2/models/{MODEL_NAME}/infer",
        content=data,
        headers={"Inference-Header-Content-Length": "0", "Content-Type": "application/octet-stream"},
        timeout=60,
    )

    assert response.status_code == 200, response.text
    result = httpclient.InferResult.from_response_body(
        response.content, header_length=int(response.headers["Inference-Header-Content-Length"])
    )
    np.testing.assert_allclose(
        result.as_numpy("probabilities")[0], predict_scores(live_server, data), atol=1e-6
    )


# Malformed requests, through the app: each a 400 {"error": ...} naming what was wrong.
IMAGE_BYTES = {"name": "image_bytes", "datatype": "BYTES", "shape": [1]}


def with_binary(request: dict, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A request with binary tensor data, as tritonclient sends it."""
    header = json.dumps(request).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header))}


def one_input(**fields) -> bytes:
    return json.dumps({"inputs": [IMAGE_BYTES | fields]}).encode()


BINARY_IMAGE = IMAGE_BYTES | {"parameters": {"binary_data_size": 4}}


JSON_IMAGE = IMAGE_BYTES | {"data": ["AA=="]}
MALFORMED = [
    pytest.param(
        b"{",
        {},
        "The inference request is not valid JSON "
        "(Expecting property name enclosed in double quotes at offset: 1)",
        id="not-json",
    ),
    pytest.param(b"[]", {}, "The inference request must be a JSON object", id="not-an-object"),
    pytest.param(
        b"{}",
        {},
        "'inputs' must hold exactly one input: image_bytes (BYTES, encoded images) or "
        "pixels (FP32 [images, height, width, 3])",
        id="no-inputs",
    ),
    pytest.param(
        one_input(name="x", data=["AA=="]),
        {},
        "Unknown input 'x': the model takes image_bytes (BYTES) or pixels (FP32)",
        id="unknown-input",
    ),
    pytest.param(
        one_input(name="pixels", datatype="FP64", data=[1]),
        {},
        "input 'pixels': datatype 'FP64'; the model takes FP32",
        id="wrong-datatype",
    ),
    pytest.param(
        one_input(data=["%%"]),
        {},
        "input 'image_bytes': element 0 is not base64: in JSON, send each image as base64, "
        "or send binary tensor data",
        id="not-base64",
    ),
    pytest.param(
        one_input(data=["é"]),
        {},
        "input 'image_bytes': element 0 is not base64: in JSON, send each image as base64, "
        "or send binary tensor data",
        id="not-ascii",
    ),
    pytest.param(
        b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        {},
        "The inference request is not valid JSON (nested too deeply)",
        id="nested-too-deeply",
    ),
    pytest.param(
        one_input(shape=[2], data=[[[["AA=="]]], "AA=="]),
        {},
        "'image_bytes[0]': not a JPEG, PNG, GIF, BMP or WebP image",
        id="nested-data-flattened",
    ),
    pytest.param(
        one_input(shape=[2], data=["AA=="]), {}, "input 'image_bytes': 1 elements for shape [2]", id="short"
    ),
    pytest.param(
        one_input(shape=[0], data=[]), {}, "input 'image_bytes': shape [0] holds no images", id="no-images"
    ),
    pytest.param(
        one_input(name="pixels", datatype="FP32", shape=[1, 2], data=[1, "a"]),
        {},
        "input 'pixels': 'data' must be a list of numbers",
        id="not-numbers",
    ),
    pytest.param(
        (header := one_input(data=["AA=="])) + b"\x05\0\0\0",
        {},
        f"The inference request is not valid JSON (Extra data at offset: {len(header)})",
        id="binary-without-its-header",
    ),
    pytest.param(
        *with_binary({"inputs": [BINARY_IMAGE]}, b"\x05\0\0\0"),
        "input 'image_bytes': the binary BYTES data ends inside element 0",
        id="truncated-bytes-element",
    ),
    pytest.param(
        *with_binary({"inputs": [BINARY_IMAGE]}, b"\x05\0\0"),
        "input 'image_bytes': binary_data_size is 4, but 3 bytes follow the JSON",
        id="binary-size-mismatch",
    ),
    pytest.param(
        *with_binary({"inputs": [JSON_IMAGE]}, b"\x00"),
        "1 bytes follow the JSON, but no input has a 'binary_data_size'",
        id="unannounced-binary",
    ),
    pytest.param(
        b"{}",
        {"Inference-Header-Content-Length": "3"},
        "Inference-Header-Content-Length: '3' is not a length within the body (2 bytes)",
        id="header-length-past-the-body",
    ),
    pytest.param(
        json.dumps({"inputs": [JSON_IMAGE], "outputs": [{"name": "logits"}]}).encode(),
        {},
        "Unknown output 'logits': the model's one output is probabilities",
        id="unknown-output",
    ),
    pytest.param(
        json.dumps(
            {
                "inputs": [JSON_IMAGE],
                "outputs": [{"name": "probabilities", "parameters": {"classification": 0}}],
            }
        ).encode(),
        {},
        "output 'probabilities': parameter 'classification' must be a whole number of at least 1",
        id="bad-classification",
    ),
]


@pytest.mark.parametrize("body, headers, error", MALFORMED)
def test_a_malformed_inference_request_is_a_400_naming_the_problem(client, body, headers, error):
    response = client.post(f"/v2/models/{MODEL_NAME}/infer", content=body, headers=headers)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": error}


def test_an_unknown_path_under_v2_is_a_404_in_the_protocols_shape(client):
    response = client.get("/v2/nothing")

    assert response.status_code == 404
    assert response.json() == {"error": "Nothing at /v2/nothing; see /docs for the endpoints"}


def test_bytes_tensors_round_trip_in_tritons_binary_form():
    elements = [b"", b"\xff\xd8 a jpeg", b"x" * 300]

    serialized = v2.serialize_bytes(elements)

    assert serialized[:4] == struct.pack("<I", 0)
    assert v2.deserialize_bytes(serialized, "input", len(elements)) == elements


def test_classification_ranks_ties_in_class_order_and_caps_at_the_number_of_classes():
    probabilities = np.array([[0.25, 0.5, 0.25]], np.float32)

    datatype, shape, data = v2.output_tensor(
        probabilities, LABELS, v2.RequestedOutput(False, classification=9)
    )

    assert (datatype, shape) == ("BYTES", [1, 3])
    assert data == [b"0.5:1:square", b"0.25:0:circle", b"0.25:2:triangle"]


def test_an_input_needs_data_or_binary_data():
    with pytest.raises(InvalidInput, match="no 'data', and no 'binary_data_size'"):
        v2.read_input(dict(IMAGE_BYTES), b"", DataPlane(Settings()).count_images)


def test_metadata_readiness_and_infer_follow_the_versions_served(versions_app):
    infer = {
        "inputs": [
            {
                "name": "image_bytes",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(png()).decode()],
            }
        ]
    }

    metadata = versions_app.get(f"/v2/models/{MODEL_NAME}").json()
    first = versions_app.post(f"/v2/models/{MODEL_NAME}/versions/1/infer", json=infer)
    latest = versions_app.post(f"/v2/models/{MODEL_NAME}/infer", json=infer)
    failed_ready = versions_app.get(f"/v2/models/{MODEL_NAME}/versions/3/ready")
    unknown_ready = versions_app.get(f"/v2/models/{MODEL_NAME}/versions/7/ready")

    assert metadata["versions"] == ["1", "2"]
    assert (first.json()["model_version"], first.headers["X-Model-Version"]) == ("1", "1")
    assert latest.json()["model_version"] == "2"
    assert first.json()["outputs"][0]["data"] != latest.json()["outputs"][0]["data"]
    assert failed_ready.status_code == 503
    assert failed_ready.json()["error"].startswith(f"Version 3 of '{MODEL_NAME}' is END: ")
    assert "3: not a loadable SavedModel (" in failed_ready.json()["error"]
    assert unknown_ready.status_code == 404


def test_the_shared_limits_answer_in_the_protocols_error_shape(make_settings):
    settings = make_settings(max_upload_bytes=20_000, max_queue_size=4, max_files=2)
    infer = f"/v2/models/{MODEL_NAME}/infer"
    image = {
        "name": "image_bytes",
        "datatype": "BYTES",
        "shape": [1],
        "data": [base64.b64encode(png()).decode()],
    }

    with TestClient(create_app(settings)) as client:
        too_large = client.post(infer, content=b"{" + b" " * 20_000 + b"}")
        with client.app.state.dataplane.model().batcher.admit(4):
            overloaded = client.post(infer, json={"inputs": [image]})
        three = client.post(infer, json={"inputs": [image | {"shape": [3], "data": image["data"] * 3}]})

    assert (too_large.status_code, too_large.json()) == (
        413,
        {"error": "The request body is over MAX_UPLOAD_BYTES (20000 bytes)"},
    )
    assert (overloaded.status_code, overloaded.headers["retry-after"]) == (503, "1")
    shed = "4 images are waiting for the model; MAX_QUEUE_SIZE is 4"
    assert overloaded.json() == {"error": shed}  # refused at the door, its body unread
    assert (three.status_code, three.json()) == (
        400,
        {"error": "3 images in one request; the most allowed is 2"},
    )


def test_before_a_version_is_loaded_the_protocols_answer_503(make_settings):
    client = TestClient(create_app(make_settings()))  # not started: the model is not loaded

    for path in ("/v2/health/ready", f"/v2/models/{MODEL_NAME}/ready", f"/v1/models/{MODEL_NAME}"):
        response = client.get(path)

        assert (response.status_code, response.json()) == (503, {"error": "The model is not loaded"}), path
    assert client.get("/v2/health/live").json() == {"live": True}


def test_numbers_that_are_not_ascii_digits_are_a_400(client):
    version = client.get(f"/v2/models/{MODEL_NAME}/versions/%C2%B2")
    length = client.post(
        f"/v2/models/{MODEL_NAME}/infer", content=b"{}", headers={"Inference-Header-Content-Length": b"\xb2"}
    )

    assert (version.status_code, version.json()) == (
        400,
        {"error": "Model version '²': versions are whole numbers"},
    )
    assert length.status_code == 400
    assert length.json()["error"].startswith("Inference-Header-Content-Length: ")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "body, headers",
    [
        pytest.param(one_input(shape=[17], data=[b64(png())] * 16 + ["not base64!"]), {}, id="json"),
        pytest.param(
            *with_binary(
                {"inputs": [IMAGE_BYTES | {"shape": [17], "parameters": {"binary_data_size": 3}}]}, b"\0\0\0"
            ),
            id="binary",
        ),
        pytest.param(one_input(shape=[10**9], data=[b64(png())]), {}, id="a-billion"),
    ],
)
def test_bytes_elements_are_counted_from_the_shape_before_any_is_built(client, body, headers):
    response = client.post(f"/v2/models/{MODEL_NAME}/infer", content=body, headers=headers)

    count = json.loads(body[: int(headers.get("Inference-Header-Content-Length", len(body)))])
    images = count["inputs"][0]["shape"][0]
    assert (response.status_code, response.json()) == (
        400,
        {"error": f"{images} images in one request; the most allowed is 16"},
    )


def pixels_with_dimensions(dimensions: int) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1] * dimensions, "data": [0.0]}]}
    ).encode()


def test_pixels_of_more_dimensions_than_numpy_holds_are_a_400_and_the_connection_stays(live_server):
    """A shape of 65 dimensions once raised inside numpy: a 500, and the connection dropped after it."""
    connection = http.client.HTTPConnection("127.0.0.1", live_server.port, timeout=60)
    try:
        answers = []
        for body in (pixels_with_dimensions(65), pixels_with_dimensions(65)):
            connection.request("POST", f"/v2/models/{MODEL_NAME}/infer", body=body)
            response = connection.getresponse()
            answers.append((response.status, json.loads(response.read())))
    finally:
        connection.close()

    error = f"input 'pixels': shape {[1] * 65} has 65 dimensions; pixels have 4: [images, height, width, 3]"
    assert answers == [(400, {"error": error})] * 2
