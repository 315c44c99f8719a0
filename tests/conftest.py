"""Fixtures shared across the test suites: tiny real models in model repositories."""

import shutil
from pathlib import Path

import pytest

MODEL_NAME = "inception_v2"
LABELS = ["circle", "square", "triangle"]
IMAGE_SIZE = 32


def export_tiny_model(base: Path, seed: int) -> Path:
    """Export the next version of MODEL_NAME under `base`: the notebook's network at 32x32, 3 classes.

    Random weights from `seed`: its probabilities are real, just not meaningful. Exported with the
    training issue's exporter, so the service is tested against the artifact it serves in production.
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
