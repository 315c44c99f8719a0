"""The SavedModel's in-graph path from encoded image to model input, for TF Serving's clients.

Training and the service decode with `imaging.decode` (Pillow); this graph decoder is made to give
the same pixels (tests/app/test_parity.py checks it):
- JPEG with the accurate integer inverse DCT (libjpeg's ISLOW, Pillow's default), not TensorFlow's
  default fast one, which is off by up to 5 levels; CMYK and grayscale JPEGs agree as they are.
- JPEG at reduced DCT scale (`JPEG_SCALING`): at 1/2, 1/4 or 1/8 of its size when that still
  covers the model's input size, by the rule `imaging.decode` applies with Pillow's `draft`,
  computed here from the header (`extract_jpeg_shape`) and given to `decode_jpeg` as its `ratio`.
- PNG (8 and 16 bit, palette, alpha), GIF (first frame), BMP (24 and 32 bit) and still WebP agree.
- Limits as the service's: width x height read from the header and refused over a cap before any
  decoding (`imaging.decode`'s default MAX_IMAGE_PIXELS, fixed at export), and of a GIF only the
  first frame decoded (TensorFlow's GIF decoder decodes every frame: the bytes are cut after the
  first image before it sees them).
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

from imaging.decode import DEFAULT_MAX_IMAGE_PIXELS

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


def _unsigned(header: tf.Tensor, offset: int, length: int, *, big_endian: bool = False) -> tf.Tensor:
    """The unsigned integer in `length` bytes of the header from `offset`, as int64."""
    values = tf.cast(tf.io.decode_raw(tf.strings.substr(header, offset, length), tf.uint8), tf.int64)
    shifts = [8 * (length - 1 - i) if big_endian else 8 * i for i in range(length)]
    return tf.reduce_sum(tf.bitwise.left_shift(values, tf.constant(shifts, tf.int64)))


def _signed32(header: tf.Tensor, offset: int) -> tf.Tensor:
    return tf.cast(tf.io.decode_raw(tf.strings.substr(header, offset, 4), tf.int32)[0], tf.int64)


def image_dimensions(image_bytes: tf.Tensor, header: tf.Tensor) -> tf.Tensor:
    """[height, width] (int64) from the header, before any decoding, as Pillow reads them; [0, 0] for
    what is none of the formats (its decoding fails). `header` is `_header(image_bytes, 30)`."""

    def pair(height: tf.Tensor, width: tf.Tensor):
        return lambda: tf.stack([height, width])

    def jpeg():
        return tf.io.extract_jpeg_shape(image_bytes, output_type=tf.int64)[:2]

    def bmp():  # the 12-byte OS/2 header has 16-bit sides; the others signed 32-bit (negative: top-down)
        core = tf.equal(_unsigned(header, 14, 4), 12)
        return tf.where(
            core,
            tf.stack([_unsigned(header, 20, 2), _unsigned(header, 18, 2)]),
            tf.abs(tf.stack([_signed32(header, 22), _signed32(header, 18)])),
        )

    webp_chunk = tf.strings.substr(header, 12, 4)
    lossless = _unsigned(header, 21, 4)  # VP8L: 14 bits each of width - 1 and height - 1
    return tf.case(
        [
            (tf.io.is_jpeg(image_bytes), jpeg),
            (
                tf.equal(tf.strings.substr(header, 0, 8), b"\x89PNG\r\n\x1a\n"),
                pair(_unsigned(header, 20, 4, big_endian=True), _unsigned(header, 16, 4, big_endian=True)),
            ),
            (_is_gif(header), pair(_unsigned(header, 8, 2), _unsigned(header, 6, 2))),
            (tf.equal(tf.strings.substr(header, 0, 2), b"BM"), bmp),
            (
                tf.logical_and(_is_webp(header), tf.equal(webp_chunk, b"VP8 ")),
                pair(
                    tf.bitwise.bitwise_and(_unsigned(header, 28, 2), 0x3FFF),
                    tf.bitwise.bitwise_and(_unsigned(header, 26, 2), 0x3FFF),
                ),
            ),
            (
                tf.logical_and(_is_webp(header), tf.equal(webp_chunk, b"VP8L")),
                pair(
                    tf.bitwise.bitwise_and(tf.bitwise.right_shift(lossless, 14), 0x3FFF) + 1,
                    tf.bitwise.bitwise_and(lossless, 0x3FFF) + 1,
                ),
            ),
            (
                tf.logical_and(_is_webp(header), tf.equal(webp_chunk, b"VP8X")),
                pair(_unsigned(header, 27, 3) + 1, _unsigned(header, 24, 3) + 1),
            ),
        ],
        default=pair(tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
    )


def _is_gif(header: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(header, 0, 4), b"GIF8")


def _after_sub_blocks(data: tf.Tensor, position: tf.Tensor) -> tf.Tensor:
    """The position after a chain of GIF data sub-blocks (length byte, bytes; a zero length ends it)."""
    end = tf.size(data)

    def more(p):
        return tf.logical_and(p < end, tf.not_equal(tf.gather(data, tf.minimum(p, end - 1)), 0))

    return tf.while_loop(more, lambda p: [p + tf.gather(data, p) + 1], [position])[0] + 1


def _color_table_size(flags: tf.Tensor) -> tf.Tensor:
    """The bytes of the colour table a GIF's packed flags announce (none without their top bit)."""
    present = tf.cast(tf.bitwise.bitwise_and(flags, 0x80) > 0, tf.int32)
    return present * 3 * tf.bitwise.left_shift(2, tf.bitwise.bitwise_and(flags, 7))


