"""The SavedModel's in-graph path from encoded image to model input, for TF Serving's clients.

Training and the service decode with `imaging.decode` (Pillow); this graph decoder is made to give
the same pixels (tests/app/test_parity.py checks it):
- JPEG with the accurate integer inverse DCT (libjpeg's ISLOW, Pillow's default), not TensorFlow's
  default fast one, which is off by up to 5 levels; CMYK and grayscale JPEGs agree as they are.
- PNG (8 and 16 bit, palette, alpha), GIF (first frame), BMP (24 and 32 bit) and still WebP agree.
What a graph cannot do the same way is refused with a clear error rather than decoded differently:
BMPs with a palette (TensorFlow reads their colour indices as gray levels, or fails) and animated
WebP (TensorFlow 2.21's WebP decoder corrupts memory on them: they must never reach it).
EXIF orientation is not applied: `serving_default` sees an EXIF-rotated photo as stored.

`resize` is the one resize, shared by the training data and the `resize_image` signature the
service calls. Scaling to the network's range is a layer of the network itself (see inception_v2.py).
"""

import tensorflow as tf

RESIZE_METHOD = "bilinear"
BMP_BITS_PER_PIXEL = (24, 32)


def _header(image_bytes: tf.Tensor, length: int) -> tf.Tensor:
    """The first `length` bytes, zero-padded, so short inputs can be inspected without an error."""
    return tf.strings.substr(
        tf.strings.join([tf.strings.substr(image_bytes, 0, length), b"\0" * length]), 0, length
    )


def _is_webp(header: tf.Tensor) -> tf.Tensor:
    return tf.logical_and(
        tf.equal(tf.strings.substr(header, 0, 4), b"RIFF"), tf.equal(tf.strings.substr(header, 8, 4), b"WEBP")
    )


def _is_animated_webp(header: tf.Tensor) -> tf.Tensor:
    """An extended-format WebP (VP8X chunk) with its animation flag set."""
    flags = tf.io.decode_raw(tf.strings.substr(header, 20, 1), tf.uint8)[0]
    return tf.logical_and(
        tf.logical_and(_is_webp(header), tf.equal(tf.strings.substr(header, 12, 4), b"VP8X")),
        tf.not_equal(tf.bitwise.bitwise_and(flags, 2), 0),
    )


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """Decode one encoded image to uint8 RGB [height, width, 3], as `imaging.decode` does."""
    header = _header(image_bytes, 30)
    is_bmp = tf.equal(tf.strings.substr(header, 0, 2), b"BM")
    bits_per_pixel = tf.cast(tf.io.decode_raw(tf.strings.substr(header, 28, 2), tf.uint16)[0], tf.int32)
    checks = [
        tf.debugging.Assert(
            tf.logical_not(
                tf.logical_and(is_bmp, tf.reduce_all(tf.not_equal(bits_per_pixel, BMP_BITS_PER_PIXEL)))
            ),
            ["Only BMP images of 24 or 32 bits per pixel can be decoded here; this one has", bits_per_pixel],
        ),
        tf.debugging.Assert(
            tf.logical_not(_is_animated_webp(header)),
            ["Animated WebP images cannot be decoded here"],
        ),
    ]
    with tf.control_dependencies(checks):
        image = tf.case(
            [
                (
                    tf.io.is_jpeg(image_bytes),
                    lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
                ),
                # TensorFlow decodes WebP only to its own channel count (3, or 4 with alpha).
                (_is_webp(header), lambda: tf.io.decode_webp(image_bytes)[0, :, :, :3]),
            ],
            default=lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
            exclusive=True,
        )
    image.set_shape([None, None, 3])
    return image


def resize(image: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Resize to the model's input size as float32 in [0, 255], as image_dataset_from_directory does."""
    return tf.image.resize(image, image_size, method=RESIZE_METHOD)


def decode_and_resize(image_bytes: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    return resize(decode_image(image_bytes), image_size)
