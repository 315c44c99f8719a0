"""Training, /predict and the SavedModel's `serving_default` see the same pixels for the same file.

The three paths, each as it really runs:
- training: `training.data.make_dataset` reading the files from a folder;
- /predict: the service's upload decoding and its model's `resize_image`, and the real app's answer;
- `serving_default`: the in-graph decoder it is traced from, and the SavedModel's own answer.
Where the graph cannot do what the others do, the test pins exactly what it does instead.
Large JPEGs (`scale-<s>-*.jpg`) are decoded at reduced DCT scale on all three paths alike; a version
exported before that (no `input.jpeg_scaling`) is still decoded at full size.
"""

import io
import json
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient
from PIL import Image
from PIL.JpegImagePlugin import get_sampling

from app.main import create_app
from imaging.decode import decode
from tests.app.conftest import files
from tests.conftest import IMAGE_SIZE, LABELS, MODEL_NAME
from tests.image_corpus import (
    INPUT_SIDE,
    UPRIGHT,
    corpus,
    dct_scale,
    orientation,
    refused_in_graph,
    scaled_jpegs,
    stored_as,
)
from training.data import Split, make_dataset
from training.preprocessing import decode_image as graph_decode
from training.preprocessing import resize

CORPUS = corpus()
REFUSED = refused_in_graph()
SIZE = (IMAGE_SIZE, IMAGE_SIZE)
SCALED = list(scaled_jpegs())
assert INPUT_SIDE == IMAGE_SIZE, "the scale-<s> files are sized for the test model's input"

graph_decode_fn = tf.function(
    lambda data: graph_decode(data, SIZE), input_signature=[tf.TensorSpec([], tf.string)]
)
graph_pixels_fn = tf.function(
    lambda data: resize(graph_decode(data, SIZE), SIZE), input_signature=[tf.TensorSpec([], tf.string)]
)


@pytest.fixture(scope="module")
def training_pixels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Model input for every corpus file, as the training reader makes it from a folder."""
    folder = tmp_path_factory.mktemp("data") / "label"
    folder.mkdir()
    cases = {**CORPUS, **REFUSED}
    paths = []
    for name, data in cases.items():
        (folder / name).write_bytes(data)
        paths.append(str(folder / name))
    dataset = make_dataset(Split(paths, [0] * len(paths)), SIZE, len(paths), shuffle=False, seed=0)
    (pixels, _), *rest = list(dataset)
    assert rest == []
    return dict(zip(cases, pixels.numpy(), strict=True))


def service_pixels(client: TestClient, name: str, data: bytes) -> np.ndarray:
    """Model input for an upload, as /predict makes it: the served version's own decode and resize."""
    return client.app.state.dataplane.model()._prepare((name, io.BytesIO(data)))


def predict(client: TestClient, name: str, data: bytes) -> np.ndarray:
    """/predict's probabilities for one file, in label order."""
    response = client.post("/predict", params={"top_k": len(LABELS)}, files=files((name, data)))
    assert response.status_code == 200, response.text
    scores = {p["index"]: p["score"] for p in response.json()["results"][0]["predictions"]}
    return np.array([scores[i] for i in range(len(LABELS))])


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


@pytest.mark.parametrize("name", list(CORPUS))
def test_training_and_the_service_see_the_same_pixels(name, client, training_pixels):
    assert max_difference(training_pixels[name], service_pixels(client, name, CORPUS[name])) == 0


@pytest.mark.parametrize("name", [name for name in CORPUS if orientation(name) is None])
def test_the_graph_decodes_to_the_same_pixels(name, client, training_pixels):
    data = CORPUS[name]

    assert max_difference(graph_decode_fn(data).numpy(), decode(data, size=SIZE)) == 0
    assert max_difference(graph_pixels_fn(data).numpy(), training_pixels[name]) == 0


@pytest.mark.parametrize("name", SCALED)
def test_large_jpegs_decode_at_the_dct_scale_their_names_say(name, training_pixels):
    data, scale = CORPUS[name], dct_scale(name)
    height, width, _ = decode(data).shape

    assert decode(data, size=SIZE).shape == (math.ceil(height / scale), math.ceil(width / scale), 3)
    full_size_pixels = resize(decode(data), SIZE).numpy()
    assert (max_difference(training_pixels[name], full_size_pixels) > 0) == (scale > 1)


@pytest.mark.parametrize("name", SCALED)
def test_the_graph_picks_the_scale_as_the_shared_decoder_for_any_input_size(name):
    """Non-square sizes, both ways round: the rule takes each side against its own target."""
    data = CORPUS[name]
    for size in [(INPUT_SIDE, 2 * INPUT_SIDE), (2 * INPUT_SIDE, INPUT_SIDE)]:
        assert max_difference(graph_decode(tf.constant(data), size).numpy(), decode(data, size=size)) == 0


