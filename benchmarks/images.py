"""The request images: the small shapes JPEG the figures have always used, and a large photo-like one."""

import io
from pathlib import Path

import numpy as np
from PIL import Image


def make_request_image(path: Path, target_kib: float = 22) -> Path:
    """A shapes JPEG of about `target_kib` KiB, the size the issue's comparison used."""
    from training.demo_data import draw_shape

    image = draw_shape("star", 224, np.random.default_rng(0))
    for quality in range(95, 10, -5):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        if buffer.tell() <= target_kib * 1024:
            break
    path.write_bytes(buffer.getvalue())
    Image.open(path).verify()
    return path


def photo_jpeg(width: int = 4000, height: int = 3000, quality: int = 90, seed: int = 0) -> bytes:
    """A photo-like JPEG: smooth colour regions and gradients with sensor-like noise (12 MP: ~3 MB).

    Made at 1/8 size and upscaled, so it compresses as photos do, not as pure noise would.
    """
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 64 + 1, width // 64 + 1, 3), dtype=np.uint8)
    base = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    y, x = np.mgrid[0:height, 0:width]
    shading = ((x + y) * 64 // (width + height)).astype(np.int16)[..., np.newaxis]
    grain = rng.integers(-5, 6, (height, width, 1), dtype=np.int16)
    pixels = np.clip(np.asarray(base, np.int16) + shading + grain - 32, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def make_large_image(path: Path, width: int = 4000, height: int = 3000) -> Path:
    """A phone-photo-sized JPEG, the same as `python -m benchmarks.decode_cost` times (12 MP: ~2.4 MB)."""
    path.write_bytes(photo_jpeg(width, height))
    return path
