"""The service under test: settings for the session's tiny model, a shared client, and test images."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.hostile_model import HOSTILE_MODEL, export_hostile_model
from tests.support.models import IMAGE_SIZE, MODEL_NAME

if TYPE_CHECKING:
    from tests.app.servers import Server


@pytest.fixture(scope="session")
def make_settings(model_repository: Path) -> Callable[..., Settings]:
    """Settings serving the session's model, with any field overridden."""

    def make(**overrides) -> Settings:
        # MAX_BATCH_SIZE as set, not timed: tests of batching need batches of up to 8, whatever batch
        # size the tiny model gains from on this machine (tests/app/test_batching.py times models).
        defaults = {
            "model_base_path": model_repository,
            "model_name": MODEL_NAME,
            "max_batch_size": 8,
            "batch_measure_s": 0,
        }
        return Settings(**(defaults | overrides))

    return make


@dataclass(frozen=True)
class HostileRepository:
    """A model repository serving `HOSTILE_MODEL` (tests/hostile_model.py), and its gate files."""

    base: Path
    gate: Path
    entered: Path


@pytest.fixture(scope="session")
def hostile_repository(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> HostileRepository:
    base = tmp_path_factory.mktemp("hostile-models")
    gate, entered = base / "gate", base / "entered"
    metadata = model_repository / MODEL_NAME / "1" / "metadata.json"
    export_hostile_model(base / HOSTILE_MODEL / "1", metadata, gate, entered, IMAGE_SIZE)
    return HostileRepository(base, gate, entered)


@pytest.fixture(scope="session")
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """One app with default limits, shared by the tests that do not need settings of their own."""
    with TestClient(create_app(make_settings())) as client:
        yield client


@pytest.fixture(scope="session")
def serving_default(model_repository: Path) -> Callable[[bytes], np.ndarray]:
    """The SavedModel's own path from encoded image to probabilities, as TF Serving would run it."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(model_repository / MODEL_NAME / "1")).signatures["serving_default"]
    return lambda data: signature(image_bytes=tf.constant([data]))["probabilities"].numpy()[0]


@pytest.fixture(scope="session")
def predict_pixels(model_repository: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The SavedModel's own `predict_pixels` signature: float32 [images, 32, 32, 3] -> probabilities."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(model_repository / MODEL_NAME / "1")).signatures["predict_pixels"]
    return lambda pixels: signature(pixels=tf.constant(pixels))["probabilities"].numpy()


@pytest.fixture(scope="module")
def versions_app(
    two_versions: Path, tmp_path_factory: pytest.TempPathFactory, make_settings
) -> Iterator[TestClient]:
    """Versions 1 and 2 serving, labelled stable and canary, beside a corrupt version 3 (END)."""
    import shutil

    from app.runtime.repository import LABELS_FILE

    base = tmp_path_factory.mktemp("versions")
    shutil.copytree(two_versions / MODEL_NAME, base / MODEL_NAME)
    shutil.copytree(base / MODEL_NAME / "1", base / MODEL_NAME / "3")
    (base / MODEL_NAME / "3" / "saved_model.pb").write_bytes(b"\x00garbage" * 100)
    (base / MODEL_NAME / LABELS_FILE).write_text('{"stable": 1, "canary": 2}')
    settings = make_settings(model_base_path=base, model_version_policy="all", model_poll_seconds=0)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="session")
def live_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator["Server"]:
    """One `python -m app` on a free port of 127.0.0.1, for the protocols' tests through real clients."""
    from tests.app.servers import running_server

    with running_server(model_repository, tmp_path_factory.mktemp("live") / "server.log") as server:
        yield server
