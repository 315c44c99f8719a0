"""A real SavedModel that misbehaves on purpose, for the failures a healthy model never shows.

It has the two signatures the service calls and the session model's metadata, and answers
like a model (softmax over the mean colour), except that:
- an all-white image makes TensorFlow raise (a failed `tf.debugging.Assert`), failing the whole
  batch it is in, as an out-of-memory or a bad kernel would;
- an all-grey (128) image holds the inference call until a "gate" file exists, as a slow model
  would, so a test can keep images queued behind it for exactly as long as it needs; the model
  writes an "entered" file when such a call begins, so the test knows the model holds it.
"""

import shutil
from pathlib import Path

HOSTILE_MODEL = "hostile"  # its name in the model repository the tests make for it
WHITE = 255
GREY = 128
GATE_SPINS = 50_000_000  # a bound on the wait for the gate: a forgotten gate cannot hang forever


def export_hostile_model(
    version_dir: Path, metadata_from: Path, gate: Path, entered: Path, image_size: int
) -> None:
    import tensorflow as tf

    def all_pixels_near(pixels: tf.Tensor, value: int) -> tf.Tensor:
        return tf.reduce_all(tf.abs(pixels - value) < 0.5, axis=[1, 2, 3])

    def wait_for_gate() -> tf.Tensor:
        def shut(spins: tf.Tensor) -> tf.Tensor:
            # The pattern depends on the loop variable (an empty string made from it), or TensorFlow's
            # optimiser would hoist the look-up out of the loop as an invariant and never look again.
            pattern = tf.strings.join(
                [str(gate), tf.strings.regex_replace(tf.strings.as_string(spins), ".*", "")]
            )
            return (spins < GATE_SPINS) & (tf.size(tf.io.matching_files(pattern)) == 0)

        with tf.control_dependencies([tf.io.write_file(str(entered), "")]):
            start = tf.identity(0)
        return tf.while_loop(shut, lambda spins: (spins + 1,), (start,))[0]

    @tf.function(
        input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="pixels")]
    )
    def predict_pixels(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        white = tf.reduce_any(all_pixels_near(pixels, WHITE))
        checked = tf.debugging.Assert(tf.logical_not(white), ["an all-white image in the batch"])
        grey = tf.reduce_any(all_pixels_near(pixels, GREY))
        waited = tf.cond(grey, wait_for_gate, lambda: tf.constant(0))
        with tf.control_dependencies([checked, waited]):
            return mean_colour_probabilities(pixels)

    save_test_model(version_dir, metadata_from, predict_pixels, image_size)


def mean_colour_probabilities(pixels):
    """Probabilities as a model gives them, softmax over each image's mean colour: one per channel."""
    import tensorflow as tf

    return {"probabilities": tf.nn.softmax(tf.reduce_mean(pixels / 255.0, axis=[1, 2]))}


def save_test_model(version_dir: Path, metadata_from: Path, predict_pixels, image_size: int) -> None:
    """Save `predict_pixels` (a tf.function) as a version the service loads: with a `resize_image`
    signature to `image_size` beside it, and the metadata of the version `metadata_from` belongs to."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
    def resize_image(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"pixels": tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size))}

    module = tf.Module()
    module.predict_pixels, module.resize_image = predict_pixels, resize_image
    tf.saved_model.save(
        module, str(version_dir), signatures={"predict_pixels": predict_pixels, "resize_image": resize_image}
    )
    shutil.copy(metadata_from, version_dir / "metadata.json")
