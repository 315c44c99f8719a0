"""Decode cost per image against the model's: where the time for one large JPEG goes.

One photo-like JPEG through the service's own steps, each timed on its own (median of `repeats`):
decode at full size, decode at reduced DCT scale (what versions with `input.jpeg_scaling: dct`
do, `imaging.decode` with the model's input size), the SavedModel's `resize_image` from each,
and its `predict_pixels` per image at batch 1 and at `batch_size`.

Then the decoder against libjpeg-turbo's own command-line decoder on the same file at 1/8 DCT
scale (`djpeg -scale 1/8`, Debian's libjpeg-turbo-progs): CPU milliseconds per megapixel of each,
timed in turns so that a busy moment slows both (`compare_with_djpeg`).

    python -m benchmarks.decode_cost models/inception_v2/1
"""

import argparse
import io
import json
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

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


def djpeg_cpu_seconds(path: Path) -> float:
    """CPU seconds of one `djpeg -scale 1/8` of `path`, its output thrown away."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["djpeg", "-scale", "1/8", "-outfile", "/dev/null", str(path)], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compare_with_djpeg(image_bytes: bytes, repeats: int = 9) -> dict:
    """The service's decoder at 1/8 DCT scale against `djpeg -scale 1/8` on the same JPEG.

    Both in CPU time (the decoder's thread's, djpeg's process's), alternating, median of `repeats`.
    djpeg's figure is less what it spends on a 16x16 JPEG, also timed in turn: starting a process
    and writing nothing are not decoding. `speed_ratio` > 1: the service's decoder is the faster.
    """
    if shutil.which("djpeg") is None:
        raise SystemExit("djpeg is not installed: `apt-get install libjpeg-turbo-progs` (Debian)")
    width, height = Image.open(io.BytesIO(image_bytes)).size
    eighth = (height // 8, width // 8)  # Pillow's draft takes the scale whole sides divide by: 1/8
    tiny = io.BytesIO()
    Image.new("RGB", (16, 16)).save(tiny, "JPEG")
    with tempfile.TemporaryDirectory() as scratch:
        photo, empty = Path(scratch) / "photo.jpg", Path(scratch) / "tiny.jpg"
        photo.write_bytes(image_bytes)
        empty.write_bytes(tiny.getvalue())
        ours, theirs, start_up = [], [], []
        decode(image_bytes, size=eighth)  # first calls load libraries: not part of the steady cost
        djpeg_cpu_seconds(photo)
        for _ in range(repeats):
            started = time.thread_time()
            decoded = decode(image_bytes, size=eighth)
            ours.append(time.thread_time() - started)
            theirs.append(djpeg_cpu_seconds(photo))
            start_up.append(djpeg_cpu_seconds(empty))
    megapixels = width * height / 1e6
    ours_ms = statistics.median(ours) * 1000 / megapixels
    djpeg_ms = max(statistics.median(theirs) - statistics.median(start_up), 0) * 1000 / megapixels
    return {
        "image": {"width": width, "height": height, "bytes": len(image_bytes)},
        "decoded_to": [decoded.shape[0], decoded.shape[1]],
        "decode_cpu_ms_per_megapixel": round(ours_ms, 3),
        "djpeg_cpu_ms_per_megapixel": round(djpeg_ms, 3),
        "djpeg_start_up_cpu_ms": round(statistics.median(start_up) * 1000, 3),
        "speed_ratio": round(djpeg_ms / ours_ms, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version_dir", help="a model version folder, models/<name>/<version>")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    photo = photo_jpeg()
    cost = measure_decode_cost(args.version_dir, photo, args.repeats)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in cost.items()}, indent=2))
    print(json.dumps({"against djpeg -scale 1/8": compare_with_djpeg(photo, args.repeats)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
