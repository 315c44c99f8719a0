"""Training, /predict and the SavedModel's `serving_default` see the same pixels for the same file.

The three paths, each as it really runs:
- training: `training.data.make_dataset` reading the files from a folder;
- /predict: the service's upload decoding and its model's `resize_image`, and the real app's answer;
- `serving_default`: the in-graph decoder it is traced from, and the SavedModel's own answer.
Where the graph cannot do what the others do, the test pins exactly what it does instead.
"""

import io
from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient
from PIL import Image

from app.runtime.images import decode_image as service_decode
from imaging.decode import decode
from tests.app.conftest import files
from tests.conftest import IMAGE_SIZE, LABELS
from tests.image_corpus import UPRIGHT, corpus, orientation, refused_in_graph, stored_as
from training.data import Split, make_dataset
from training.preprocessing import decode_image as graph_decode
from training.preprocessing import resize

CORPUS = corpus()
REFUSED = refused_in_graph()
SIZE = (IMAGE_SIZE, IMAGE_SIZE)

graph_decode_fn = tf.function(graph_decode, input_signature=[tf.TensorSpec([], tf.string)])
graph_pixels_fn = tf.function(
    lambda data: resize(graph_decode(data), SIZE), input_signature=[tf.TensorSpec([], tf.string)]
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
    """Model input for an upload, as /predict makes it: the service's decoder, the model's resize."""
    model = client.app.state.models.get().model
    return model.resize(service_decode(io.BytesIO(data), name, max_pixels=10_000_000))


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

    assert max_difference(graph_decode_fn(data).numpy(), decode(data)) == 0
    assert max_difference(graph_pixels_fn(data).numpy(), training_pixels[name]) == 0


@pytest.mark.parametrize("name", [name for name in CORPUS if orientation(name) is None])
def test_predict_answers_as_serving_default_does(name, client, serving_default):
    np.testing.assert_allclose(predict(client, name, CORPUS[name]), serving_default(CORPUS[name]), atol=1e-6)


@pytest.mark.parametrize("name", [name for name in CORPUS if orientation(name) is not None])
def test_exif_orientation_is_applied_except_in_the_graph(name, client, serving_default):
    """The graph has no EXIF reader: it decodes the pixels as stored, as if the tag were not there."""
    data, untagged = CORPUS[name], CORPUS[stored_as(name)]
    stored = graph_decode_fn(data).numpy()

    upright = np.asarray(Image.fromarray(stored).transpose(UPRIGHT[orientation(name)]))
    assert max_difference(decode(data), upright) == 0
    assert max_difference(stored, decode(untagged)) == 0
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
    assert {name: image.format for name, image in modes.items()} == {
        name: {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP"}[name.split(".")[-1]]
        for name in modes
    }
