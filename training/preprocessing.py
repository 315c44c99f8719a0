"""The one path from encoded image to model input, shared by the training data and the SavedModel.

Scaling to the network's range is a layer of the network itself (see inception_v2.py).
"""

import tensorflow as tf

RESIZE_METHOD = "bilinear"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """Decode JPEG, PNG, GIF (first frame) or BMP bytes to uint8 RGB, grayscale included."""
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def resize(image: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Resize to the model's input size as float32 in [0, 255], as image_dataset_from_directory does."""
    return tf.image.resize(image, image_size, method=RESIZE_METHOD)


def decode_and_resize(image_bytes: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    return resize(decode_image(image_bytes), image_size)
