"""A harder synthetic dataset: handwritten-looking digits drawn as strokes over varied backgrounds.

The demo shapes (demo_data.py) are solid, high-contrast and centred: nearly any setting learns them.
Real small datasets are harder, and the defaults are chosen on this one instead
(docs/training.md). Each image is one of ten digit glyphs, drawn as pen strokes whose control
points are jittered, then slanted, rotated, scaled and moved, with a random pen width and colour,
over one of four backgrounds (flat with noise, a gradient, blotches, stripes) and a few stray
strokes that belong to no digit. The same seed writes the same images.
"""

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from training.demo_data import write_dataset

# Each digit as strokes of (x, y) control points in a unit box, y downwards, as a pen would draw it.
_ARC = [(0.5 + 0.32 * math.sin(a), 0.5 - 0.42 * math.cos(a)) for a in np.linspace(0, 2 * math.pi, 17)]
GLYPHS: dict[str, list[list[tuple[float, float]]]] = {
    "zero": [_ARC],
    "one": [[(0.35, 0.25), (0.55, 0.08), (0.55, 0.92)], [(0.35, 0.92), (0.75, 0.92)]],
    "two": [[(0.2, 0.28), (0.35, 0.1), (0.65, 0.1), (0.8, 0.3), (0.7, 0.5), (0.2, 0.9), (0.82, 0.9)]],
    "three": [
        [(0.2, 0.15), (0.5, 0.08), (0.78, 0.22), (0.7, 0.42), (0.42, 0.48)],
        [(0.42, 0.48), (0.75, 0.58), (0.8, 0.78), (0.5, 0.93), (0.18, 0.85)],
    ],
    "four": [[(0.65, 0.92), (0.65, 0.08), (0.15, 0.65), (0.85, 0.65)]],
    "five": [[(0.78, 0.1), (0.28, 0.1), (0.24, 0.45), (0.6, 0.42), (0.8, 0.62), (0.7, 0.88), (0.2, 0.88)]],
    "six": [
        [(0.72, 0.1), (0.4, 0.25), (0.22, 0.6), (0.3, 0.85), (0.55, 0.92), (0.78, 0.75)],
        [(0.78, 0.75), (0.7, 0.52), (0.45, 0.48), (0.24, 0.6)],
    ],
    "seven": [[(0.18, 0.1), (0.82, 0.1), (0.5, 0.5), (0.38, 0.92)], [(0.35, 0.5), (0.7, 0.5)]],
    "eight": [
        [(0.5, 0.48), (0.25, 0.3), (0.35, 0.1), (0.65, 0.1), (0.75, 0.3), (0.5, 0.48)],
        [(0.5, 0.48), (0.2, 0.7), (0.35, 0.92), (0.65, 0.92), (0.8, 0.7), (0.5, 0.48)],
    ],
    "nine": [
        [(0.75, 0.38), (0.55, 0.5), (0.3, 0.42), (0.28, 0.2), (0.5, 0.08), (0.75, 0.2), (0.75, 0.38)],
        [(0.75, 0.38), (0.7, 0.7), (0.45, 0.92)],
    ],
}
CLASSES = tuple(GLYPHS)


def _background(size: int, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """One of four backgrounds, and its mean colour (for picking a pen that stands out)."""
    base = rng.integers(0, 256, 3).astype(np.float64)
    kind = rng.integers(4)
    if kind == 0:  # flat, noisy
        pixels = base + rng.normal(0, 20, (size, size, 3))
    elif kind == 1:  # a linear gradient between two colours, at any angle
        other = rng.integers(0, 256, 3)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:size, 0:size] / size
        t = np.clip(0.5 + (xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle), 0, 1)[..., None]
        pixels = base * (1 - t) + other * t + rng.normal(0, 8, (size, size, 3))
    elif kind == 2:  # soft blotches
        image = Image.new("RGB", (size, size), tuple(int(c) for c in base))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(3, 8)):
            x, y = rng.uniform(0, size, 2)
            r = rng.uniform(0.1, 0.35) * size
            shade = np.clip(base + rng.normal(0, 45, 3), 0, 255)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in shade))
        pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(size / 16)), dtype=np.float64)
    else:  # stripes, like ruled paper or fabric
        ys, xs = np.mgrid[0:size, 0:size]
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(0.08, 0.25) * size
        wave = np.sin(2 * math.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)[..., None]
        pixels = base + 30 * wave * rng.uniform(0.5, 1.0, 3) + rng.normal(0, 8, (size, size, 3))
    pixels = np.clip(pixels, 0, 255)
    return Image.fromarray(pixels.astype(np.uint8)), pixels.reshape(-1, 3).mean(axis=0)


def _pen_colour(background: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A colour far enough from the background's mean to be read."""
    while True:
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - background).sum() > 200:
            return tuple(int(c) for c in colour)


def draw_digit(name: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One `size` x `size` RGB image of the digit `name` written over a random background."""
    image, mean = _background(size, rng)
    draw = ImageDraw.Draw(image)
    # Stray strokes first, in the background's own tones, so the digit is drawn over them.
    for _ in range(rng.integers(0, 4)):
        ends = rng.uniform(0, size, (2, 2))
        shade = tuple(int(c) for c in np.clip(mean + rng.normal(0, 60, 3), 0, 255))
        draw.line([tuple(p) for p in ends], fill=shade, width=int(rng.integers(1, max(2, size // 24))))

    scale = rng.uniform(0.55, 0.8) * size
    angle = rng.uniform(-0.3, 0.3)
    slant = rng.uniform(-0.3, 0.3)
    centre = size / 2 + rng.uniform(-0.12, 0.12, 2) * size
    cos, sin = math.cos(angle), math.sin(angle)
    pen = _pen_colour(mean, rng)
    width = max(1, int(round(rng.uniform(0.05, 0.1) * size)))
    for stroke in GLYPHS[name]:
        points = np.asarray(stroke) - 0.5 + rng.normal(0, 0.03, (len(stroke), 2))
        points[:, 0] += slant * -points[:, 1]
        xs = (points[:, 0] * cos - points[:, 1] * sin) * scale * 0.75 + centre[0]
        ys = (points[:, 0] * sin + points[:, 1] * cos) * scale + centre[1]
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=pen, width=width, joint="curve")
    return image


def make_stroke_data(
    out: str | Path,
    images_per_class: int = 300,
    size: int = 80,
    seed: int = 0,
    classes: tuple[str, ...] = CLASSES,
) -> Path:
    """Write `images_per_class` JPEGs of each of `classes` into `out/<digit>/`; return `out`."""
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        raise ValueError(f"classes must be among {list(CLASSES)}. Received: {unknown}")
    return write_dataset(out, classes, draw_digit, images_per_class, size, seed)
