"""Folders of labelled images, one sub-folder per class, as training reads them."""

from pathlib import Path

import numpy as np

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
