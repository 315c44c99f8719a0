"""`python -m training evaluate`, and the proof that training learns: a held-back set, measured by it."""

import json
import shutil
from pathlib import Path

import pytest

from tests.support.models import COLOURS, TRAINED_NAME, write_colour_folder
from training.__main__ import main
from training.evaluate import decode_size

# What 4 epochs on 90 images reach on 60 held-back ones (measured: 1.0); chance is 1/3.
HELD_BACK_ACCURACY = 0.9


def evaluate(models: Path, data: Path, *extra: str) -> int:
    return main(
        ["evaluate", "--data-dir", str(data), "--model-base-path", str(models), "--model-name", TRAINED_NAME]
        + list(extra)
    )


@pytest.fixture(scope="module")
def held_back(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images made with another seed than the training data: none of them was seen in training."""
    return write_colour_folder(tmp_path_factory.mktemp("held_back") / "data", per_class=20, seed=1)


def test_training_learns_what_it_is_shown(trained_repository, held_back, capsys):
    models, _ = trained_repository

    assert evaluate(models, held_back) == 0

    summary = json.loads((models / TRAINED_NAME / "1" / "evaluation.json").read_text())
    assert summary["num_images"] == 60
    assert summary["accuracy"] >= HELD_BACK_ACCURACY, summary


def test_evaluate_prints_and_writes_every_metric(trained_repository, held_back, capsys):
    models, _ = trained_repository

    assert evaluate(models, held_back, "--version", "1") == 0

    printed = capsys.readouterr().out
    target = models / TRAINED_NAME / "1" / "evaluation.json"
    summary = json.loads(target.read_text())
    assert summary["model"] == {"name": TRAINED_NAME, "version": 1}
    assert summary["labels"] == sorted(COLOURS)  # training orders classes by folder name
    assert set(summary["per_class"]) == set(COLOURS)
    for row in summary["per_class"].values():
        assert set(row) == {"precision", "recall", "f1", "support"}
        assert row["support"] == 20
    matrix = summary["confusion_matrix"]
    assert [sum(row) for row in matrix] == [20, 20, 20]
    assert sum(matrix[i][i] for i in range(3)) == round(summary["accuracy"] * 60)
    assert f"Accuracy: {summary['accuracy']:.4f} (60 images)" in printed
    assert "\nclass        precision    recall        f1  support\n" in printed
    assert "Confusion matrix (rows: true class, columns: predicted)" in printed
    assert f"Wrote {target}" in printed


def test_an_unknown_label_is_a_clear_error(trained_repository, held_back, tmp_path, capsys):
    models, _ = trained_repository
    data = write_colour_folder(tmp_path / "data", per_class=2, seed=2)
    (data / "green").rename(data / "purple")

    assert evaluate(models, data) == 2

    assert capsys.readouterr().err == (
        f"error: {data} has class folders the model does not know: purple. "
        f"{TRAINED_NAME} version 1 knows: blue, green, red.\n"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--version", "9"], "has no version 9; present: 1."), (["--model-name", "nope"], "No model versions")],
)
def test_a_missing_version_is_a_clear_error(trained_repository, held_back, capsys, extra, message):
    models, _ = trained_repository

    assert evaluate(models, held_back, *extra) == 2

    assert message in capsys.readouterr().err


def test_a_summary_it_cannot_write_is_a_clear_error_after_the_table(
    trained_repository, held_back, tmp_path, capsys
):
    models, _ = trained_repository
    shutil.copytree(models / TRAINED_NAME / "1", tmp_path / TRAINED_NAME / "1")
    target = tmp_path / TRAINED_NAME / "1" / "evaluation.json"
    target.unlink(missing_ok=True)  # an earlier test's
    target.mkdir()  # cannot be replaced by a file, even by root

    status = evaluate(tmp_path, held_back)

    printed = capsys.readouterr()
    assert status == 2
    assert "Accuracy: " in printed.out
    assert printed.err.startswith(
        f"error: Cannot write {tmp_path / TRAINED_NAME / '1' / 'evaluation.json'}: "
    )


@pytest.mark.parametrize(
    ("spec", "size"),
    [
        ({"height": 16, "width": 24, "jpeg_scaling": "dct"}, (16, 24)),
        ({"height": 16, "width": 24}, None),  # exported before DCT scaling: decoded at full size
    ],
)
def test_evaluation_decodes_jpegs_as_the_version_was_trained(spec, size):
    assert decode_size({"input": spec}) == size
