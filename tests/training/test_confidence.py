"""Calibration and the out-of-distribution score: the fitting, and what a trained version carries."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from imaging.decode import decode
from tests.support.models import TRAINED_NAME, write_colour_folder
from training.confidence import (
    ASSURANCE,
    KEEP,
    SHRINKAGE,
    expected_calibration_error,
    fit_feature_statistics,
    fit_temperature,
    order_statistic,
    reliability,
    softmax,
    threshold_keeping,
    threshold_rule,
)
from training.data import list_image_folder


def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_with():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (20_000, 4))
    cumulative = softmax(logits, 2.5).cumsum(axis=1)
    labels = (rng.random((len(logits), 1)) > cumulative).sum(axis=1)

    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


def test_the_calibration_error_weighs_each_bin_by_its_images():
    # Two images at 0.9, one right, one wrong; two at 0.6, both right: |0.5 - 0.9| and |1 - 0.6|.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])

    diagram = reliability(probabilities, labels, bins=10)

    assert diagram.counts == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
    assert diagram.accuracy[5] == 1.0 and diagram.accuracy[8] == 0.5
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.4)


def test_the_threshold_keeps_its_share_of_fresh_images_with_the_promised_assurance():
    # Uniform scores: the share of fresh images a threshold keeps is the threshold itself.
    rng = np.random.default_rng(0)
    trials = rng.random((4000, 300))

    kept = np.array([threshold_keeping(scores) for scores in trials])

    assert order_statistic(300) == 292
    assert kept.mean() == pytest.approx(292 / 301, abs=0.002)  # the k-th of n uniform: k / (n + 1)
    # Fewer than 1 in 20 keep less than 95 % (P(Binomial(300, 0.95) >= 292) = 0.034), where one rank
    # lower would be more (0.065) and nearly half of the plain conformal rank's (286: 0.463) do.
    ordered = np.sort(trials, axis=1)
    assert (kept < KEEP).mean() == pytest.approx(0.034, abs=0.01)
    assert (kept < KEEP).mean() <= 1 - ASSURANCE
    assert (ordered[:, 290] < KEEP).mean() == pytest.approx(0.065, abs=0.01)
    assert (ordered[:, 285] < KEEP).mean() == pytest.approx(0.463, abs=0.025)
    assert (order_statistic(299), order_statistic(301)) == (291, 293)  # the lowest rank enough, each n


def test_too_few_scores_give_the_largest_and_say_they_promise_nothing():
    assert threshold_keeping(np.arange(10.0)) == 9.0
    assert (
        threshold_rule(58)
        == "is the highest score of the 58 validation images (too few to promise a share kept)"
    )
    assert threshold_rule(59) == (
        "keeps at least 95% of images like the 59 validation images, with 95% confidence "
        "(their score ranked 59, lowest first)"
    )


def test_the_score_is_the_squared_mahalanobis_distance_to_the_nearest_class_mean():
    rng = np.random.default_rng(1)
    features = rng.normal(0, 1, (300, 3)) * [1, 2, 3] + np.repeat([[0, 0, 0], [5, 0, 0]], 150, axis=0)
    labels = np.repeat([0, 1], 150)
    statistics = fit_feature_statistics(features, labels, 2)
    means = np.stack([features[labels == c].mean(axis=0) for c in (0, 1)])
    centred = features - means[labels]
    covariance = centred.T @ centred / len(features)
    shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * np.trace(covariance) / 3 * np.eye(3)
    points = np.array([[0.0, 0.0, 0.0], [5.0, 2.0, 0.0], [20.0, 20.0, 20.0]])

    expected = [min((p - m) @ np.linalg.inv(shrunk) @ (p - m) for m in means) for p in points]
    assert statistics.scores(points) == pytest.approx(expected)


@pytest.fixture(scope="module")
def version(trained_repository):
    models, printed = trained_repository
    folder = models / TRAINED_NAME / "1"
    return folder, json.loads((folder / "metadata.json").read_text()), printed


def test_a_trained_version_records_its_calibration_and_threshold(version):
    _, metadata, printed = version
    confidence = metadata["confidence"]
    validation = metadata["training"]["data"]["num_validation"]

    assert confidence["calibration"]["method"] == "temperature scaling"
    assert confidence["calibration"]["fitted_on"] == f"the {validation} validation images"
    assert confidence["temperature"] > 0
    ood = confidence["ood"]
    assert ood["method"] == "mahalanobis"
    assert ood["threshold_rule"] == threshold_rule(validation)
    assert ood["flagged_validation"] <= 1 - KEEP
    calibration = confidence["calibration"]
    assert (
        f"Calibration: temperature {confidence['temperature']:.3f}, expected calibration error "
        f"{calibration['ece_before']:.4f} before, {calibration['ece_after']:.4f} after"
    ) in printed
    for name in ("serving_default", "predict_pixels"):
        assert metadata["signatures"][name]["outputs"]["ood_score"] == {"dtype": "float32", "shape": [None]}
    assert metadata["report"]["files"] == [
        "learning_curves.png",
        "confusion_matrix.png",
        "calibration.png",
        "worst_validation.png",
    ]


def test_every_signature_gives_the_same_calibrated_probabilities_and_score(version, tmp_path):
    folder, metadata, _ = version
    saved = tf.saved_model.load(str(folder))
    data = write_colour_folder(tmp_path / "data", per_class=2, seed=3)
    files = list_image_folder(data, None)
    encoded = tf.constant([Path(path).read_bytes() for path in files.paths])
    resize = saved.signatures["resize_image"]
    pixels = tf.stack([resize(image=decode(path, size=(16, 16)))["pixels"] for path in files.paths])

    from_bytes = saved.signatures["serving_default"](image_bytes=encoded)
    from_pixels = saved.signatures["predict_pixels"](pixels=pixels)
    features = saved.signatures["features"](pixels=pixels)

    temperature = metadata["confidence"]["temperature"]
    calibrated = softmax(features["logits"].numpy().astype(np.float64), temperature)
    np.testing.assert_allclose(from_pixels["probabilities"].numpy(), calibrated, atol=1e-5)
    np.testing.assert_allclose(from_bytes["probabilities"].numpy(), calibrated, atol=1e-5)
    np.testing.assert_allclose(from_bytes["ood_score"].numpy(), from_pixels["ood_score"].numpy(), rtol=1e-5)
    assert from_pixels["ood_score"].shape == (len(files.paths),)


def test_evaluate_prints_and_writes_the_calibration_error_and_the_share_not_sure(version, tmp_path, capsys):
    from training.__main__ import main

    folder, metadata, _ = version
    data = write_colour_folder(tmp_path / "data", per_class=10, seed=4)

    status = main(
        ["evaluate", "--data-dir", str(data), "--model-base-path", str(folder.parents[1])]
        + ["--model-name", TRAINED_NAME]
    )

    assert status == 0
    summary = json.loads((folder / "evaluation.json").read_text())
    threshold = metadata["confidence"]["ood"]["threshold"]
    assert summary["calibration"]["temperature"] == metadata["confidence"]["temperature"]
    assert summary["not_sure"]["threshold"] == threshold
    printed = capsys.readouterr().out
    assert (
        f"Expected calibration error: {summary['calibration']['ece']:.4f} (15 bins; "
        f"temperature {metadata['confidence']['temperature']:.3f})\n"
        f"Not sure: {summary['not_sure']['share']:.1%} of the images (ood_score above {threshold:.4g})\n"
    ) in printed
    files = list_image_folder(data, (16, 16))
    saved = tf.saved_model.load(str(folder))
    pixels = tf.stack(
        [saved.signatures["resize_image"](image=decode(p, size=(16, 16)))["pixels"] for p in files.paths]
    )
    outputs = saved.signatures["predict_pixels"](pixels=pixels)
    labels = np.array([metadata["labels"].index(files.class_names[i]) for i in files.labels])
    assert summary["calibration"]["ece"] == pytest.approx(
        expected_calibration_error(outputs["probabilities"].numpy(), labels), abs=1e-6
    )
    assert summary["not_sure"]["share"] == pytest.approx(
        float((outputs["ood_score"].numpy() > threshold).mean())
    )
