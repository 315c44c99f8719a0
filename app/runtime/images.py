"""Decode uploads with the shared decoder (`imaging.decode`), in the service's own error types."""

from typing import BinaryIO

import numpy as np

from app.errors import ImageTooLarge, InvalidImage, UnsupportedImage
from imaging.decode import CorruptImage, ImageError, TooManyPixels, UnsupportedFormat, decode

ERRORS: dict[type[ImageError], type[InvalidImage]] = {
    UnsupportedFormat: UnsupportedImage,
    TooManyPixels: ImageTooLarge,
    CorruptImage: InvalidImage,
}


def decode_image(
    source: BinaryIO, filename: str, max_pixels: int, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Upright uint8 RGB [height, width, 3], the pixels training sees for the same file.

    `size`: the model's input size when it was trained on JPEGs decoded at reduced DCT scale
    (`InputSpec.decode_size`), None for full-size decoding.

    Raises `UnsupportedImage`, `ImageTooLarge` (from the header, before decoding) or `InvalidImage`.
    """
    try:
        return decode(source, max_pixels, size)
    except ImageError as error:
        raise ERRORS[type(error)](filename, error.detail) from None
