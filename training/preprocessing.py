"""The SavedModel's in-graph path from encoded image to model input, for TF Serving's clients.

Training and the service decode with `imaging.decode` (Pillow); this graph decoder is made to give
the same pixels (tests/app/test_parity.py checks it):
- JPEG with the accurate integer inverse DCT (libjpeg's ISLOW, Pillow's default), not TensorFlow's
  default fast one, which is off by up to 5 levels; CMYK and grayscale JPEGs agree as they are.
- JPEG at reduced DCT scale (`JPEG_SCALING`): at 1/2, 1/4 or 1/8 of its size when that still
  covers the model's input size, by the rule `imaging.decode` applies with Pillow's `draft`,
  computed here from the header (`extract_jpeg_shape`) and given to `decode_jpeg` as its `ratio`.
- PNG (8 and 16 bit, palette, alpha), GIF (first frame), BMP (24 and 32 bit) and still WebP agree.
What a graph cannot do the same way is refused with a clear error rather than decoded differently:
BMPs with a palette (TensorFlow reads their colour indices as gray levels, or fails) and animated
WebP (TensorFlow 2.21's WebP decoder corrupts memory on them: they must never reach it).
EXIF orientation is not applied: `serving_default` sees an EXIF-rotated photo as stored, and picks
the JPEG scale for the stored orientation, as `imaging.decode` does for the same file untagged
(for a non-square input size, an EXIF-rotated photo may then be decoded at another scale than the
service decodes it; for a square one the scale is the same).

`Preprocessing` is the one path from decoded pixels to model input (an optional central crop, then
the resize), shared by the training data and the `resize_image` signature the service calls; each
version records its own in metadata.json's `input`. Scaling to the network's range is a layer of the
network itself (see inception_v2.py).

TF-slim's evaluation preprocessing (`preprocess_for_eval`, which the ImageNet checkpoints were
measured with) is `SLIM_EVAL`: JPEGs decoded at full size, the central 87.5 % of each side kept,
a bilinear resize to 224 x 224 without half-pixel centres (TensorFlow 1's `resize_bilinear` with
`align_corners=False`, not TensorFlow 2's `tf.image.resize`: the two sample at positions up to half
a source pixel apart), then scaling to [-1, 1]. Slim scales first, x / 255, and maps the result
with (x - 0.5) * 2 after resizing; our network takes the resized 0..255 values and computes
x / 127.5 - 1 (its `scale_to_unit_range` layer). The crop only selects pixels and the resize is
linear, so the two orders give the same input up to float32 rounding (about 1e-7).
"""

from dataclasses import asdict, dataclass

import tensorflow as tf

RESIZE_METHOD = "bilinear"
# TensorFlow 1's `resize_bilinear(align_corners=False)`: pixel corners, not centres, as slim's
# preprocessing resized.
SLIM_RESIZE_METHOD = "bilinear_tf1"
# metadata.json's `input.jpeg_scaling`: "dct" = JPEGs decoded at the reduced DCT scale above, in
# training and serving alike; versions exported before it have none and are decoded at full size.
JPEG_SCALING = "dct"
JPEG_RATIOS = (1, 2, 4, 8)
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


def _jpeg_ratio_index(image_bytes: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Index into JPEG_RATIOS of the largest ratio keeping both stored sides at least `image_size`."""
    shape = tf.io.extract_jpeg_shape(image_bytes)
    scale = tf.minimum(shape[0] // image_size[0], shape[1] // image_size[1])
    return tf.reduce_sum(tf.cast(scale >= JPEG_RATIOS[1:], tf.int32))


def _decode_jpeg(image_bytes: tf.Tensor, image_size: tuple[int, int] | None) -> tf.Tensor:
    """A JPEG decoded as `imaging.decode` does with `size`; `ratio` is an attribute: one branch each."""
    if image_size is None:
        return tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE")
    return tf.switch_case(
        _jpeg_ratio_index(image_bytes, image_size),
        [
            lambda ratio=ratio: tf.io.decode_jpeg(
                image_bytes, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE"
            )
            for ratio in JPEG_RATIOS
        ],
    )


def decode_image(image_bytes: tf.Tensor, image_size: tuple[int, int] | None) -> tf.Tensor:
    """Decode one encoded image to uint8 RGB [height, width, 3], as `imaging.decode` does with `size`
    (None: JPEGs at full size)."""
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
                (tf.io.is_jpeg(image_bytes), lambda: _decode_jpeg(image_bytes, image_size)),
                # TensorFlow decodes WebP only to its own channel count (3, or 4 with alpha).
                (_is_webp(header), lambda: tf.io.decode_webp(image_bytes)[0, :, :, :3]),
            ],
            default=lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
            exclusive=True,
        )
    image.set_shape([None, None, 3])
    return image


@dataclass(frozen=True)
class Preprocessing:
    """Decoded uint8 pixels -> model input: metadata.json's `input.central_crop`, `resize`, `jpeg_scaling`."""

    # The fraction of each side kept around the centre (tf.image.central_crop's), or None: no crop.
    central_crop: float | None = None
    resize: str = RESIZE_METHOD
    jpeg_scaling: str = JPEG_SCALING

    def __post_init__(self) -> None:
        if self.central_crop is not None and not 0 < self.central_crop <= 1:
            raise ValueError(f"central_crop must be in (0, 1]. Received: central_crop={self.central_crop}")
        if self.resize not in (RESIZE_METHOD, SLIM_RESIZE_METHOD):
            raise ValueError(
                f"resize must be {RESIZE_METHOD!r} or {SLIM_RESIZE_METHOD!r}. Received: {self.resize!r}"
            )
        if self.jpeg_scaling not in ("dct", "full"):
            raise ValueError(f"jpeg_scaling must be 'dct' or 'full'. Received: {self.jpeg_scaling!r}")

    def __call__(self, image: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
        """uint8 [height, width, 3] -> float32 [*image_size, 3] in [0, 255]."""
        if self.central_crop is not None:
            image = tf.image.central_crop(image, self.central_crop)
        if self.resize == SLIM_RESIZE_METHOD:
            return tf.compat.v1.image.resize_bilinear(image[tf.newaxis], image_size, align_corners=False)[0]
        # As image_dataset_from_directory resizes.
        return tf.image.resize(image, image_size, method=RESIZE_METHOD)

    def decode_size(self, image_size: tuple[int, int]) -> tuple[int, int] | None:
        """The size JPEGs are decoded for (see `decode_image`); None: at full size."""
        return image_size if self.jpeg_scaling == JPEG_SCALING else None

    def metadata(self) -> dict[str, float | str | None]:
        return asdict(self)


# What training and the exporter use unless told otherwise.
DEFAULT = Preprocessing()
SLIM_EVAL = Preprocessing(central_crop=0.875, resize=SLIM_RESIZE_METHOD, jpeg_scaling="full")


def resize(image: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Resize to the model's input size as float32 in [0, 255], as image_dataset_from_directory does."""
    return DEFAULT(image, image_size)


def decode_and_resize(
    image_bytes: tf.Tensor, image_size: tuple[int, int], preprocessing: Preprocessing = DEFAULT
) -> tf.Tensor:
    return preprocessing(decode_image(image_bytes, preprocessing.decode_size(image_size)), image_size)
