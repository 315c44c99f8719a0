"""Encoded image (bytes, file or path) -> uint8 RGB pixels, the same way for training and serving.

Every path that turns a file into model input goes through `decode`: the training reader, the
evaluation command and the service's upload decoding. The SavedModel's in-graph decoder
(`training/preprocessing.py`, for TF Serving) is made to agree with it: tests/app/test_parity.py.

Steps, in order, each in one place so that it reaches every path at once:
open (header only) -> check the pixel count -> draft (JPEG, when given the model's input size)
-> load -> turn upright (EXIF) -> convert to RGB.

Drafting: a 12-megapixel JPEG bound for a 64x64 model need not be decoded at full size. libjpeg
can decode in the DCT domain at 1/2, 1/4 or 1/8 scale (Pillow's `draft`), several times faster.
The scale is the greatest reduction that keeps both stored sides at least the input size:
s = the largest of 8, 4, 2, 1 not above min(stored width // width, stored height // height); the
result is ceil(stored / s) on each side. `training/preprocessing.py` decodes in the graph with the
same rule (`decode_jpeg(ratio=s)`), so the SavedModel's `serving_default` sees the same pixels.
"""

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
FORMAT_NAMES = "JPEG, PNG, GIF, BMP or WebP"
EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")

EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # stored sideways: upright width is the stored height

# `max_pixels`, checked below, replaces Pillow's process-wide limit: one limit, one message.
Image.MAX_IMAGE_PIXELS = None
# The service's MAX_IMAGE_PIXELS unless set, and the cap the SavedModel's own decoder is exported with.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


class ImageError(ValueError):
    """An input that cannot be decoded; `detail` says why, without naming the file."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnsupportedFormat(ImageError):
    """Not an image, or not in one of FORMATS."""


class CorruptImage(ImageError):
    """A supported format, but truncated or corrupt."""


class TooManyPixels(ImageError):
    """Width x height over the caller's limit, found from the header before decoding."""


def decode(
    source: bytes | BinaryIO | str | Path,
    max_pixels: int | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode one image to uint8 RGB [height, width, 3], turned as its EXIF orientation says.

    With `size`, the (height, width) the pixels will be resized to, a JPEG is decoded at the
    greatest DCT reduction that keeps it at least that size once upright (see the module docstring);
    other formats decode at full size.

    GIF and animated WebP give their first frame. Grayscale, palette and CMYK become RGB; alpha is
    dropped, not composited; 16-bit samples keep their high byte: as TensorFlow's decoders do, so
    that the SavedModel's `serving_default` sees the same pixels.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(source)
    try:
        image = Image.open(source, formats=FORMATS)  # lazy: reads the header only
    except UnidentifiedImageError:
        raise UnsupportedFormat(f"not a {FORMAT_NAMES} image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImage(f"truncated or corrupt image ({exc})") from None
    with image:
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise TooManyPixels(
                f"{width}x{height} is {width * height} pixels, over MAX_IMAGE_PIXELS ({max_pixels})"
            )
        try:
            if size is not None and image.format == "JPEG":
                _draft(image, size)
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise CorruptImage(f"truncated or corrupt {image.format} image ({exc})") from None


def _draft(image: Image.Image, size: tuple[int, int]) -> None:
    """Make libjpeg decode at the greatest reduction (1/1, 1/2, 1/4, 1/8) still covering `size` (h, w).

    Pillow's `draft` applies the rule in the module docstring to the stored orientation; a photo
    stored sideways is asked for the transposed size, so that it is at least `size` once upright.
    """
    height, width = size
    if image.getexif().get(EXIF_ORIENTATION) in TRANSPOSING_ORIENTATIONS:
        height, width = width, height
    image.draft("RGB", (width, height))


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I;16"):  # 16-bit grayscale; Pillow's own conversion would clip
        gray = (np.asarray(image) >> 8).astype(np.uint8)
        return np.repeat(gray[..., np.newaxis], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)
