"""How far to trust an answer, as the service says it: `confident` and `ood_score` per image, and the
threshold, its source and the calibration in GET /model; versions exported before say they have none."""

import json
import shutil
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from app.api.model import NO_THRESHOLD
from app.main import create_app
from app.settings import Settings
from tests.conftest import TRAINED_NAME


@pytest.fixture(scope="module")
def trained_settings(trained_repository, make_settings) -> Callable[..., Settings]:
    models, _ = trained_repository
    return lambda **overrides: make_settings(model_base_path=models, model_name=TRAINED_NAME, **overrides)


@pytest.fixture(scope="module")
def trained(trained_settings) -> Iterator[TestClient]:
    with TestClient(create_app(trained_settings())) as client:
        yield client


@pytest.fixture(scope="module")
def metadata(trained_repository) -> dict:
    models, _ = trained_repository
    return json.loads((models / TRAINED_NAME / "1" / "metadata.json").read_text())


def test_the_model_gives_its_threshold_how_it_was_chosen_and_its_calibration(trained, metadata):
    confidence = metadata["confidence"]

    info = trained.get("/model").json()

    assert info["confidence"] == {
        "threshold": confidence["ood"]["threshold"],
        "threshold_source": "export",
        "threshold_rule": confidence["ood"]["threshold_rule"],
        "method": "mahalanobis",
        "score": confidence["ood"]["score"],
        "temperature": confidence["temperature"],
        "calibration": confidence["calibration"],
    }


def test_a_setting_overrides_the_threshold(trained_settings, metadata):
    with TestClient(create_app(trained_settings(ood_threshold=1e9))) as client:
        info = client.get("/model").json()["confidence"]

    assert (info["threshold"], info["threshold_source"], info["threshold_rule"]) == (
        1e9,
        "setting",
        "set by OOD_THRESHOLD",
    )
    assert info["calibration"] == metadata["confidence"]["calibration"]


def test_a_version_exported_before_says_it_has_no_threshold(client):
    info = client.get("/model").json()

    assert info["confidence"] == {
        "threshold": None,
        "threshold_source": None,
        "threshold_rule": NO_THRESHOLD,
        "method": None,
        "score": None,
        "temperature": None,
        "calibration": None,
    }
    assert info["plots"] == []


def test_the_model_lists_the_reports_plots_with_their_captions(trained):
    plots = trained.get("/model").json()["plots"]

    assert plots == [
        {"url": "/model/report/1/learning_curves.png", "caption": "Learning curves"},
        {"url": "/model/report/1/confusion_matrix.png", "caption": "Confusion matrix"},
        {"url": "/model/report/1/calibration.png", "caption": "Calibration: reliability diagram"},
        {"url": "/model/report/1/worst_validation.png", "caption": "Worst-classified validation images"},
    ]
    for plot in plots:
        response = trained.get(plot["url"])
        assert (response.status_code, response.headers["content-type"]) == (200, "image/png")


def test_plots_of_a_version_whose_report_lists_no_captions_are_named_after_their_files(
    trained_repository, make_settings, tmp_path
):
    models, _ = trained_repository
    shutil.copytree(models / TRAINED_NAME, tmp_path / TRAINED_NAME)
    file = tmp_path / TRAINED_NAME / "1" / "metadata.json"
    metadata = json.loads(file.read_text())
    del metadata["report"]["figures"]
    file.write_text(json.dumps(metadata))

    with TestClient(create_app(make_settings(model_base_path=tmp_path, model_name=TRAINED_NAME))) as client:
        plots = client.get("/model").json()["plots"]

    assert [plot["caption"] for plot in plots] == [
        "Learning curves",
        "Confusion matrix",
        "Calibration",
        "Worst validation",
    ]
