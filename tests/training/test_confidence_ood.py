"""Out-of-distribution images are flagged, in-distribution ones are not: a version trained by the
training command, judged by its own signatures and threshold on images the test makes.

The model is the tiny one of the session's colour task (tests/support/models.py), trained on more images:
960 for the class means and covariance the score measures from (with 360, 90 to 95 % of the far
kinds were flagged over training seeds, the photos and textures least), and 240 in the validation
split, on which the exporter places the threshold (with a few dozen, the only threshold that can
promise to keep 95 % is their highest score). One epoch: the score's features, those of the
network's one Inception block, flagged as much after 2, 3 or 6.
docs/confidence.md has the figures of the demo's network on the strokes and the shapes
(`python -m tests.confidence_figures`).
"""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from imaging.decode import decode
from tests import ood_images
from tests.support.models import TRAINED_NAME, TRAINED_SIZE, write_colour_folder
from training.__main__ import main
from training.data import list_image_folder

PER_KIND = 100  # images of each far kind; 600 held-back ones: shares to within a few points
SIDE = 40  # the images are made larger than the input and resized, as uploads are


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ood")
    data = write_colour_folder(root / "data", per_class=400, seed=0)
    with contextlib.redirect_stdout(io.StringIO()):
        # fmt: off
        status = main([
            "train", "--data-dir", str(data), "--model-base-path", str(root / "models"),
            "--model-name", TRAINED_NAME, "--arch", "inception_v2_seed", "--image-size", str(TRAINED_SIZE),
            "--epochs", "1", "--batch-size", "16", "--seed", "7", "--validation-split", "0.2", "--no-augment",
            "--checkpoint-dir", str(root / "checkpoints"),
        ])
        # fmt: on
    assert status == 0
    return root / "models" / TRAINED_NAME / "1"


@pytest.fixture(scope="module")
def flagged(version: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """The share of each kind of image scoring above the version's threshold."""
    import tensorflow as tf

    saved = tf.saved_model.load(str(version))
    threshold = json.loads((version / "metadata.json").read_text())["confidence"]["ood"]["threshold"]
    size = (TRAINED_SIZE, TRAINED_SIZE)

    def share(images: list[np.ndarray]) -> float:
        pixels = tf.stack([saved.signatures["resize_image"](image=image)["pixels"] for image in images])
        scores = saved.signatures["predict_pixels"](pixels=pixels)["ood_score"].numpy()
        return float((scores > threshold).mean())

    held_back = write_colour_folder(tmp_path_factory.mktemp("held_back") / "data", per_class=200, seed=1)
    shares = {
        "held-back colours": share([decode(p, size=size) for p in list_image_folder(held_back, size).paths])
    }
    for seed, (name, kind) in enumerate(ood_images.FAR.items()):
        shares[name] = share([np.asarray(image) for image in ood_images.images(kind, PER_KIND, SIDE, seed)])
    return shares


def test_far_away_images_are_flagged_and_held_back_ones_are_not(flagged):
    far = [share for name, share in flagged.items() if name in ood_images.FAR]

    # Measured on 5 December: noise, flat colours and text 100 %, textures 97 %, photos 89 % (smooth,
    # they are nearest the colour task's images); 97.2 % in all, and 3.7 % of the held-back colours.
    # Over training seeds 7 to 12 and two draws of the images: 91.6 to 98.4 % of the far kinds,
    # photos 67 to 93 %; held-back colours 1.0 to 6.3 %, over 5 % at seeds 9 and 11: the threshold
    # keeps 95 % with 95 % assurance over the validation split, which the seed draws (as the
    # weights: another CPU's kernels change the weights a little, not the split).
    assert np.mean(far) >= 0.9, flagged
    assert min(far) >= 0.5, flagged
    # The threshold keeps at least 95 % of images like the validation split's with a probability of
    # 95 % over the split (`order_statistic`): held-back images of the same classes, the target.
    assert flagged["held-back colours"] <= 0.05, flagged
