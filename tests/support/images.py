"""Test images made on the spot: noise (every one different) and solid grey levels, encoded."""

import io

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random RGB pixels: every model input different, and images that compress badly (large files)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def png(width: int = 40, height: int = 30, seed: int = 0) -> bytes:
    return encode(noise(width, height, seed))


def jpeg(width: int = 40, height: int = 30, seed: int = 0) -> bytes:
    return encode(noise(width, height, seed), "JPEG")


def solid_png(value: int, size: int = 40) -> bytes:
    """A PNG of one grey level: `hostile_model.WHITE` and `GREY` trigger that model's misbehaviour."""
    return encode(Image.new("RGB", (size, size), (value, value, value)))
