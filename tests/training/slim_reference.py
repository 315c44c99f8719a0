"""TF-slim's own Inception V2, run in a process of its own: the reference the import is tested against.

    python -m tests.training.slim_reference FOLDER IMAGE... --seed N

builds slim's graph (`tf_slim.nets.inception_v2` in `tf.compat.v1`), gives every variable random
values (batch norm statistics included) and saves them with `tf.compat.v1.train.Saver` in both
formats TensorFlow reads: `FOLDER/v1/inception_v2.ckpt` (one file, as the model zoo's 2016
checkpoints are) and `FOLDER/v2/inception_v2.ckpt` (`.index` and `.data-*` files). Then it writes
slim's probabilities for each image into `FOLDER/slim-<central fraction>.npy`, the images
preprocessed as slim's `preprocess_for_eval` (research/slim/preprocessing/inception_preprocessing.py)
with its central crop of 0.875, and without a crop (0.0): what a wrong preprocessing would give.

A process of its own because slim builds a TF1 graph through TensorFlow's legacy Keras layers:
they need tf-keras (dev extra) and leave global state that the tests' own TensorFlow need not share.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

# The numbers that make random weights give peaked probabilities: with slim's own initializers
# every class gets about 1/1001 and any preprocessing would agree within 1e-4.
LOGITS_STDDEV = 0.3


def import_slim():
    """tf_slim, with the alias TensorFlow 2.21's legacy layers need: tf-keras ships them under `src`."""
    import tf_keras.src.legacy_tf_layers

    sys.modules["tf_keras.legacy_tf_layers"] = tf_keras.src.legacy_tf_layers
    import tensorflow as tf
    from tf_slim import arg_scope
    from tf_slim.nets import inception_v2

    tf.compat.v1.disable_eager_execution()
    return tf, arg_scope, inception_v2


def build(tf, arg_scope, inception_v2, images):
    with arg_scope(inception_v2.inception_v2_arg_scope()):
        _, end_points = inception_v2.inception_v2(images, num_classes=1001, is_training=False)
    return end_points["Predictions"]


def random_value(name: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    """He-normal kernels, and batch-norm statistics far from slim's zero mean and unit variance."""
    if name.endswith("moving_variance"):
        return rng.uniform(0.5, 2.0, shape)
    if name.endswith(("beta", "biases", "moving_mean")):
        return rng.normal(0.0, 0.2, shape)
    if "Logits" in name:
        return rng.normal(0.0, LOGITS_STDDEV, shape)
    fan_in = np.prod(shape[:-1]) if not name.endswith("depthwise_weights") else np.prod(shape[:2])
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)


CHECKPOINT = "inception_v2.ckpt"
CENTRAL_FRACTIONS = (0.875, 0.0)


def preprocess_for_eval(tf, image, height: int, width: int, central_fraction: float):
    """slim's `inception_preprocessing.preprocess_for_eval`, line for line."""
    image = tf.image.convert_image_dtype(image, dtype=tf.float32)
    if central_fraction:
        image = tf.image.central_crop(image, central_fraction=central_fraction)
    image = tf.expand_dims(image, 0)
    image = tf.compat.v1.image.resize_bilinear(image, [height, width], align_corners=False)
    image = tf.squeeze(image, [0])
    image = tf.subtract(image, 0.5)
    return tf.multiply(image, 2.0)


def decode(tf, data):
    """JPEGs with the accurate inverse DCT, as the service decodes them; PNGs as they are."""
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_png(data, channels=3),
    )


def run(folder: Path, images: list[Path], seed: int) -> None:
    tf, arg_scope, inception_v2 = import_slim()
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default():
        data = tf.compat.v1.placeholder(tf.string, [])
        preprocessed = [preprocess_for_eval(tf, decode(tf, data), 224, 224, f) for f in CENTRAL_FRACTIONS]
        probabilities = build(tf, arg_scope, inception_v2, tf.stack(preprocessed))
        variables = tf.compat.v1.global_variables()
        with tf.compat.v1.Session() as session:
            for variable in variables:
                value = random_value(variable.op.name, variable.shape.as_list(), rng)
                variable.load(value.astype(np.float32), session)
            for name, version in [
                ("v1", tf.compat.v1.train.SaverDef.V1),
                ("v2", tf.compat.v1.train.SaverDef.V2),
            ]:
                (folder / name).mkdir(parents=True, exist_ok=True)
                saver = tf.compat.v1.train.Saver(variables, write_version=version)
                saver.save(
                    session, str(folder / name / CHECKPOINT), write_meta_graph=False, write_state=False
                )
            rows = np.stack([session.run(probabilities, {data: image.read_bytes()}) for image in images])
    for i, fraction in enumerate(CENTRAL_FRACTIONS):
        np.save(folder / f"slim-{fraction}.npy", rows[:, i])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    run(args.folder, args.images, args.seed)


if __name__ == "__main__":
    main()
