"""Both networks learn at the CLI's defaults, from the smallest input size it accepts to the default one.

Measured on images held back from training. The task (the class is the dominant colour) is one any
working network learns in a few epochs at any size, so a network that sticks at constant output or
stays at chance fails here, whatever the cause (docs/training.md tells the two failures this guards).
"""

import json
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from tests.support.models import write_colour_folder
from training.__main__ import main
from training.demo_data import make_demo_data
from training.export import WEIGHTS_FILE, load_layer_weights
from training.inception_v2 import MIN_IMAGE_SIZE, inception_v2_seed

# Chance is 1/3. With augmentation on (flips included, the default until 2026-12-05), 5 epochs of 9
# steps gave 1.0 for the seed network at 4 and 64 and inception_v2 at 32, and 0.87 for inception_v2 at
# 64; with it off, inception_v2 at 32 reached 0.73 in 5 epochs; in 8, all four reached 1.0. With
# augmentation without flips (the default since), 8 epochs gave 1.0, 1.0, 0.97 and 1.0 in the order below,
# and the same again with the rate held at its peak for half the run (the default since).
HELD_BACK_ACCURACY = 0.75
EPOCHS = "8"
SEED_MIN_IMAGE_SIZE = 4  # the seed network's end block needs a 4 x 4 map


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    return write_colour_folder(root / "train", per_class=30, seed=0), write_colour_folder(
        root / "held-back", per_class=10, seed=1
    )


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("arch", "size"),
    [
        ("inception_v2_seed", SEED_MIN_IMAGE_SIZE),
        ("inception_v2_seed", 64),
        ("inception_v2", MIN_IMAGE_SIZE),
        ("inception_v2", 64),
    ],
)
def test_each_network_learns_at_its_defaults(tmp_path, colours, arch, size):
    data, held_back = colours
    models = tmp_path / "models"
    repository = ["--model-base-path", str(models), "--model-name", "m"]
    # Defaults but for the epochs and the batch (so 90 images make more than two steps an epoch).
    # fmt: off
    assert main([
        "train", "--data-dir", str(data), *repository, "--arch", arch, "--image-size", str(size),
        "--epochs", EPOCHS, "--batch-size", "8", "--checkpoint-dir", str(tmp_path / "checkpoint"),
    ]) == 0
    # fmt: on
    assert main(["evaluate", "--data-dir", str(held_back), *repository]) == 0

    accuracy = json.loads((models / "m" / "1" / "evaluation.json").read_text())["accuracy"]
    assert accuracy >= HELD_BACK_ACCURACY, accuracy


@pytest.mark.timeout(900)
def test_the_seed_network_keeps_its_end_filters_alive_at_the_default_learning_rate(tmp_path):
    """Before batch norm in its end block, this run (three demo shapes at 64 x 64, 4 epochs at 0.001)
    left 7 or all 8 of the end filters dead and the loss at ln 3: constant output, for both seeds tried.
    """
    data = make_demo_data(tmp_path / "data", images_per_class=24, size=80, seed=3)
    for extra in ("cross", "star"):
        shutil.rmtree(data / extra)
    models = tmp_path / "models"
    # fmt: off
    assert main([
        "train", "--data-dir", str(data), "--model-base-path", str(models), "--model-name", "m",
        "--arch", "inception_v2_seed", "--image-size", "64", "--epochs", "4", "--no-augment", "--seed", "0",
        "--checkpoint-dir", str(tmp_path / "checkpoint"),
    ]) == 0
    # fmt: on
    model = inception_v2_seed((64, 64, 3), 3)
    for name, arrays in load_layer_weights(models / "m" / "1" / WEIGHTS_FILE).items():
        model.get_layer(name).set_weights(arrays)
    images = np.stack(
        [np.asarray(Image.open(path).convert("RGB").resize((64, 64))) for path in sorted(data.rglob("*.jpg"))]
    ).astype("float32")
    end_filters = keras.Model(model.input, model.get_layer("end_conv_relu").output)(images)

    dead = int(np.sum(np.max(np.asarray(end_filters), axis=(0, 1, 2)) <= 0))
    assert dead < 4, f"{dead} of 8 end filters never fire"
    assert len(set(np.argmax(np.asarray(model(images)), axis=1).tolist())) > 1, "constant output"
