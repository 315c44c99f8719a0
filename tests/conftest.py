"""Fixtures shared across the test suites: tiny real models in model repositories, and a trained one."""

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

MODEL_NAME = "inception_v2"
LABELS = ["circle", "square", "triangle"]
IMAGE_SIZE = 32


def export_tiny_model(base: Path, seed: int, **export_options) -> Path:
    """Export the next version of MODEL_NAME under `base`: the notebook's network at 32x32, 3 classes.

    Random weights from `seed`: its probabilities are real, just not meaningful. Exported with the
    training issue's exporter, so the service is tested against the artifact it serves in production.
    `export_options` go to the exporter as they are (`preprocessing=...`).
    """
    import keras

    from training.export import export_model
    from training.inception_v2 import inception_v2_seed

    keras.utils.set_random_seed(seed)
    model = inception_v2_seed(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), num_classes=len(LABELS))
    return export_model(
        model,
        LABELS,
        base_path=base,
        name=MODEL_NAME,
        architecture="inception_v2_seed",
        training={"params": {"epochs": 0}, "data": {"images": 0}, "metrics": {}},
        **export_options,
    )


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding version 1 of MODEL_NAME."""
    base = tmp_path_factory.mktemp("models")
    export_tiny_model(base, seed=0)
    return base


@pytest.fixture(scope="session")
def two_versions(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Path:
    """A model repository holding versions 1 (the session's model) and 2 (other weights)."""
    base = tmp_path_factory.mktemp("two-versions")
    shutil.copytree(model_repository / MODEL_NAME, base / MODEL_NAME)
    export_tiny_model(base, seed=1)
    return base


COLOURS = ("red", "green", "blue")
TRAINED_NAME = "colours"
TRAINED_SIZE = 16


def write_colour_folder(root: Path, per_class: int, seed: int) -> Path:
    """`root/<colour>/<n>.jpg`: the demo's shapes over noise, tinted; the class is the dominant colour.

    A task the small network learns in a few epochs of a few seconds each, whatever the shapes.
    """
    from training.demo_data import draw_shape

    rng = np.random.default_rng(seed)
    for channel, colour in enumerate(COLOURS):
        (root / colour).mkdir(parents=True)
        for i in range(per_class):
            shape = draw_shape(str(rng.choice(["circle", "square", "triangle"])), TRAINED_SIZE, rng)
            pixels = np.asarray(shape).astype(np.float64) * 0.5
            pixels[..., channel] += rng.uniform(90, 127)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                root / colour / f"{i}.jpg", quality=90
            )
    return root


@pytest.fixture(scope="session")
def trained_repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A model repository with version 1 of TRAINED_NAME, trained by the training command (4 epochs).

    Returns the repository and what the command printed. Also writes TensorBoard logs beside it.
    """
    from training.__main__ import main

    root = tmp_path_factory.mktemp("trained")
    data = write_colour_folder(root / "data", per_class=30, seed=0)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        # fmt: off
        status = main([
            "train", "--data-dir", str(data), "--model-base-path", str(root / "models"),
            "--model-name", TRAINED_NAME, "--arch", "inception_v2_seed", "--image-size", str(TRAINED_SIZE),
            "--epochs", "4", "--patience", "4", "--batch-size", "8", "--seed", "7",
            "--checkpoint-dir", str(root / "checkpoints"), "--tensorboard-dir", str(root / "tensorboard"),
        ])
        # fmt: on
    assert status == 0, printed.getvalue()
    return root / "models", printed.getvalue()