@pytest.mark.parametrize("name", [name for name in CORPUS if orientation(name) is None])
def test_predict_answers_as_serving_default_does(name, client, serving_default):
    np.testing.assert_allclose(predict(client, name, CORPUS[name]), serving_default(CORPUS[name]), atol=1e-6)


@pytest.mark.parametrize("name", [name for name in CORPUS if orientation(name) is not None])
def test_exif_orientation_is_applied_except_in_the_graph(name, client, serving_default):
    """The graph has no EXIF reader: it decodes the pixels as stored, as if the tag were not there."""
    data, untagged = CORPUS[name], CORPUS[stored_as(name)]
    stored = graph_decode_fn(data).numpy()

    upright = np.asarray(Image.fromarray(stored).transpose(UPRIGHT[orientation(name)]))
    assert max_difference(decode(data, size=SIZE), upright) == 0
    assert max_difference(stored, decode(untagged, size=SIZE)) == 0
    np.testing.assert_allclose(serving_default(data), predict(client, name, untagged), atol=1e-6)


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_the_graph_cannot_decode_alike_it_refuses(name, client, training_pixels):
    data = REFUSED[name]
    message = (
        "Animated WebP images cannot be decoded here"
        if name.endswith(".webp")
        else "Only BMP images of 24 or 32 bits per pixel can be decoded here"
    )

    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        graph_decode_fn(data)
    assert max_difference(training_pixels[name], service_pixels(client, name, data)) == 0
    assert predict(client, name, data).shape == (len(LABELS),)


def test_serving_default_refuses_as_its_graph_does(serving_default: Callable[[bytes], np.ndarray]):
    with pytest.raises(tf.errors.InvalidArgumentError, match="Only BMP images of 24 or 32 bits"):
        serving_default(REFUSED["palette-8bit.bmp"])


def test_the_corpus_is_what_its_names_say():
    """So that a Pillow change cannot quietly turn a case into an easier one."""
    modes = {name: Image.open(io.BytesIO(data)) for name, data in {**CORPUS, **REFUSED}.items()}

    assert modes["cmyk.jpg"].mode == "CMYK"
    assert modes["grayscale.jpg"].mode == "L"
    assert modes["progressive.jpg"].info.get("progressive") == 1
    assert modes["gray-16bit.png"].mode == "I;16"
    assert modes["palette.png"].mode == "P"
    assert modes["rgba.png"].mode == "RGBA"
    assert modes["animated.gif"].n_frames == 2
    assert modes["animated.webp"].n_frames == 2
    assert modes["palette-8bit.bmp"].mode == "P"
    assert modes["bilevel-1bit.bmp"].mode == "1"
    assert modes["exif-6.jpg"].getexif()[0x0112] == 6
    assert modes["exif-6-large.jpg"].getexif()[0x0112] == 6
    assert modes["scale-8-progressive.jpg"].info.get("progressive") == 1
    assert modes["scale-8-grayscale.jpg"].mode == "L"
    assert modes["scale-4-cmyk.jpg"].mode == "CMYK"
    assert {name: get_sampling(modes[name]) for name in SCALED if name[-7:-4] in ("420", "422", "444")} == {
        "scale-2-420.jpg": 2,
        "scale-2-422.jpg": 1,
        "scale-4-444.jpg": 0,
    }
    assert modes["scale-8-3mp.jpg"].width * modes["scale-8-3mp.jpg"].height > 3_000_000
    assert {name: image.format for name, image in modes.items()} == {
        name: {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP"}[name.split(".")[-1]]
        for name in modes
    }


@pytest.fixture(scope="module")
def full_decoding_client(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory, make_settings
) -> Iterator[TestClient]:
    """The session's model as exported before DCT scaling: its metadata.json has no `jpeg_scaling`."""
    base = tmp_path_factory.mktemp("before-dct-scaling")
    shutil.copytree(model_repository / MODEL_NAME, base / MODEL_NAME)
    metadata_file = base / MODEL_NAME / "1" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    del metadata["input"]["jpeg_scaling"]
    metadata_file.write_text(json.dumps(metadata))
    with TestClient(create_app(make_settings(model_base_path=base))) as client:
        yield client


def test_a_version_exported_before_dct_scaling_still_decodes_at_full_size(
    full_decoding_client, predict_pixels
):
    data = CORPUS["scale-8-progressive.jpg"]
    full_size = resize(decode(data), SIZE).numpy()
    drafted = resize(decode(data, size=SIZE), SIZE).numpy()

    assert full_decoding_client.get("/model").json()["input"] == {
        "height": IMAGE_SIZE,
        "width": IMAGE_SIZE,
        "jpeg_scaling": "full",
    }
    assert max_difference(service_pixels(full_decoding_client, "photo.jpg", data), full_size) == 0
    answer = predict(full_decoding_client, "photo.jpg", data)
    np.testing.assert_allclose(answer, predict_pixels(full_size[None])[0], atol=1e-6)
    assert max_difference(answer, predict_pixels(drafted[None])[0]) > 1e-4
