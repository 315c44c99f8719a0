"""The figures of docs/confidence.md: calibration and "not sure" of a trained version, measured.

Trains a version with the training command on the demo's shapes, then, through the SavedModel's
own signatures (the service's decoding, `resize_image`, `predict_pixels`, `features`), measures:
- the expected calibration error on fresh images of the same shapes, before and after scaling;
- for each candidate out-of-distribution score (the maximum calibrated probability, the energy of
  the logits, and the served `ood_score`), with its threshold chosen on the validation split as the
  exporter chooses it (`threshold_keeping`: 95 %): the share flagged of fresh in-distribution images
  and of each kind of image in tests/ood_images.py, and the area under the ROC curve against them.

    python -m tests.confidence_figures --out /tmp/confidence [--arch inception_v2 --image-size 64]
"""

import argparse
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from imaging.decode import decode
from tests import ood_images
from training.__main__ import main as training_command
from training.confidence import (
    ECE_BINS,
    KEEP,
    expected_calibration_error,
    fit_temperature,
    softmax,
    threshold_keeping,
)
from training.data import list_image_folder, scan_image_folder
from training.demo_data import make_demo_data

PER_KIND = 200


class Version:
    """A version's SavedModel, called as the service calls it."""

    def __init__(self, folder: Path):
        self.metadata = json.loads((folder / "metadata.json").read_text())
        spec = self.metadata["input"]
        self.size = (spec["height"], spec["width"])
        saved = tf.saved_model.load(str(folder))
        self._resize = saved.signatures["resize_image"]
        self._predict = saved.signatures["predict_pixels"]
        self._features = saved.signatures["features"]

    def outputs(self, images: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
        """logits, features, probabilities and ood_score of uint8 RGB images, in batches of 64."""
        pixels = [self._resize(image=image)["pixels"] for image in images]
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(pixels), 64):
            batch = tf.stack(pixels[start : start + 64])
            for key, value in {**self._features(pixels=batch), **self._predict(pixels=batch)}.items():
                parts.setdefault(key, []).append(value.numpy().astype(np.float64))
        return {key: np.concatenate(value) for key, value in parts.items()}

    def files(self, paths: list[str]) -> dict[str, np.ndarray]:
        return self.outputs(decode(path, size=self.size) for path in paths)


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """The chance that an outside image scores above an inside one (ties count half)."""
    above = (outside[:, None] > inside[None, :]).mean()
    ties = (outside[:, None] == inside[None, :]).mean()
    return float(above + ties / 2)


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, resamples: int = 1000) -> list[float]:
    """The 95 % percentile bootstrap interval of `statistic(indices)` over n images."""
    rng = np.random.default_rng(0)
    values = np.sort([statistic(rng.integers(0, n, n)) for _ in range(resamples)])
    return [float(values[int(0.025 * resamples)]), float(values[int(0.975 * resamples) - 1])]


def noise_floor(probabilities: np.ndarray, draws: int = 200) -> list[float]:
    """The ECE's mean and 95 % range when each label is drawn from `probabilities` (calibrated by
    construction): what a finite set of images measures for a model with no calibration error."""
    rng = np.random.default_rng(0)
    cumulative = probabilities.cumsum(axis=1)
    values = []
    for _ in range(draws):
        labels = (rng.random((len(probabilities), 1)) > cumulative).sum(axis=1)
        values.append(
            expected_calibration_error(probabilities, np.minimum(labels, probabilities.shape[1] - 1))
        )
    values = np.sort(values)
    return [float(values.mean()), float(values[int(0.025 * draws)]), float(values[int(0.975 * draws) - 1])]


def train_demo(out: Path, arch: str, image_size: int, epochs: int, per_class: int) -> tuple[Path, Path, Path]:
    """A version trained by the training command on the demo's shapes (once), its data and held-back set."""
    data, held_back = out / "data", out / "held_back"
    if not (out / "models" / "demo").is_dir():  # measured before: measure the same version again
        make_demo_data(data, per_class, seed=0)
        make_demo_data(held_back, 100, seed=1)
        # fmt: off
        status = training_command([
            "train", "--data-dir", str(data), "--model-base-path", str(out / "models"),
            "--model-name", "demo", "--arch", arch, "--image-size", str(image_size), "--epochs", str(epochs),
            "--checkpoint-dir", str(out / "checkpoints"),
        ])
        # fmt: on
        assert status == 0
    return sorted((out / "models" / "demo").iterdir(), key=lambda p: int(p.name))[-1], data, held_back


