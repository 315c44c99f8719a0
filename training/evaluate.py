"""Evaluate an exported model version on a folder of labelled images, as the service would run it.

The images go through the service's own path: `imaging.decode` (JPEGs at reduced DCT scale when
the version's metadata says it was trained so), then the SavedModel's `resize_image` and
`predict_pixels` signatures. The result is printed as a table and written into the version's
folder as `evaluation.json`, with the expected calibration error of the probabilities the version
gives (calibrated, for versions exported with a temperature) and, for versions with a "not sure"
threshold, the share of the images scoring above it.
"""

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from imaging.decode import decode
from training.confidence import ECE_BINS, expected_calibration_error
from training.data import DataError, list_image_folder
from training.export import METADATA_FILE, existing_versions
from training.metrics import confusion_matrix, format_table, summarize
from training.preprocessing import JPEG_SCALING

EVALUATION_FILE = "evaluation.json"


def version_folder(model_base_path: str | Path, model_name: str, version: int | None) -> Path:
    """The folder of `version` (default: the newest) of the model, or a DataError saying what exists."""
    model_dir = Path(model_base_path) / model_name
    versions = existing_versions(model_dir)
    if not versions:
        raise DataError(f"No model versions under {model_dir}; train one first.")
    if version is None:
        version = versions[-1]
    if version not in versions:
        raise DataError(
            f"{model_dir} has no version {version}; present: {', '.join(str(v) for v in versions)}."
        )
    return model_dir / str(version)


def decode_size(metadata: dict[str, Any]) -> tuple[int, int] | None:
    """The size to decode JPEGs for, as the version was trained; None (full size) for older versions."""
    spec = metadata["input"]
    return (spec["height"], spec["width"]) if spec.get("jpeg_scaling") == JPEG_SCALING else None


def predict_files(
    saved_model: Any, paths: list[str], batch_size: int, size: tuple[int, int] | None
) -> dict[str, np.ndarray]:
    """`predict_pixels`' outputs for each file (probabilities [files, classes], and ood_score [files]
    when the version has it) through the SavedModel's resize and prediction signatures, JPEGs decoded
    for `size` (see `decode_size`)."""
    resize = saved_model.signatures["resize_image"]
    predict = saved_model.signatures["predict_pixels"]
    batches: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(paths), batch_size):
        pixels = [
            resize(image=decode(path, size=size))["pixels"] for path in paths[start : start + batch_size]
        ]
        for key, value in predict(pixels=tf.stack(pixels)).items():
            batches.setdefault(key, []).append(value.numpy())
    return {key: np.concatenate(values) for key, values in batches.items()}


def evaluate(
    data_dir: str | Path,
    model_base_path: str | Path = "models",
    model_name: str = "inception_v2",
    version: int | None = None,
    batch_size: int = 64,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate a model version on `data_dir/<label>/<image>`; return its folder and the summary."""
    folder = version_folder(model_base_path, model_name, version)
    metadata = json.loads((folder / METADATA_FILE).read_text())
    labels: list[str] = metadata["labels"]
    size = decode_size(metadata)
    files = list_image_folder(data_dir, size)
    unknown = [name for name in files.class_names if name not in labels]
    if unknown:
        raise DataError(
            f"{data_dir} has class folders the model does not know: {', '.join(unknown)}. "
            f"{model_name} version {folder.name} knows: {', '.join(labels)}."
        )
    actual = np.array([labels.index(files.class_names[i]) for i in files.labels])
    outputs = predict_files(tf.saved_model.load(str(folder)), files.paths, batch_size, size)
    probabilities = outputs["probabilities"]
    return folder, {
        "model": {"name": model_name, "version": int(folder.name)},
        "data_dir": str(Path(data_dir).resolve()),
        "skipped_files": files.skipped,
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **summarize(confusion_matrix(actual, probabilities.argmax(axis=1), len(labels)), labels),
        "calibration": {
            "ece": expected_calibration_error(probabilities, actual),
            "bins": ECE_BINS,
            "temperature": metadata.get("confidence", {}).get("temperature"),
        },
        "not_sure": not_sure(metadata, outputs.get("ood_score")),
    }


def not_sure(metadata: dict[str, Any], scores: np.ndarray | None) -> dict[str, Any] | None:
    """The share of images scoring above the version's threshold; None for a version without one."""
    if scores is None or "confidence" not in metadata:
        return None
    threshold = metadata["confidence"]["ood"]["threshold"]
    return {"threshold": threshold, "share": float((scores > threshold).mean())}


def format_confidence(summary: dict[str, Any]) -> str:
    calibration, not_sure = summary["calibration"], summary["not_sure"]
    temperature = calibration["temperature"]
    lines = [
        f"Expected calibration error: {calibration['ece']:.4f} ({calibration['bins']} bins; "
        + (f"temperature {temperature:.3f})" if temperature else "the version has no temperature)")
    ]
    if not_sure is None:
        lines.append('Not sure: the version has no threshold (exported before "not sure" was)')
    else:
        lines.append(
            f"Not sure: {not_sure['share']:.1%} of the images (ood_score above {not_sure['threshold']:.4g})"
        )
    return "\n".join(lines)


def write_summary(folder: Path, summary: dict[str, Any]) -> Path:
    """`evaluation.json` in the version's folder, replaced whole: the service may be reading the folder."""
    target = folder / EVALUATION_FILE
    staged = folder / f".{EVALUATION_FILE}.tmp"
    try:
        staged.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(staged, target)
    except OSError as error:  # a read-only model repository, say: the table is printed already
        raise DataError(f"Cannot write {target}: {error.strerror or error}") from None
    return target


def run(data_dir: str, model_base_path: str, model_name: str, version: int | None) -> None:
    folder, summary = evaluate(data_dir, model_base_path, model_name, version)
    print(f"{model_name} version {summary['model']['version']} on {data_dir}")
    print(format_table(summary))
    print(format_confidence(summary))
    print(f"Wrote {write_summary(folder, summary)}")
