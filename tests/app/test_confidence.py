"""How far to trust an answer, as the service says it: `confident` and `ood_score` per image, and the
threshold, its source and the calibration in GET /model; versions exported before say they have none."""

import base64
import io
import json
import shutil
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.model import NO_THRESHOLD
from app.main import create_app
from app.settings import Settings
from imaging.decode import decode
from tests import ood_images
from tests.support.http import files
from tests.support.images import encode, png
from tests.support.models import COLOURS, TRAINED_NAME


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


@pytest.fixture(scope="module")
def saved_model_scores(trained_repository, metadata) -> Callable[[bytes], tuple[np.ndarray, float]]:
    """The version's own probabilities and ood_score for an encoded image, decoded as the service does."""
    import tensorflow as tf

    models, _ = trained_repository
    saved = tf.saved_model.load(str(models / TRAINED_NAME / "1"))
    size = (metadata["input"]["height"], metadata["input"]["width"])

    def scores(data: bytes) -> tuple[np.ndarray, float]:
        pixels = saved.signatures["resize_image"](image=decode(io.BytesIO(data), size=size))["pixels"]
        outputs = saved.signatures["predict_pixels"](pixels=pixels[None])
        return outputs["probabilities"].numpy()[0], float(outputs["ood_score"].numpy()[0])

    return scores


@pytest.fixture(scope="module")
def uploads(trained_repository) -> dict[str, bytes]:
    """Images of the colours it was trained on, and far from them: noise, text."""
    models, _ = trained_repository
    colours = {
        f"{colour}.jpg": (models.parent / "data" / colour / "0.jpg").read_bytes() for colour in COLOURS
    }
    rng = np.random.default_rng(0)
    far = {f"{name}.png": encode(ood_images.FAR[name](40, rng)) for name in ("noise", "text")}
    return colours | far


def test_each_result_says_whether_the_model_is_sure_and_its_score(
    trained, uploads, saved_model_scores, metadata
):
    threshold = metadata["confidence"]["ood"]["threshold"]

    response = trained.post("/predict", files=files(*uploads.items()))

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [list(result) for result in results] == [
        ["filename", "predictions", "confident", "ood_score"]
    ] * len(uploads)
    for result, data in zip(results, uploads.values(), strict=True):
        probabilities, score = saved_model_scores(data)
        assert result["ood_score"] == pytest.approx(score, rel=1e-5)
        assert result["confident"] is (score <= threshold)
        assert result["predictions"][0]["score"] == pytest.approx(probabilities.max(), abs=1e-6)
    confident = {result["filename"]: result["confident"] for result in results}
    assert confident == {
        "red.jpg": True,
        "green.jpg": True,
        "blue.jpg": True,
        "noise.png": False,
        "text.png": False,
    }


@pytest.mark.parametrize("threshold, confident", [(1e9, True), (-1.0, False)])
def test_the_setting_decides_what_is_confident(trained_settings, uploads, threshold, confident):
    with TestClient(create_app(trained_settings(ood_threshold=threshold))) as client:
        results = client.post("/predict", files=files(*uploads.items())).json()["results"]

    assert [result["confident"] for result in results] == [confident] * len(uploads)


def test_a_version_exported_before_answers_null(client):
    [result] = client.post("/predict", files=files(("a.png", png()))).json()["results"]

    assert (result["confident"], result["ood_score"]) == (None, None)


