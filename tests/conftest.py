"""Fixtures shared across the test suites: a tiny real model in a model repository."""

from pathlib import Path

import pytest

MODEL_NAME = "inception_v2"
LABELS = ["circle", "square", "triangle"]
IMAGE_SIZE = 32


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding version 1 of MODEL_NAME: the notebook's network at 32x32, 3 classes.

    Random weights: its probabilities are real, just not meaningful. Exported with the training
    issue's exporter, so the service is tested against the artifact it serves in production.
    """
    import keras

    from training.export import export_model
    from training.inception_v2 import inception_v2_seed

    keras.utils.set_random_seed(0)
    model = inception_v2_seed(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), num_classes=len(LABELS))
    base = tmp_path_factory.mktemp("models")
    export_model(
        model,
        LABELS,
        base_path=base,
        name=MODEL_NAME,
        architecture="inception_v2_seed",
        training={"params": {"epochs": 0}, "data": {"images": 0}, "metrics": {}},
    )
    return base
