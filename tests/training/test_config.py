import subprocess
import sys
from dataclasses import replace

import pytest

from training.config import ARCHITECTURE_NAMES, TrainConfig


def test_the_config_names_every_architecture():
    from training.inception_v2 import ARCHITECTURES

    assert sorted(ARCHITECTURE_NAMES) == sorted(ARCHITECTURES)


def test_help_answers_without_importing_tensorflow():
    """`python -m training [command] --help` prints its help from a process that never loads TensorFlow."""
    script = (
        "import runpy, sys\n"
        "for command in ([], ['train'], ['evaluate'], ['make-demo-data']):\n"
        "    sys.argv = ['training', *command, '--help']\n"
        "    try:\n"
        "        runpy.run_module('training', run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, exit.code\n"
        "print('loaded:', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert "--tensorboard-dir" in result.stdout
    for option in (
        "--augment, --no-augment",
        "--augment-flip, --no-augment-flip",
        "--lr-schedule",
        "--warmup-epochs",
        "--decay-start",
        "--label-smoothing",
        "--weight-decay",
        "--init-from",
        "--freeze-base-epochs",
        "--fine-tune-from",
        "--fine-tune-learning-rate",
        "--train-batch-norm",
        "--kind {shapes,strokes}",
    ):
        assert option in result.stdout
    assert "--version" in result.stdout
    assert result.stdout.endswith("loaded: []\n")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr_schedule": "step"}, "--lr-schedule must be one of ['cosine', 'constant']. Received: 'step'"),
        ({"warmup_epochs": -1}, "--warmup-epochs must not be negative. Received: -1"),
        ({"decay_start": 1.0}, "--decay-start must be in [0, 1). Received: 1.0"),
        ({"freeze_base_epochs": -2}, "--freeze-base-epochs must not be negative. Received: -2"),
        ({"fine_tune_learning_rate": 0.0}, "--fine-tune-learning-rate must be positive. Received: 0.0"),
        ({"label_smoothing": 1.0}, "--label-smoothing must be in [0, 1). Received: 1.0"),
        ({"weight_decay": -0.1}, "--weight-decay must not be negative. Received: -0.1"),
        ({"init_from": "no/such/version"}, "--init-from no/such/version does not exist."),
        ({"augment_flip": True, "augment": False}, "--augment-flip needs --augment."),
    ],
)
def test_bad_settings_are_refused_naming_the_value(change, message):
    with pytest.raises(ValueError) as error:
        replace(TrainConfig(data_dir="d"), **change).validate()
    assert str(error.value) == message


def test_a_slim_checkpoint_is_named_by_its_prefix(tmp_path):
    (tmp_path / "inception_v2.ckpt.index").write_bytes(b"")
    TrainConfig(data_dir="d", init_from=str(tmp_path / "inception_v2.ckpt")).validate()