def test_tf_serving_clients_get_the_score_and_the_verdict_as_outputs(trained, uploads):
    images = [base64.b64encode(data).decode() for data in uploads.values()]
    expected = trained.post("/predict", files=files(*uploads.items()), params={"top_k": 3}).json()["results"]

    rows = trained.post(
        f"/v1/models/{TRAINED_NAME}:predict", json={"instances": [{"b64": i} for i in images]}
    )
    columns = trained.post(
        f"/v1/models/{TRAINED_NAME}:predict", json={"inputs": [{"b64": i} for i in images]}
    )

    assert rows.status_code == columns.status_code == 200
    predictions, outputs = rows.json()["predictions"], columns.json()["outputs"]
    assert [list(row) for row in predictions] == [["probabilities", "ood_score", "confident"]] * len(images)
    assert [row["confident"] for row in predictions] == [result["confident"] for result in expected]
    np.testing.assert_allclose(
        [row["ood_score"] for row in predictions], [result["ood_score"] for result in expected], rtol=1e-5
    )
    assert outputs == {
        key: [row[key] for row in predictions] for key in ("probabilities", "ood_score", "confident")
    }


def test_the_open_inference_protocol_gives_the_score_and_the_verdict_as_outputs(trained, uploads):
    images = [base64.b64encode(data).decode() for data in uploads.values()]
    expected = trained.post("/predict", files=files(*uploads.items())).json()["results"]
    request = {
        "inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [len(images)], "data": images}]
    }

    metadata = trained.get(f"/v2/models/{TRAINED_NAME}").json()
    every = trained.post(f"/v2/models/{TRAINED_NAME}/infer", json=request).json()
    verdict = trained.post(
        f"/v2/models/{TRAINED_NAME}/infer", json=request | {"outputs": [{"name": "confident"}]}
    ).json()

    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(COLOURS)]},
        {"name": "ood_score", "datatype": "FP32", "shape": [-1]},
        {"name": "confident", "datatype": "BOOL", "shape": [-1]},
    ]
    assert [(o["name"], o["datatype"], o["shape"]) for o in every["outputs"]] == [
        ("probabilities", "FP32", [len(images), len(COLOURS)]),
        ("ood_score", "FP32", [len(images)]),
        ("confident", "BOOL", [len(images)]),
    ]
    scores, confident = every["outputs"][1]["data"], every["outputs"][2]["data"]
    np.testing.assert_allclose(scores, [result["ood_score"] for result in expected], rtol=1e-5)
    assert confident == [result["confident"] for result in expected]
    assert verdict["outputs"] == [
        {"name": "confident", "datatype": "BOOL", "shape": [len(images)], "data": confident}
    ]


def test_the_verdict_comes_in_tritons_binary_form_a_byte_each(trained, uploads):
    data = list(uploads.values())
    expected = trained.post("/predict", files=files(*uploads.items())).json()["results"]
    request = {
        "inputs": [
            {
                "name": "image_bytes",
                "datatype": "BYTES",
                "shape": [len(data)],
                "data": [base64.b64encode(d).decode() for d in data],
            }
        ],
        "outputs": [{"name": "confident", "parameters": {"binary_data": True}}],
    }

    response = trained.post(f"/v2/models/{TRAINED_NAME}/infer", json=request)

    header_length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:header_length])
    assert header["outputs"] == [
        {
            "name": "confident",
            "datatype": "BOOL",
            "shape": [len(data)],
            "parameters": {"binary_data_size": len(data)},
        }
    ]
    assert list(response.content[header_length:]) == [int(result["confident"]) for result in expected]


@pytest.mark.parametrize(
    "outputs, detail",
    [
        (
            [{"name": "logits"}],
            "Unknown output 'logits': the model's outputs are probabilities, ood_score and confident",
        ),
        (
            [{"name": "ood_score", "parameters": {"classification": 1}}],
            "output 'ood_score': classification applies to probabilities only",
        ),
        (
            [{"name": "confident"}, {"name": "confident"}],
            "'confident' is requested more than once; request it once",
        ),
    ],
)
def test_outputs_it_cannot_give_are_a_400_naming_them(trained, uploads, outputs, detail):
    image = base64.b64encode(uploads["red.jpg"]).decode()
    request = {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [image]}]}

    response = trained.post(f"/v2/models/{TRAINED_NAME}/infer", json=request | {"outputs": outputs})

    assert (response.status_code, response.json()) == (400, {"error": detail})
