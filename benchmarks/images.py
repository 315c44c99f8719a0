"""The request images: the small shapes JPEG the figures have always used, and a large photo-like one."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

# Octaves of smooth noise, coarse to fine: (cells across, amplitude out of 255). Most of the energy in
# broad shapes and a little in fine texture, as in a photograph, so it compresses like one (pure
# noise would not; a plain gradient would compress to nothing).
OCTAVES = ((4, 90), (16, 50), (64, 28), (256, 16), (1024, 9), (None, 5))


def save_jpeg_under(image: Image.Image, path: Path, max_bytes: float) -> Path:
    """The highest quality (95 down to 15, in steps of 5) whose JPEG is at most `max_bytes`."""
    for quality in range(95, 10, -5):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        if buffer.tell() <= max_bytes:
            break
    path.write_bytes(buffer.getvalue())
    Image.open(path).verify()
    return path


def make_request_image(path: Path, target_kib: float = 22) -> Path:
    """A shapes JPEG of about `target_kib` KiB, the size the issue's comparison used."""
    from training.demo_data import draw_shape

    return save_jpeg_under(draw_shape("star", 224, np.random.default_rng(0)), path, target_kib * 1024)


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth, textured RGB image, the same for the same seed."""
    rng = np.random.default_rng(seed)
    total = np.full((height, width, 3), 128, np.float32)
    for cells, amplitude in OCTAVES:
        across = cells or width
        noise = rng.integers(0, 256, (max(2, across * height // width), across, 3), dtype=np.uint8)
        smooth = Image.fromarray(noise).resize((width, height), Image.BICUBIC)
        total += (np.asarray(smooth, np.float32) - 127.5) * (amplitude / 127.5)
    return Image.fromarray(np.clip(total, 0, 255).astype(np.uint8))


def make_large_image(path: Path, width: int = 4000, height: int = 3000, seed: int = 0) -> Path:
    """A phone-photo-sized JPEG: 4000x3000 gives about 2 MB at quality 90 (at most 4 MB)."""
    return save_jpeg_under(photo_like(width, height, seed), path, 4 * 1024**2 * width * height / 12e6)
