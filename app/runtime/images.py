"""Decode uploaded images with Pillow into upright RGB pixels, refusing bombs before decoding them."""

from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import ImageTooLarge, InvalidImage, UnsupportedImage

FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
FORMAT_NAMES = "JPEG, PNG, GIF, BMP or WebP"

# MAX_IMAGE_PIXELS, checked below, replaces Pillow's process-wide limit: one limit, one message.
Image.MAX_IMAGE_PIXELS = None


def decode_image(source: BinaryIO, filename: str, max_pixels: int) -> np.ndarray:
    """Decode one image to uint8 RGB [height, width, 3], turned as its EXIF orientation says.

    Grayscale, alpha, palette, CMYK and 16-bit images become RGB as TensorFlow's own decoders make
    them (alpha dropped, 16-bit samples keep their high byte), so the service and the SavedModel's
    `serving_default` see the same pixels for the same PNG.
    """
    try:
        image = Image.open(source, formats=FORMATS)  # lazy: reads the header only
    except UnidentifiedImageError:
        raise UnsupportedImage(filename, f"not a {FORMAT_NAMES} image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(filename, f"truncated or corrupt image ({exc})") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                filename, f"{width}x{height} is {width * height} pixels, over MAX_IMAGE_PIXELS ({max_pixels})"
            )
        try:
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InvalidImage(filename, f"truncated or corrupt {image.format} image ({exc})") from None


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I;16"):  # 16-bit grayscale; Pillow's own conversion would clip
        gray = (np.asarray(image) >> 8).astype(np.uint8)
        return np.repeat(gray[..., np.newaxis], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)
