"""Training, /predict and the SavedModel's `serving_default` see the same pixels for the same file.

For a version that preprocesses as TF-slim evaluates (`SLIM_EVAL`: central crop, TensorFlow 1's
resize, JPEGs at full size, as `import-slim` exports) as for one that preprocesses as training does.

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
from app.settings import Settings
from imaging.decode import DEFAULT_MAX_IMAGE_PIXELS, decode
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
from tests.support.http import files
from tests.support.models import IMAGE_SIZE, LABELS, MODEL_NAME, export_tiny_model
from training.data import Split, make_dataset
from training.preprocessing import SLIM_EVAL, decode_and_resize, first_gif_frame, image_dimensions, resize
from training.preprocessing import decode_image as graph_decode

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


@pytest.mark.parametrize("name", [*CORPUS, *REFUSED])
def test_the_graph_reads_each_images_size_from_its_header_as_pillow_does(name):
    data = {**CORPUS, **REFUSED}[name]
    width, height = Image.open(io.BytesIO(data)).size

    assert image_dimensions(tf.constant(data), tf.constant(data[:30])).numpy().tolist() == [height, width]


def header_bomb(name: str, width: int, height: int) -> bytes:
    """A corpus file whose header claims `width` x `height`: what decoding it would cost, with none of
    the data (a PNG's header checksum no longer matches either)."""
    data = bytearray(CORPUS[name])
    if name.endswith(".png"):
        data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    elif name.endswith(".gif"):
        data[6:10] = width.to_bytes(2, "little") + height.to_bytes(2, "little")
    else:
        data[18:26] = width.to_bytes(4, "little") + height.to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize(
    "name", ["large-420.jpg", "rgb-8bit.png", "animated.gif", "rgb-24bit.bmp", "lossy.webp"]
)
def test_the_graph_decodes_up_to_its_pixel_cap_and_refuses_beyond_it(name):
    data = CORPUS[name]
    width, height = Image.open(io.BytesIO(data)).size
    pixels = width * height

    assert (
        graph_decode(tf.constant(data), SIZE, max_pixels=pixels).shape[:2]
        == decode(data, size=SIZE).shape[:2]
    )
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        graph_decode(tf.constant(data), SIZE, max_pixels=pixels - 1)
    assert (
        f"{width}x{height} is {pixels} pixels, over the {pixels - 1} this model decodes"
        in refused.value.message
    )


@pytest.mark.parametrize("name", ["rgb-8bit.png", "animated.gif", "rgb-24bit.bmp"])
def test_serving_default_refuses_an_image_over_the_services_cap_from_its_header(name, serving_default):
    """A 50000 x 50000 header: refused as the service refuses it, before any decoding is tried."""
    message = f"50000x50000 is 2500000000 pixels, over the {DEFAULT_MAX_IMAGE_PIXELS} this model decodes"

    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serving_default(header_bomb(name, 50_000, 50_000))
    assert Settings().max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS


def test_the_graph_decodes_a_gifs_first_frame_only():
    """The bytes TensorFlow's GIF decoder gets hold the first frame and the trailer; a still GIF is
    left as it is."""
    data = CORPUS["animated.gif"]
    every_frame = tf.io.decode_gif(data).numpy()
    first = first_gif_frame(tf.constant(data)).numpy()

    assert every_frame.shape[0] == 2
    assert len(first) < len(data)
    assert first.endswith(b";")
    np.testing.assert_array_equal(tf.io.decode_gif(first).numpy(), every_frame[:1])
    assert first_gif_frame(tf.constant(CORPUS["still.gif"])).numpy() == CORPUS["still.gif"]


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
        "central_crop": None,
        "resize": "bilinear",
    }
    assert max_difference(service_pixels(full_decoding_client, "photo.jpg", data), full_size) == 0
    answer = predict(full_decoding_client, "photo.jpg", data)
    np.testing.assert_allclose(answer, predict_pixels(full_size[None])[0], atol=1e-6)
    assert max_difference(answer, predict_pixels(drafted[None])[0]) > 1e-4


@pytest.fixture(scope="module")
def slim_preprocessing(tmp_path_factory: pytest.TempPathFactory, make_settings) -> Iterator[TestClient]:
    """The session's network exported with slim's evaluation preprocessing, as `import-slim` exports."""
    base = tmp_path_factory.mktemp("slim-preprocessing")
    export_tiny_model(base, seed=0, preprocessing=SLIM_EVAL)
    with TestClient(create_app(make_settings(model_base_path=base))) as client:
        yield client


@pytest.fixture(scope="module")
def slim_training_pixels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Model input for every corpus file, as the training reader makes it with slim's preprocessing."""
    folder = tmp_path_factory.mktemp("slim-data") / "label"
    folder.mkdir()
    for name, data in CORPUS.items():
        (folder / name).write_bytes(data)
    paths = [str(folder / name) for name in CORPUS]
    dataset = make_dataset(
        Split(paths, [0] * len(paths)), SIZE, len(paths), shuffle=False, seed=0, preprocessing=SLIM_EVAL
    )
    (pixels, _), *_ = list(dataset)
    return dict(zip(CORPUS, pixels.numpy(), strict=True))


@pytest.mark.parametrize("name", [name for name in CORPUS if orientation(name) is None])
def test_slims_preprocessing_is_the_same_in_training_predict_and_serving_default(
    name, slim_preprocessing, slim_training_pixels, training_pixels
):
    data = CORPUS[name]
    served = service_pixels(slim_preprocessing, name, data)
    signature = slim_preprocessing.app.state.dataplane.model().model.saved_model.signatures["serving_default"]

    assert max_difference(served, slim_training_pixels[name]) == 0
    assert max_difference(decode_and_resize(tf.constant(data), SIZE, SLIM_EVAL).numpy(), served) == 0
    # What makes it slim's: not the pixels of the default preprocessing.
    assert max_difference(served, training_pixels[name]) > 1
    np.testing.assert_allclose(
        predict(slim_preprocessing, name, data),
        signature(image_bytes=tf.constant([data]))["probabilities"].numpy()[0],
        atol=1e-6,
    )
