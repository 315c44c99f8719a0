"""A synthetic labelled dataset of shapes, made in seconds and the same for the same seed.

Five classes (circle, cross, square, star, triangle), each shape drawn with a random colour,
size, position and rotation over a noisy random background, saved as JPEG into one folder per
class: the layout `python -m training train --data-dir` reads.
"""

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "cross", "square", "star", "triangle")


def _polygon(kind: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape centred at (cx, cy), turned by `angle` radians."""
    if kind == "square":
        points = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
        scale = radius / math.sqrt(2)
        points = [(x * scale, y * scale) for x, y in points]
    elif kind == "triangle":
        points = [(radius * math.cos(a), radius * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 4)[:3]]
    elif kind == "star":
        points = [
            (
                (radius if i % 2 == 0 else radius * 0.4) * math.cos(i * math.pi / 5),
                (radius if i % 2 == 0 else radius * 0.4) * math.sin(i * math.pi / 5),
            )
            for i in range(10)
        ]
    elif kind == "cross":
        a, b = radius, radius * 0.33
        points = [
            (b, a),
            (-b, a),
            (-b, b),
            (-a, b),
            (-a, -b),
            (-b, -b),
            (-b, -a),
            (b, -a),
            (b, -b),
            (a, -b),
            (a, b),
            (b, b),
        ]
    else:
        raise ValueError(f"Unknown shape. Received: kind={kind!r}")
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One `size` x `size` RGB image of `kind` on a noisy background."""
    background = rng.integers(0, 256, 3)
    noise = rng.normal(0, 25, (size, size, 3))
    pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    # Keep the shape's colour away from the background's so every image is learnable.
    colour = (background + rng.integers(80, 176, 3)) % 256
    radius = rng.uniform(0.2, 0.4) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    paint(image, kind, (cx, cy), radius, tuple(int(c) for c in colour), rng)
    return image


def paint(
    image: Image.Image,
    kind: str,
    centre: tuple[float, float],
    radius: float,
    fill: tuple[int, ...],
    rng: np.random.Generator,
) -> None:
    """Draw a `kind` filled with `fill` onto `image`, turned at random unless it is a circle."""
    cx, cy = centre
    draw = ImageDraw.Draw(image)
    if kind == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    else:
        draw.polygon(_polygon(kind, cx, cy, radius, rng.uniform(0, 2 * math.pi)), fill=fill)


def write_dataset(
    out: str | Path,
    classes: tuple[str, ...],
    draw: Callable[[str, int, np.random.Generator], Image.Image],
    images_per_class: int,
    size: int,
    seed: int,
) -> Path:
    """Write `images_per_class` JPEGs drawn by `draw(class, size, rng)` into `out/<class>/`; return `out`."""
    if images_per_class < 1:
        raise ValueError(
            f"images_per_class must be at least 1. Received: images_per_class={images_per_class}"
        )
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels. Received: size={size}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            draw(name, size, rng).save(folder / f"{name}_{i:05d}.jpg", quality=90)
    return out


def make_demo_data(out: str | Path, images_per_class: int = 500, size: int = 80, seed: int = 0) -> Path:
    """Write `images_per_class` JPEGs per shape into `out/<shape>/`; return `out`."""
    return write_dataset(out, CLASSES, draw_shape, images_per_class, size, seed)
