"""A corpus of encoded images covering every case the decoders must agree on, made on the spot.

Photo-like content (smooth gradients, edges and noise) so that JPEG's inverse DCT and chroma
upsampling, where TensorFlow and Pillow could differ, are exercised at every pixel.

Large JPEGs are decoded at reduced DCT scale for a model's input size; `scale-<s>-*.jpg` files are
sized so that, for an input of INPUT_SIDE x INPUT_SIDE, they decode at 1/s (odd sizes, one just too
small for 1/2, and one of 3 megapixels), and `exif-6-large.jpg` is `large-420.jpg` stored sideways.
"""

import io

import numpy as np
from PIL import Image

INPUT_SIDE = 32  # the input size the `scale-<s>-*.jpg` files are made for (tests/conftest.py's)
EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that turns the stored pixels upright (Pillow's exif_transpose).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def photo(width: int = 75, height: int = 53, seed: int = 0) -> Image.Image:
    """An RGB image with gradients, a sharp-edged disc and noise; odd sizes, as real photos have."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    pixels = np.stack([x * 255 / width, y * 255 / height, 255 - (x + y) * 127 / (width + height)], axis=-1)
    disc = (x - width * 0.6) ** 2 + (y - height * 0.4) ** 2 < (min(width, height) * 0.3) ** 2
    pixels[disc] = (230, 40, 90)
    pixels += rng.normal(0, 25, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return exif


def sixteen_bit_gray(image: Image.Image) -> Image.Image:
    """16-bit samples whose low byte is noise, so keeping the high byte (not rounding) is checked."""
    high = np.asarray(image.convert("L")).astype(np.uint16) << 8
    low = np.random.default_rng(1).integers(0, 256, high.shape, dtype=np.uint16)
    return Image.fromarray(high | low)


def scaled_jpegs() -> dict[str, bytes]:
    """JPEGs that decode at 1/s for an INPUT_SIDE input: both sides at least s x INPUT_SIDE, one under 2s."""
    side = INPUT_SIDE
    return {
        "scale-1-just-too-small.jpg": encode(photo(4 * side - 1, 2 * side - 1, seed=3), "JPEG", quality=90),
        "scale-2-420.jpg": encode(photo(3 * side + 1, 2 * side + 7, seed=4), "JPEG", quality=90),
        "scale-2-422.jpg": encode(
            photo(2 * side + 5, 3 * side + 3, seed=5), "JPEG", quality=75, subsampling=1
        ),
        "scale-4-444.jpg": encode(
            photo(5 * side + 1, 4 * side + 11, seed=6), "JPEG", quality=90, subsampling=0
        ),
        "scale-4-cmyk.jpg": encode(photo(4 * side + 3, 7 * side, seed=7).convert("CMYK"), "JPEG", quality=90),
        "scale-8-progressive.jpg": encode(
            photo(9 * side + 13, 8 * side + 7, seed=8), "JPEG", quality=85, progressive=True
        ),
        "scale-8-grayscale.jpg": encode(
            photo(8 * side + 1, 11 * side, seed=9).convert("L"), "JPEG", quality=90
        ),
        # Upscaled: smoother, as photos are, and quick to make.
        "scale-8-3mp.jpg": encode(
            photo(667, 501, seed=10).resize((2001, 1501), Image.Resampling.BICUBIC), "JPEG", quality=85
        ),
    }


def dct_scale(name: str) -> int:
    """The DCT scale a `scale-<s>-*.jpg` file decodes at for an INPUT_SIDE input, from its name."""
    return int(name.split("-")[1])


def corpus() -> dict[str, bytes]:
    """Every case, by a name that says what it is: `name.ext`."""
    image = photo()
    large = photo(641, 479, seed=2)
    palette = image.convert("P")
    transparent = image.convert("RGBA")
    transparent.putalpha(Image.fromarray(np.asarray(image)[..., 0]))
    frames = [image, photo(seed=1)]
    return {
        "baseline-420.jpg": encode(image, "JPEG", quality=90),
        "baseline-444.jpg": encode(image, "JPEG", quality=90, subsampling=0),
        "baseline-422.jpg": encode(image, "JPEG", quality=75, subsampling=1),
        "progressive.jpg": encode(image, "JPEG", quality=85, progressive=True),
        "cmyk.jpg": encode(image.convert("CMYK"), "JPEG", quality=90),
        "grayscale.jpg": encode(image.convert("L"), "JPEG", quality=90),
        "large-420.jpg": encode(large, "JPEG", quality=80),
        **scaled_jpegs(),
        "rgb-8bit.png": encode(image, "PNG"),
        "gray-16bit.png": encode(sixteen_bit_gray(image), "PNG"),
        "gray.png": encode(image.convert("L"), "PNG"),
        "palette.png": encode(palette, "PNG"),
        "palette-transparency.png": encode(palette, "PNG", transparency=0),
        "rgba.png": encode(transparent, "PNG"),
        "gray-alpha.png": encode(transparent.convert("LA"), "PNG"),
        "still.gif": encode(image, "GIF"),
        "animated.gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "rgb-24bit.bmp": encode(image, "BMP"),
        "rgba-32bit.bmp": encode(transparent, "BMP"),
        "lossy.webp": encode(image, "WEBP", quality=80),
        "lossless.webp": encode(image, "WEBP", lossless=True),
        "alpha.webp": encode(transparent, "WEBP", quality=80),
        **{f"exif-{o}.jpg": encode(image, "JPEG", quality=90, exif=with_orientation(o)) for o in UPRIGHT},
        "exif-6-large.jpg": encode(large, "JPEG", quality=80, exif=with_orientation(6)),
        "exif-6.png": encode(image, "PNG", exif=with_orientation(6)),
        "exif-8.webp": encode(image, "WEBP", quality=80, exif=with_orientation(8)),
    }


def refused_in_graph() -> dict[str, bytes]:
    """Files the service and training decode but the SavedModel's graph refuses, with its message."""
    image = photo()
    return {
        "palette-8bit.bmp": encode(image.convert("P"), "BMP"),
        "bilevel-1bit.bmp": encode(image.convert("1"), "BMP"),
        "animated.webp": encode(image, "WEBP", save_all=True, append_images=[photo(seed=1)], quality=80),
    }


def orientation(name: str) -> int | None:
    """The EXIF orientation a corpus file carries, from its name."""
    return int(name.split("-")[1].split(".")[0]) if name.startswith("exif-") else None


def stored_as(name: str) -> str:
    """The corpus file with the same encoded pixels as EXIF-rotated `name`, but no orientation tag."""
    if name == "exif-6-large.jpg":
        return "large-420.jpg"
    return {".jpg": "baseline-420.jpg", ".png": "rgb-8bit.png", ".webp": "lossy.webp"}[
        name[name.rindex(".") :]
    ]
