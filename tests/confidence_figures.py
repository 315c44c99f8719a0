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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from imaging.decode import decode
from tests import ood_images
from training.__main__ import main as training_command
from training.confidence import expected_calibration_error, softmax, threshold_keeping
from training.data import list_image_folder, scan_image_folder
from training.demo_data import CLASSES, make_demo_data

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


def measure(out: Path, arch: str, image_size: int, epochs: int, per_class: int) -> dict[str, Any]:
    data = out / "data"
    if not (out / "models" / "demo").is_dir():  # measured before: measure the same version again
        make_demo_data(data, per_class, seed=0)
        # fmt: off
        status = training_command([
            "train", "--data-dir", str(data), "--model-base-path", str(out / "models"),
            "--model-name", "demo", "--arch", arch, "--image-size", str(image_size), "--epochs", str(epochs),
            "--checkpoint-dir", str(out / "checkpoints"),
        ])
        # fmt: on
        assert status == 0
    folder = sorted((out / "models" / "demo").iterdir(), key=lambda p: int(p.name))[-1]
    version = Version(folder)
    confidence = version.metadata["confidence"]
    temperature = confidence["temperature"]
    split = scan_image_folder(data, 0.2, 1337, version.size)  # the training command's defaults
    held_back_files = list_image_folder(make_demo_data(out / "held_back", 100, seed=1), version.size)
    assert held_back_files.class_names == list(CLASSES)

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
    sets = {"held-back shapes": held_back, **kinds}
    scored = {name: candidates(outputs) for name, outputs in sets.items()}
    labels = np.array(held_back_files.labels)
    return {
        "model": {"arch": arch, "image_size": image_size, "epochs": epochs, "images_per_class": per_class},
        "version": str(folder),
        "temperature": temperature,
        "threshold": {
            "exported": confidence["ood"]["threshold"],
            "measured": thresholds["ood_score (served)"],
        },
        "ece_held_back": {
            "before": expected_calibration_error(softmax(held_back["logits"]), labels),
            "after": expected_calibration_error(held_back["probabilities"], labels),
        },
        "ece_validation": confidence["calibration"],
        "accuracy_held_back": float((held_back["probabilities"].argmax(axis=1) == labels).mean()),
        "images": {name: len(outputs["logits"]) for name, outputs in sets.items()},
        "flagged": {
            method: {name: float((scored[name][method] > threshold).mean()) for name in sets}
            for method, threshold in thresholds.items()
        },
        "auroc": {
            method: {
                name: auroc(scored["held-back shapes"][method], scored[name][method])
                for name in sets
                if name != "held-back shapes"
            }
            for method in thresholds
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
    args = parser.parse_args()
    figures = measure(args.out, args.arch, args.image_size, args.epochs, args.images_per_class)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k not in ("flagged", "auroc")}, indent=2))
    print("\nShare flagged as not sure\n" + table(figures, "flagged"))
    print("\nArea under the ROC curve against the held-back shapes\n" + table(figures, "auroc"))


if __name__ == "__main__":
    main()
