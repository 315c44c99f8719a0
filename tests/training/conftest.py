from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.demo_data import draw_shape


def write_image_folder(root: Path, classes: dict[str, int], size: int = 40, seed: int = 0) -> Path:
    """Write `count` small shape images per class into `root/<class>/`, as PNG, JPEG, GIF and BMP."""
    rng = np.random.default_rng(seed)
    formats = ["png", "jpg", "gif", "bmp"]
    for name, count in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        kind = {"a": "circle", "b": "square", "c": "triangle"}.get(name, "star")
        for i in range(count):
            image = draw_shape(kind, size, rng)
            if i % 5 == 4:
                image = image.convert("L")  # grayscale files are read as RGB
            image.save(folder / f"{name}_{i}.{formats[i % len(formats)]}")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "data", {"a": 12, "b": 12})


@pytest.fixture
def png_bytes() -> bytes:
    import io

    pixels = (np.random.default_rng(1).random((45, 37, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
