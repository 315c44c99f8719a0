"""The training report of a model version: figures and one self-contained HTML page.

Written by the exporter into `<version>/report/` and listed in metadata.json (`report`), so the
service can serve exactly these files. matplotlib comes with the `train` extra.
"""

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.confidence import Reliability

PAGE = "index.html"
CURVES = "learning_curves.png"
CONFUSION = "confusion_matrix.png"
WORST = "worst_validation.png"
CALIBRATION = "calibration.png"
CAPTIONS = {
    CURVES: "Learning curves",
    CONFUSION: "Confusion matrix",
    CALIBRATION: "Calibration: reliability diagram",
    WORST: "Worst-classified validation images",
}


@dataclass(frozen=True)
class Misclassified:
    """A validation image the model got least right: its pixels and how it was scored."""

    path: str
    pixels: np.ndarray
    label: str
    predicted: str
    true_probability: float


@dataclass(frozen=True)
class TrainingReport:
    history: dict[str, list[float]]
    class_names: list[str]
    confusion: np.ndarray
    worst: list[Misclassified]
    params: dict[str, Any]
    data: dict[str, Any]
    validation: dict[str, Any]
    calibration: tuple[Reliability, Reliability] | None = None  # before and after temperature scaling

    def write(self, folder: Path) -> dict[str, Any]:
        """Write the figures and the page into `folder`; return the manifest for metadata.json."""
        import matplotlib

        matplotlib.use("Agg")  # files only: no display, and no GUI toolkit needed
        folder.mkdir(parents=True, exist_ok=True)
        files = [self._curves(folder / CURVES), self._confusion(folder / CONFUSION)]
        if self.calibration:
            files.append(self._calibration(folder / CALIBRATION))
        if self.worst:
            files.append(self._worst(folder / WORST))
        (folder / PAGE).write_text(self._page(files))
        return {
            "page": PAGE,
            "files": files,
            "figures": [{"file": name, "caption": CAPTIONS[name]} for name in files],
        }

    def _curves(self, path: Path) -> str:
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        figure, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
            for key, name in ((metric, "training"), (f"val_{metric}", "validation")):
                values = self.history.get(key, [])
                ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
            ax.set(title=metric.capitalize(), xlabel="epoch", ylabel=metric)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend()
        return _save(figure, path)

    def _confusion(self, path: Path) -> str:
        import matplotlib.pyplot as plt

        size = 2 + 0.6 * len(self.class_names)
        figure, ax = plt.subplots(figsize=(size + 1, size))
        shown = ax.imshow(self.confusion, cmap="Blues")
        figure.colorbar(shown, ax=ax)
        ticks = range(len(self.class_names))
        ax.set_xticks(ticks, self.class_names, rotation=45, ha="right")
        ax.set_yticks(ticks, self.class_names)
        ax.set(title="Confusion matrix (validation)", xlabel="predicted", ylabel="true")
        threshold = self.confusion.max() / 2
        for (row, column), count in np.ndenumerate(self.confusion):
            colour = "white" if count > threshold else "black"
            ax.text(column, row, str(count), ha="center", va="center", color=colour)
        return _save(figure, path)

    def _calibration(self, path: Path) -> str:
        """The reliability diagram: per bin of top-class probability, how often the top class was right."""
        import matplotlib.pyplot as plt

        figure, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
        assert self.calibration is not None
        for reliability, name in zip(self.calibration, ("before", "after"), strict=True):
            points = [
                (conf, acc)
                for conf, acc in zip(reliability.confidence, reliability.accuracy, strict=True)
                if conf is not None
            ]
            ax.plot(
                *zip(*points, strict=True),
                marker="o",
                label=f"{name} temperature scaling (ECE {reliability.ece:.3f})",
            )
        ax.set(
            title="Calibration (validation)",
            xlabel="top-class probability",
            ylabel="share right",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        return _save(figure, path)

    def _worst(self, path: Path) -> str:
        import matplotlib.pyplot as plt

        columns = min(4, len(self.worst))
        rows = -(-len(self.worst) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.7 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, item in zip(axes.flat, self.worst, strict=False):
            ax.imshow(item.pixels)
            ax.set_title(
                f"{Path(item.path).name}\ntrue {item.label} (p = {item.true_probability:.3f})\n"
                f"predicted {item.predicted}",
                fontsize=8,
            )
        figure.suptitle("Validation images with the lowest probability for their true class")
        return _save(figure, path)

    def _page(self, files: list[str]) -> str:
        def table(rows: dict[str, Any]) -> str:
            cells = "".join(
                f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(_text(value))}</td></tr>"
                for key, value in rows.items()
            )
            return f"<table>{cells}</table>"

        figures = "".join(
            f'<figure><img src="{html.escape(name)}" alt="{CAPTIONS[name]}">'
            f"<figcaption>{CAPTIONS[name]}</figcaption></figure>"
            for name in files
        )
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Training report: {html.escape(str(self.params.get("model_name", "")))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }}
figure {{ margin: 1.5rem 0; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
<h1>Training report</h1>
<h2>Validation</h2>
{table(self.validation)}
{figures}
<h2>Data</h2>
{table(self.data)}
<h2>Settings</h2>
{table(self.params)}
</body>
</html>
"""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _save(figure: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path.name
