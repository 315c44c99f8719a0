"""Finding and loading a model version, and refusing to start on anything else."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.errors import ModelLoadError
from app.main import create_app
from app.runtime.model import Model
from app.runtime.repository import ModelRepository
from app.settings import Settings
from tests.devices import expected_device
from tests.support import ROOT
from tests.support.models import MODEL_NAME


@pytest.fixture
def repository(tmp_path: Path, model_repository: Path) -> Path:
    """A copy of the session's repository that a test may break."""
    shutil.copytree(model_repository / MODEL_NAME, tmp_path / MODEL_NAME)
    return tmp_path


def load(base: Path, version: int | None = None) -> Model:
    """The model the service would serve from `base` (MODEL_VERSION `version`), loaded as it loads it."""
    settings = Settings(
        model_base_path=base,
        model_name=MODEL_NAME,
        model_version=version,
        model_poll_seconds=0,
        max_batch_size=1,
    )
    repository = ModelRepository.start(settings)
    try:
        return repository.get().model
    finally:
        repository.close()


def test_a_loaded_model_knows_its_name_version_and_labels(repository):
    model = load(repository)

    assert (model.name, model.version, model.device) == (MODEL_NAME, 1, expected_device())
    assert model.labels == ["circle", "square", "triangle"]


def test_a_missing_model_folder_is_named(tmp_path):
    with pytest.raises(ModelLoadError) as caught:
        load(tmp_path)

    assert str(caught.value) == (
        f"{tmp_path / MODEL_NAME}: no such folder (MODEL_BASE_PATH/MODEL_NAME); train a model first"
    )


def test_a_model_folder_without_versions_is_named(tmp_path):
    (tmp_path / MODEL_NAME / ".export-abc123").mkdir(parents=True)  # an export that never finished

    with pytest.raises(ModelLoadError, match="no model versions in it"):
        load(tmp_path)


def test_a_missing_version_lists_the_present_ones(repository):
    with pytest.raises(ModelLoadError) as caught:
        load(repository, version=7)

    assert (
        str(caught.value) == f"{repository / MODEL_NAME / '7'}: no such version (MODEL_VERSION 7); present: 1"
    )


def test_an_empty_version_is_named(repository):
    (repository / MODEL_NAME / "2").mkdir()  # by default passed over: an export not finished yet

    with pytest.raises(ModelLoadError) as caught:
        load(repository, version=2)

    assert str(caught.value) == (
        f"{repository / MODEL_NAME / '2'}: no saved_model.pb in it; the version is empty or incomplete"
    )


def test_a_corrupt_saved_model_is_named(repository):
    (repository / MODEL_NAME / "1" / "saved_model.pb").write_bytes(b"\x00garbage" * 100)

    with pytest.raises(ModelLoadError) as caught:
        load(repository)

    assert str(caught.value).startswith(f"{repository / MODEL_NAME / '1'}: not a loadable SavedModel (")
    assert "\n" not in str(caught.value)


def test_missing_weights_are_named(repository):
    shutil.rmtree(repository / MODEL_NAME / "1" / "variables")

    with pytest.raises(ModelLoadError, match="not a loadable SavedModel"):
        load(repository)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("labels"), "labels: Field required"),
        (lambda m: m.update(labels=["a", "b"]), "2 labels for 3 classes"),
        (lambda m: m["input"].pop("height"), "input.height: Field required"),
    ],
)
def test_bad_metadata_is_named(repository, change, message):
    file = repository / MODEL_NAME / "1" / "metadata.json"
    metadata = json.loads(file.read_text())
    change(metadata)
    file.write_text(json.dumps(metadata))

    with pytest.raises(ModelLoadError) as caught:
        load(repository)

    assert str(caught.value).startswith(f"{file}: ")
    assert message in str(caught.value)


def test_metadata_that_is_not_json_is_named(repository):
    file = repository / MODEL_NAME / "1" / "metadata.json"
    file.write_text("{labels: [")

    with pytest.raises(ModelLoadError, match="metadata.json: Invalid JSON"):
        load(repository)


def test_the_app_does_not_start_without_a_model(make_settings, tmp_path):
    app = create_app(make_settings(model_base_path=tmp_path))

    with pytest.raises(ModelLoadError), TestClient(app):
        pass


def run_until_exit(command: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_python_m_app_exits_with_one_line_naming_a_missing_model(tmp_path):
    result = run_until_exit([sys.executable, "-m", "app"], MODEL_BASE_PATH=str(tmp_path), PORT="1")

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    assert line.endswith(
        f"Cannot serve the model: {tmp_path / MODEL_NAME}: no such folder "
        "(MODEL_BASE_PATH/MODEL_NAME); train a model first"
    )


def test_uvicorn_exits_with_one_line_naming_a_corrupt_model(repository):
    (repository / MODEL_NAME / "1" / "saved_model.pb").write_bytes(b"\x00garbage")

    result = run_until_exit(
        [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--port", "1"],
        MODEL_BASE_PATH=str(repository),
    )

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if str(repository) in line]
    assert f"Cannot serve the model: {repository / MODEL_NAME / '1'}: not a loadable SavedModel" in line


def test_start_up_objects_are_kept_out_of_garbage_collection(client):
    """Full collections over TensorFlow's objects stalled every request for ~200 ms."""
    import gc

    assert gc.get_freeze_count() > 100_000
