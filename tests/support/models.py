"""The tiny real models the tests serve and train: names, sizes, and how each is made."""

from pathlib import Path

import numpy as np
from PIL import Image

MODEL_NAME = "inception_v2"
LABELS = ["circle", "square", "triangle"]
IMAGE_SIZE = 32


def export_tiny_model(base: Path, seed: int, **export_options) -> Path:
    """Export the next version of MODEL_NAME under `base`: the notebook's network at 32x32, 3 classes.

    Random weights from `seed`: its probabilities are real, just not meaningful. Exported with the
    training issue's exporter, so the service is tested against the artifact it serves in production.
    `export_options` go to the exporter as they are (`preprocessing=...`).
    """
    import keras

    from training.export import export_model
    from training.inception_v2 import inception_v2_seed

    keras.utils.set_random_seed(seed)
    model = inception_v2_seed(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), num_classes=len(LABELS))
    return export_model(
        model,
        LABELS,
        base_path=base,
        name=MODEL_NAME,
        architecture="inception_v2_seed",
        training={"params": {"epochs": 0}, "data": {"images": 0}, "metrics": {}},
        **export_options,
    )


COLOURS = ("red", "green", "blue")
TRAINED_NAME = "colours"
TRAINED_SIZE = 16


def write_colour_folder(root: Path, per_class: int, seed: int) -> Path:
    """`root/<colour>/<n>.jpg`: the demo's shapes over noise, tinted; the class is the dominant colour.

    A task the small network learns in a few epochs of a few seconds each, whatever the shapes.
    """
    from training.demo_data import draw_shape

    rng = np.random.default_rng(seed)
    for channel, colour in enumerate(COLOURS):
        (root / colour).mkdir(parents=True)
        for i in range(per_class):
            shape = draw_shape(str(rng.choice(["circle", "square", "triangle"])), TRAINED_SIZE, rng)
            pixels = np.asarray(shape).astype(np.float64) * 0.5
            pixels[..., channel] += rng.uniform(90, 127)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                root / colour / f"{i}.jpg", quality=90
            )
    return root
