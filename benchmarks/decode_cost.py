"""Decode cost per image against the model's: where the time for one large JPEG goes.

One photo-like JPEG through the service's own steps, each timed on its own (median of `repeats`):
decode at full size, decode at reduced DCT scale (what versions with `input.jpeg_scaling: dct`
do, `imaging.decode` with the model's input size), the SavedModel's `resize_image` from each,
and its `predict_pixels` per image at batch 1 and at `batch_size`.

    python -m benchmarks.decode_cost models/inception_v2/1
"""

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from benchmarks.images import photo_jpeg
from imaging.decode import decode


def median_ms(step: Callable[[], object], repeats: int) -> float:
    step()  # the first call traces or allocates: not part of the steady cost
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure_decode_cost(
    version_dir: str | Path, image_bytes: bytes, repeats: int = 5, batch_size: int = 64
) -> dict:
    """Milliseconds per image for each step, and the image's and the drafted decode's sizes."""
    loaded = tf.saved_model.load(str(version_dir))
    resize = loaded.signatures["resize_image"]
    predict = loaded.signatures["predict_pixels"]
    full = decode(image_bytes)
    height, width = resize(image=full)["pixels"].shape[:2]
    drafted = decode(image_bytes, size=(height, width))
    pixels = np.zeros((batch_size, height, width, 3), np.float32)
    return {
        "image": {"width": full.shape[1], "height": full.shape[0], "bytes": len(image_bytes)},
        "model_input": [int(height), int(width)],
        "drafted_to": [drafted.shape[0], drafted.shape[1]],
        "decode_full_ms": median_ms(lambda: decode(image_bytes), repeats),
        "decode_drafted_ms": median_ms(lambda: decode(image_bytes, size=(height, width)), repeats),
        "resize_full_ms": median_ms(lambda: resize(image=full)["pixels"].numpy(), repeats),
        "resize_drafted_ms": median_ms(lambda: resize(image=drafted)["pixels"].numpy(), repeats),
        "model_batch1_ms": median_ms(lambda: predict(pixels=pixels[:1])["probabilities"].numpy(), repeats),
        f"model_batch{batch_size}_ms_per_image": median_ms(
            lambda: predict(pixels=pixels)["probabilities"].numpy(), repeats
        )
        / batch_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version_dir", help="a model version folder, models/<name>/<version>")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    cost = measure_decode_cost(args.version_dir, photo_jpeg(), args.repeats)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in cost.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
