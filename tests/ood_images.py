"""Images unlike any training set of shapes, made on the spot: what a "not sure" must catch.

Each kind is a function of (side, rng) -> RGB image. `FAR` kinds share nothing with the demo's
shapes on a noisy background; `other shapes` is near: the same style of drawing, shapes it never saw.
"""

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

Kind = Callable[[int, np.random.Generator], Image.Image]


def noise(side: int, rng: np.random.Generator) -> Image.Image:
    """Every pixel drawn at random: a broken camera, a corrupt upload."""
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def flat(side: int, rng: np.random.Generator) -> Image.Image:
    """One colour: a lens cap, a blank scan."""
    return Image.new("RGB", (side, side), tuple(int(c) for c in rng.integers(0, 256, 3)))


def texture(side: int, rng: np.random.Generator) -> Image.Image:
    """Random gratings and a checkerboard mixed, in two colours: fabric, tiles, bark."""
    y, x = np.mgrid[0:side, 0:side] / side
    field = np.zeros((side, side))
    for _ in range(3):
        angle, frequency = rng.uniform(0, math.pi), rng.uniform(2, 12)
        field += np.sin(
            2 * math.pi * frequency * (x * math.cos(angle) + y * math.sin(angle)) + rng.uniform(0, 6)
        )
    cells = rng.integers(2, 9)
    field += 1.5 * (((x * cells).astype(int) + (y * cells).astype(int)) % 2)
    weight = (field - field.min()) / (np.ptp(field) or 1)
    low, high = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    pixels = low + weight[..., None] * (high - low)
    return Image.fromarray(pixels.astype(np.uint8))


def photo(side: int, rng: np.random.Generator) -> Image.Image:
    """A landscape drawn by numbers: a sky gradient, a ridge of hills, textured ground, a sun, blurred."""
    sky_top, sky_bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, side)[:, None, None]
    pixels = (sky_top + t * (sky_bottom - sky_top)) * np.ones((side, side, 3))
    ridge = side * (0.45 + 0.1 * np.cumsum(rng.normal(0, 0.15, side)) / math.sqrt(side))
    ground = np.arange(side)[:, None] > ridge[None, :]
    ground_colour = rng.integers(0, 200, 3)
    pixels[ground] = ground_colour + rng.normal(0, 18, (int(ground.sum()), 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    r, cx, cy = side * 0.08, rng.uniform(0.1, 0.9) * side, rng.uniform(0.05, 0.3) * side
    ImageDraw.Draw(image).ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 240, 200))
    return image.filter(ImageFilter.GaussianBlur(side / 64))


def text(side: int, rng: np.random.Generator) -> Image.Image:
    """Lines of letters, dark on light or light on dark: a receipt, a sign, a screenshot."""
    small = max(16, side // 2)
    background = int(rng.integers(180, 256)) if rng.random() < 0.5 else int(rng.integers(0, 60))
    ink = 255 - background
    image = Image.new("L", (small, small), background)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "))
    for row in range(0, small, 11):
        draw.text((1, row), "".join(rng.choice(letters, 12)), fill=ink, font=font)
    return image.resize((side, side), Image.Resampling.BILINEAR).convert("RGB")


def other_shapes(side: int, rng: np.random.Generator) -> Image.Image:
    """Shapes in the demo's style (a colour over a noisy background) that it has no class for:
    rings, crescents and thick lines."""
    background = rng.integers(0, 256, 3)
    pixels = np.clip(background + rng.normal(0, 25, (side, side, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    fill = tuple(int(c) for c in (background + rng.integers(80, 176, 3)) % 256)
    r = rng.uniform(0.25, 0.4) * side
    cx, cy = rng.uniform(r, side - r, 2)
    shape = rng.integers(3)
    if shape == 0:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(1, int(r / 3)))
    elif shape == 1:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        offset = r * 0.6
        draw.ellipse(
            [cx - r + offset, cy - r, cx + r + offset, cy + r], fill=tuple(int(c) for c in background)
        )
    else:
        angle = rng.uniform(0, math.pi)
        dx, dy = r * math.cos(angle), r * math.sin(angle)
        draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=fill, width=max(2, int(side / 10)))
    return image


FAR: dict[str, Kind] = {"noise": noise, "flat colour": flat, "texture": texture, "photo": photo, "text": text}
NEAR: dict[str, Kind] = {"other shapes": other_shapes}


def images(kind: Kind, count: int, side: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [kind(side, rng) for _ in range(count)]
