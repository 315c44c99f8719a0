"""The training command end to end, as a user runs it: a real process on tiny generated data."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from imaging.decode import decode
from tests.support.datasets import write_image_folder
from tests.support.models import export_tiny_model
from training.data import Split, make_dataset
from training.preprocessing import Preprocessing

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def run_training(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training", "train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def quick_args(data_dir: Path, models: Path, *extra: str) -> list[str]:
    return [
        "--data-dir",
        str(data_dir),
        "--model-base-path",
        str(models),
        "--model-name",
        "tiny",
        "--arch",
        "inception_v2_seed",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--checkpoint-dir",
        str(models.parent / "checkpoint"),
        *extra,
    ]


def test_train_exports_a_version_with_metrics(tmp_path, image_folder):
    (image_folder / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = run_training(*quick_args(image_folder, tmp_path / "models", "--epochs", "2"))
    assert result.returncode == 0, result.stderr

    assert f"Skipping unreadable image {image_folder / 'a' / 'corrupt.png'}" in result.stderr
    assert "Validation accuracy: " in result.stdout
    assert "Epoch 2/2" in result.stdout
    metadata = json.loads((tmp_path / "models" / "tiny" / "1" / "metadata.json").read_text())
    assert metadata["labels"] == ["a", "b"]
    assert metadata["architecture"]["name"] == "inception_v2_seed"
    assert metadata["training"]["params"]["epochs"] == 2
    assert metadata["training"]["params"]["decay_start"] == 0.5  # the default, from scratch
    assert metadata["training"]["data"]["num_train"] + metadata["training"]["data"]["num_validation"] == 24
    # No paths of the trainer's machine in what the service shows: the folder's name, files within it.
    assert metadata["training"]["data"]["dir"] == "data"
    assert metadata["training"]["params"]["data_dir"] == "data"
    assert metadata["training"]["data"]["skipped_files"] == ["a/corrupt.png"]
    assert str(tmp_path) not in json.dumps(metadata)
    metrics = metadata["training"]["metrics"]
    assert set(metrics["per_class_accuracy"]) == {"a", "b"}
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert f"Exported {tmp_path / 'models' / 'tiny' / '1'}" in result.stdout
    # The backup for resuming is removed once training has finished.
    assert not (tmp_path / "checkpoint").exists()


@pytest.mark.parametrize(
    ("make_data", "extra", "message"),
    [
        (lambda root: root / "nope", [], "does not exist"),
        (lambda root: write_image_folder(root, {"a": 4}), [], "Need at least 2 classes"),
        (lambda root: root.mkdir() or root, [], "has no class subfolders"),
        (
            lambda root: write_image_folder(root, {"a": 4, "b": 4}),
            ["--image-size", "0"],
            "--image-size must be at least 1",
        ),
        (
            lambda root: write_image_folder(root, {"a": 4, "b": 4}),
            ["--arch", "inception_v2", "--image-size", "16"],
            "at least 32x32 pixels",
        ),
    ],
    ids=["missing-folder", "one-class", "empty-folder", "bad-size", "too-small-for-arch"],
)
def test_bad_input_gives_a_clear_message_and_no_traceback(tmp_path, make_data, extra, message):
    data_dir = make_data(tmp_path / "data")
    result = run_training(*quick_args(data_dir, tmp_path / "models", *extra), timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "models" / "tiny").exists() or not any((tmp_path / "models" / "tiny").iterdir())


@pytest.mark.timeout(600)  # three to four trainer processes, each importing TensorFlow
@pytest.mark.parametrize("fine_tune", [False, True], ids=["from-scratch", "fine-tune"])
def test_an_interrupted_run_resumes_from_its_last_epoch(tmp_path, fine_tune):
    data_dir = write_image_folder(tmp_path / "data", {"a": 12, "b": 12})
    extra, checkpointed = [], 1
    if fine_tune:
        # Interrupted once an epoch of fine-tuning is done, after the frozen first one: a signal in the
        # middle of the new phase's first step (Keras compiling its function anew) may take minutes to
        # land on a loaded machine.
        source = export_tiny_model(tmp_path / "source", seed=0)
        extra, checkpointed = ["--init-from", str(source), "--freeze-base-epochs", "1"], 2
    args = quick_args(data_dir, tmp_path / "models", "--epochs", "40", "--patience", "40", *extra)
    process = subprocess.Popen(
        [sys.executable, "-m", "training", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        # Ctrl-C as a terminal gives it, whoever started the suite: a shell running it in the background
        # (`&` without job control) hands its children SIGINT ignored, and Python then never raises
        # KeyboardInterrupt, so the run would finish instead of stopping.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    # A checkpoint is written at the end of every epoch.
    state = tmp_path / "checkpoint" / "state.json"
    while not (state.exists() and json.loads(state.read_text())["epoch"] >= checkpointed):
        assert process.poll() is None, process.communicate()
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(
                f"no checkpoint of epoch {checkpointed} within 300 s:\n{process.communicate()[1]}"
            )
        time.sleep(0.2)
    time.sleep(0.5)  # interrupt mid-run, possibly while a checkpoint is being written
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    assert not (tmp_path / "models" / "tiny").exists() or not any((tmp_path / "models" / "tiny").iterdir())
    interrupted_epoch = max(
        int(line.split()[1].split("/")[0]) for line in stdout.splitlines() if line.startswith("Epoch ")
    )

    if not fine_tune:
        # Other settings would resume from weights trained for something else: refused, kept.
        other = run_training(*args, "--learning-rate", "0.002", timeout=120)
        assert other.returncode == 2, other.stderr
        assert (
            f"{tmp_path / 'checkpoint'} holds epoch {json.loads(state.read_text())['epoch']} of a run "
            "with other settings (learning_rate 0.001 there, 0.002 here). Run the same command as "
            "before to resume it" in other.stderr
        )
        assert "Traceback" not in other.stderr

    resumed = run_training(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming after epoch" in resumed.stderr
    if fine_tune:
        assert "Phase fine-tuning: epochs" in resumed.stderr
        assert "logits starts fresh: shape [(6728, 3), (3,)] in the source, [(6728, 2), (2,)] here" in stderr
    first_epoch = next(
        int(line.split()[1].split("/")[0])
        for line in resumed.stdout.splitlines()
        if line.startswith("Epoch ")
    )
    assert 1 < first_epoch <= interrupted_epoch + 1
    assert (tmp_path / "models" / "tiny" / "1" / "saved_model.pb").is_file()
    metadata = json.loads((tmp_path / "models" / "tiny" / "1" / "metadata.json").read_text())
    # The schedule as run: the rate held for half a run from scratch, not when fine-tuning.
    assert metadata["training"]["params"]["decay_start"] == (0.0 if fine_tune else 0.5)
    if fine_tune:
        assert metadata["training"]["initialization"]["from"] == "inception_v2/1"
        assert metadata["training"]["initialization"]["fresh_layers"]["logits"].startswith("shape")
        assert str(tmp_path) not in json.dumps(metadata)


def test_a_checkpoint_from_other_settings_is_refused_clearly(tmp_path):
    data_dir = write_image_folder(tmp_path / "data", {"a": 8, "b": 8})
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "state.json").write_text('{"epoch": 1, "weights": "epoch-1.weights.h5"}')
    (checkpoint / "epoch-1.weights.h5").write_bytes(b"not a weights file")
    result = run_training(*quick_args(data_dir, tmp_path / "models", "--epochs", "1"), timeout=120)
    assert result.returncode == 2
    assert f"Cannot resume from {checkpoint}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_central_crop_is_trained_on_and_served_alike(tmp_path, image_folder):
    """`--central-crop`: the training data and the exported version's own preprocessing crop the same."""
    result = run_training(
        *quick_args(image_folder, tmp_path / "models", "--epochs", "1", "--central-crop", "0.5")
    )
    assert result.returncode == 0, result.stderr
    version = tmp_path / "models" / "tiny" / "1"
    metadata = json.loads((version / "metadata.json").read_text())
    assert metadata["input"]["central_crop"] == metadata["training"]["params"]["central_crop"] == 0.5

    path = image_folder / "a" / "a_0.png"  # 40 x 40: the crop keeps rows and columns 10 to 29
    served = (
        tf.saved_model.load(str(version)).signatures["resize_image"](image=decode(path))["pixels"].numpy()
    )
    (trained, _), *_ = make_dataset(
        Split([str(path)], [0]),
        (32, 32),
        1,
        shuffle=False,
        seed=0,
        preprocessing=Preprocessing(central_crop=0.5),
    )
    np.testing.assert_array_equal(served, tf.image.resize(decode(path)[10:30, 10:30], (32, 32)).numpy())
    np.testing.assert_array_equal(trained.numpy()[0], served)

    refused = run_training(*quick_args(image_folder, tmp_path / "models", "--central-crop", "1.5"))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == "error: --central-crop must be in (0, 1]. Received: 1.5"
