import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.errors import ImageTooLarge, InvalidImage, UnsupportedImage
from app.runtime.images import decode_image
from tests.support.images import encode, noise

LIMIT = 10_000_000


def decode(data: bytes, max_pixels: int = LIMIT) -> np.ndarray:
    return decode_image(io.BytesIO(data), "upload", max_pixels)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` but whose pixel data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_rgb_png_decodes_to_its_exact_pixels():
    image = noise(7, 5)

    pixels = decode(encode(image))

    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, np.asarray(image))


@pytest.mark.parametrize(
    "mode, fmt, options",
    [
        ("L", "PNG", {}),
        ("LA", "PNG", {}),
        ("RGBA", "PNG", {}),
        ("P", "PNG", {}),
        ("1", "BMP", {}),
        ("RGB", "BMP", {}),
        ("P", "GIF", {}),
        ("RGB", "JPEG", {"quality": 95}),
        ("L", "JPEG", {}),
        ("CMYK", "JPEG", {}),
        ("RGB", "WEBP", {"lossless": True}),
        ("RGBA", "WEBP", {"lossless": True}),
    ],
)
def test_every_mode_and_format_becomes_rgb(mode, fmt, options):
    image = noise(12, 9).convert(mode)

    pixels = decode(encode(image, fmt, **options))

    assert pixels.shape == (9, 12, 3)
    assert pixels.dtype == np.uint8


def test_alpha_is_dropped_not_composited():
    rgba = noise(6, 4).convert("RGBA")
    rgba.putalpha(0)

    np.testing.assert_array_equal(decode(encode(rgba)), np.asarray(rgba.convert("RGB")))


def test_sixteen_bit_grayscale_keeps_the_high_byte():
    samples = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 0, 257, ..., 65535

    pixels = decode(encode(Image.fromarray(samples)))

    np.testing.assert_array_equal(pixels[..., 0], samples >> 8)
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])


def test_exif_orientation_is_applied():
    upright = noise(20, 10)  # 20 wide, 10 high
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # turned a quarter counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn a quarter clockwise to view"

    pixels = decode(encode(stored, "PNG", exif=exif))

    np.testing.assert_array_equal(pixels, np.asarray(upright))


def test_exif_orientation_of_a_jpeg_turns_it_upright():
    exif = Image.Exif()
    exif[0x0112] = 8

    assert decode(encode(noise(30, 20), "JPEG", exif=exif)).shape == (30, 20, 3)


def test_only_the_first_frame_of_an_animation_is_used():
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])

    assert tuple(decode(data)[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, world", b"%PDF-1.7\n", encode(noise(8, 8), "TIFF"), encode(noise(8, 8), "ICO")],
    ids=["empty", "text", "pdf", "tiff", "ico"],
)
def test_anything_but_the_five_formats_is_unsupported(data):
    with pytest.raises(UnsupportedImage) as caught:
        decode(data)
    assert caught.value.filename == "upload"
    assert caught.value.detail == "not a JPEG, PNG, GIF, BMP or WebP image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_a_truncated_image_is_invalid(fmt):
    data = encode(noise(64, 64), fmt)

    with pytest.raises(InvalidImage) as caught:
        decode(data[: len(data) // 2])

    assert type(caught.value) is InvalidImage
    assert caught.value.detail.startswith("truncated or corrupt")


def test_too_many_pixels_is_refused_from_the_header_alone():
    bomb = png_header_only(50_000, 50_000)  # 2.5 gigapixels: 7.5 GB decoded

    with pytest.raises(ImageTooLarge) as caught:  # a decode would have failed as truncated instead
        decode(bomb)

    assert caught.value.detail == "50000x50000 is 2500000000 pixels, over MAX_IMAGE_PIXELS (10000000)"


def test_the_pixel_limit_is_inclusive():
    data = encode(noise(10, 10))

    assert decode(data, max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(ImageTooLarge):
        decode(data, max_pixels=99)
