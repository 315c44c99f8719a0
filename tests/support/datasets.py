"""Folders of labelled images, one sub-folder per class, as training reads them."""

from pathlib import Path

import numpy as np
from PIL import Image

from training.demo_data import draw_shape, paint


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


def draw_plain_shape(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A demo shape in light ink on a dark noisy grey: unlike the demo's random colours, which a
    network from scratch can tell its few images apart by, only the shape separates the classes."""
    pixels = np.clip(rng.normal(50, 20, (size, size, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    image = Image.fromarray(pixels)
    radius = rng.uniform(0.25, 0.4) * size
    centre = rng.uniform(radius, size - radius, 2)
    paint(image, kind, (centre[0], centre[1]), radius, (int(rng.integers(170, 256)),) * 3, rng)
    return image
