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


def decode_image(source: BinaryIO, filename: str, max_pixels: int) -> np.ndarray:
    """Upright uint8 RGB [height, width, 3], the pixels training sees for the same file.

    Raises `UnsupportedImage`, `ImageTooLarge` (from the header, before decoding) or `InvalidImage`.
    """
    try:
        return decode(source, max_pixels)
    except ImageError as error:
        raise ERRORS[type(error)](filename, error.detail) from None