def measure(
    folder: Path, data: Path, held_back_data: Path, validation_split: float, seed: int
) -> dict[str, Any]:
    version = Version(folder)
    confidence = version.metadata["confidence"]
    temperature = confidence["temperature"]
    split = scan_image_folder(data, validation_split, seed, version.size)  # as the training command split it
    held_back_files = list_image_folder(held_back_data, version.size)

    validation = version.files(split.validation.paths)
    held_back = version.files(held_back_files.paths)
    side = 80  # the demo images' side
    kinds = {
        name: version.outputs(np.asarray(image) for image in ood_images.images(kind, PER_KIND, side, seed))
        for seed, (name, kind) in enumerate({**ood_images.FAR, **ood_images.NEAR}.items())
    }

    def candidates(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        logits = outputs["logits"]
        shifted = logits - logits.max(axis=1, keepdims=True)
        return {
            "max calibrated probability": 1 - softmax(logits, temperature).max(axis=1),
            "energy": -(np.log(np.exp(shifted).sum(axis=1)) + logits.max(axis=1)),
            "ood_score (served)": outputs["ood_score"],
        }

    at_validation = candidates(validation)
    thresholds = {name: threshold_keeping(scores) for name, scores in at_validation.items()}
    # The served score's threshold at split conformal prediction's rank, which keeps 95 % on average
    served = np.sort(at_validation["ood_score (served)"])
    thresholds["ood_score, conformal rank"] = float(served[math.ceil((len(served) + 1) * KEEP) - 1])
    sets = {"held-back images": held_back, **kinds}
    scored = {name: candidates(outputs) for name, outputs in sets.items()}
    for name in scored:
        scored[name]["ood_score, conformal rank"] = scored[name]["ood_score (served)"]
    labels = np.array(held_back_files.labels)
    logits = held_back["logits"]
    n = len(labels)

    def ece(temperature: float, indices: np.ndarray | slice = slice(None)) -> float:
        return expected_calibration_error(softmax(logits[indices], temperature), labels[indices])

    # A temperature fitted on half the held-back images, judged on the other half: what one
    # temperature can do at best on this model, with nothing lost between validation and fresh images.
    order = np.random.default_rng(0).permutation(n)
    fit_half, judge_half = order[: n // 2], order[n // 2 :]
    best_temperature = fit_temperature(logits[fit_half], labels[fit_half])
    return {
        "version": str(folder),
        "training": {key: version.metadata["training"].get(key) for key in ("config", "data")},
        "validation_accuracy": version.metadata["training"].get("validation", {}).get("accuracy"),
        "temperature": temperature,
        "threshold": {
            "exported": confidence["ood"]["threshold"],
            "rule": confidence["ood"]["threshold_rule"],
            "measured": thresholds["ood_score (served)"],
        },
        "ece_held_back": {
            "bins": ECE_BINS,
            "before": ece(1.0),
            "before_interval": bootstrap(lambda i: ece(1.0, i), n),
            "after": ece(temperature),
            "after_interval": bootstrap(lambda i: ece(temperature, i), n),
            # The ECE of a perfectly calibrated model with these probabilities on as many images:
            # labels drawn from the calibrated probabilities themselves. What is left is noise.
            "perfectly_calibrated": noise_floor(softmax(logits, temperature)),
            "half_fitted_on_other_half": {
                "temperature": best_temperature,
                "served_temperature_same_half": ece(temperature, judge_half),
                "own_temperature": ece(best_temperature, judge_half),
            },
        },
        "ece_validation": confidence["calibration"],
        "accuracy_held_back": float((logits.argmax(axis=1) == labels).mean()),
        "images": {name: len(outputs["logits"]) for name, outputs in sets.items()},
        "flagged": {
            method: {name: float((scored[name][method] > threshold).mean()) for name in sets}
            for method, threshold in thresholds.items()
        },
        "auroc": {
            method: {
                name: auroc(scored["held-back images"][method], scored[name][method])
                for name in sets
                if name != "held-back images"
            }
            for method in list(thresholds)[:3]
        },
    }


def table(figures: dict[str, Any], key: str) -> str:
    methods = list(figures[key])
    names = list(figures[key][methods[0]])
    lines = [
        "| | " + " | ".join(methods) + " |",
        "| --- |" + " ---: |" * len(methods),
    ]
    for name in names:
        cells = " | ".join(
            f"{figures[key][method][name]:.1%}" if key == "flagged" else f"{figures[key][method][name]:.3f}"
            for method in methods
        )
        lines.append(f"| {name} ({figures['images'][name]}) | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arch", default="inception_v2")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--images-per-class", type=int, default=500)
    parser.add_argument("--version", type=Path, help="measure this version instead of training one")
    parser.add_argument("--data", type=Path, help="the version's training data (with --version)")
    parser.add_argument("--held-back", type=Path, help="images of its classes it never saw (with --version)")
    parser.add_argument("--validation-split", type=float, default=0.2, help="as it was trained with")
    parser.add_argument("--seed", type=int, default=1337, help="as it was trained with")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.version is None:
        version, data, held_back = train_demo(
            args.out, args.arch, args.image_size, args.epochs, args.images_per_class
        )
    else:
        version, data, held_back = args.version, args.data, args.held_back
    figures = measure(version, data, held_back, args.validation_split, args.seed)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k not in ("flagged", "auroc")}, indent=2))
    print("\nShare flagged as not sure\n" + table(figures, "flagged"))
    print("\nArea under the ROC curve against the held-back images\n" + table(figures, "auroc"))


if __name__ == "__main__":
    main()