def first_gif_frame(image_bytes: tf.Tensor) -> tf.Tensor:
    """The GIF cut after its first image, with its trailer: TensorFlow's decoder decodes every frame
    before one is kept, Pillow only the first. Bytes it cannot follow are returned as they are."""
    data = tf.cast(tf.io.decode_raw(image_bytes, tf.uint8), tf.int32)
    end = tf.size(data)

    def at(p):
        return tf.gather(data, tf.clip_by_value(p, 0, end - 1))

    position = 13 + _color_table_size(at(10))  # header, logical screen descriptor, global colours
    # Extensions (0x21, label, sub-blocks) until the first image descriptor (0x2C).
    position = tf.while_loop(
        lambda p: tf.logical_and(p < end, tf.equal(at(p), 0x21)),
        lambda p: [_after_sub_blocks(data, p + 2)],
        [position],
    )[0]
    is_image = tf.logical_and(position < end, tf.equal(at(position), 0x2C))
    # Descriptor (10 bytes), local colours, LZW code size (1 byte), then the image's sub-blocks.
    image_end = _after_sub_blocks(data, position + 10 + _color_table_size(at(position + 9)) + 1)
    return tf.cond(
        tf.logical_and(is_image, image_end <= end),
        lambda: tf.strings.join([tf.strings.substr(image_bytes, 0, image_end), b";"]),
        lambda: image_bytes,
    )


def decode_image(
    image_bytes: tf.Tensor, image_size: tuple[int, int] | None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> tf.Tensor:
    """Decode one encoded image to uint8 RGB [height, width, 3], as `imaging.decode` does with `size`
    (None: JPEGs at full size); refused, undecoded, when its header gives more than `max_pixels`."""
    header = _header(image_bytes, 30)
    is_bmp = tf.equal(tf.strings.substr(header, 0, 2), b"BM")
    bits_per_pixel = tf.cast(tf.io.decode_raw(tf.strings.substr(header, 28, 2), tf.uint16)[0], tf.int32)
    height, width = tf.unstack(image_dimensions(image_bytes, header))
    checks = [
        tf.debugging.Assert(
            height * width <= max_pixels,
            [
                tf.strings.format(
                    "{}x{} is {} pixels, over the {} this model decodes",
                    (width, height, height * width, max_pixels),
                )
            ],
        ),
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
                (_is_gif(header), lambda: tf.io.decode_gif(first_gif_frame(image_bytes))[0]),
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
