"""Classification metrics from predicted and true class indices: NumPy only, shared by the
training report and `python -m training evaluate`."""

from typing import Any

import numpy as np


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true class, predicted class]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(actual), np.asarray(predicted)), 1)
    return counts


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def summarize(confusion: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, per-class precision, recall, F1 and support, and the matrix, as plain JSON.

    A ratio with nothing to divide by (no images of a class, or none predicted as it) is None.
    """
    correct = np.diag(confusion)
    per_class = {}
    for index, name in enumerate(class_names):
        precision = _ratio(correct[index], confusion[:, index].sum())
        recall = _ratio(correct[index], confusion[index].sum())
        f1 = None
        if precision is not None and recall is not None:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(confusion[index].sum()),
        }
    return {
        "accuracy": _ratio(correct.sum(), confusion.sum()),
        "num_images": int(confusion.sum()),
        "per_class": per_class,
        "labels": list(class_names),
        "confusion_matrix": confusion.tolist(),
    }


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a text table: per-class metrics, then the confusion matrix."""

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    names = summary["labels"]
    width = max(12, *(len(name) for name in names))
    lines = [
        f"Accuracy: {cell(summary['accuracy'])} ({summary['num_images']} images)",
        "",
        f"{'class':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}",
    ]
    for name, row in summary["per_class"].items():
        lines.append(
            f"{name:<{width}} {cell(row['precision']):>9} {cell(row['recall']):>9} {cell(row['f1']):>9} "
            f"{row['support']:>8}"
        )
    column = max(8, *(len(name) for name in names))
    lines += ["", "Confusion matrix (rows: true class, columns: predicted)"]
    lines.append(" " * width + "".join(f" {name:>{column}}" for name in names))
    for name, row in zip(names, summary["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}}" + "".join(f" {count:>{column}}" for count in row))
    return "\n".join(lines)
