"""The training report a trained version carries: figures, a page that shows them, TensorBoard logs."""

import json
from html.parser import HTMLParser
from pathlib import Path

from tests.support.models import TRAINED_NAME

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PageLinks(HTMLParser):
    """Every image and every other resource a page would load."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values["src"] or "")
        for key in ("href", "src"):
            if (values.get(key) or "").startswith(("http:", "https:", "//")):
                self.external.append(values[key] or "")


def read_page(folder: Path) -> tuple[str, PageLinks]:
    page = (folder / "index.html").read_text()
    links = PageLinks()
    links.feed(page)
    return page, links


def test_every_image_the_page_names_exists_and_nothing_is_fetched_from_elsewhere(trained_repository):
    models, _ = trained_repository
    folder = models / TRAINED_NAME / "1" / "report"

    page, links = read_page(folder)

    assert links.images == [
        "learning_curves.png",
        "confusion_matrix.png",
        "calibration.png",
        "worst_validation.png",
    ]
    for name in links.images:
        assert (folder / name).read_bytes().startswith(PNG_SIGNATURE), name
    assert links.external == []


def test_the_page_shows_the_settings_and_the_data_counts(trained_repository):
    models, _ = trained_repository
    metadata = json.loads((models / TRAINED_NAME / "1" / "metadata.json").read_text())

    page, _ = read_page(models / TRAINED_NAME / "1" / "report")

    data = metadata["training"]["data"]
    assert f"<tr><th>num_train</th><td>{data['num_train']}</td></tr>" in page
    assert f"<tr><th>num_validation</th><td>{data['num_validation']}</td></tr>" in page
    assert "<tr><th>epochs</th><td>4</td></tr>" in page
    assert "<tr><th>arch</th><td>inception_v2_seed</td></tr>" in page
    assert (
        f"<tr><th>accuracy</th><td>{round(metadata['training']['metrics']['val_accuracy'], 4)}</td></tr>"
        in page
    )


def test_metadata_lists_the_report_files(trained_repository):
    models, _ = trained_repository
    metadata = json.loads((models / TRAINED_NAME / "1" / "metadata.json").read_text())

    assert metadata["report"] == {
        "folder": "report",
        "page": "index.html",
        "files": ["learning_curves.png", "confusion_matrix.png", "calibration.png", "worst_validation.png"],
        "figures": [
            {"file": "learning_curves.png", "caption": "Learning curves"},
            {"file": "confusion_matrix.png", "caption": "Confusion matrix"},
            {"file": "calibration.png", "caption": "Calibration: reliability diagram"},
            {"file": "worst_validation.png", "caption": "Worst-classified validation images"},
        ],
    }
    assert sorted(p.name for p in (models / TRAINED_NAME / "1" / "report").iterdir()) == sorted(
        ["index.html", *metadata["report"]["files"]]
    )


def test_training_prints_the_validation_table_and_records_the_matrix(trained_repository):
    models, printed = trained_repository
    metrics = json.loads((models / TRAINED_NAME / "1" / "metadata.json").read_text())["training"]["metrics"]

    assert "Confusion matrix (rows: true class, columns: predicted)" in printed
    assert len(metrics["history"]["val_loss"]) == metrics["epochs_run"] == 4
    assert sum(map(sum, metrics["confusion_matrix"])) == 18  # 90 images, a validation split of 0.2
    assert {name: row["recall"] for name, row in metrics["per_class"].items()} == metrics[
        "per_class_accuracy"
    ]


def test_tensorboard_logs_are_written(trained_repository):
    models, _ = trained_repository
    logs = models.parent / "tensorboard"

    for run in ("train", "validation"):
        assert list((logs / run).glob("events.out.tfevents.*")), run
