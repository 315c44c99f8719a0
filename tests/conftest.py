"""Fixtures shared across the test suites: tiny real models in model repositories, and a trained one."""

import contextlib
import io
import shutil
from pathlib import Path

import pytest

from tests.support.models import (
    MODEL_NAME,
    TRAINED_NAME,
    TRAINED_SIZE,
    export_tiny_model,
    write_colour_folder,
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
