"""Run the benchmark suite: `python -m benchmarks` (see `--help`).

For each model, in one run: the in-process limit, then the service with batching at 1, 8, 32 and
64 clients and one client again right after the burst, cold start and memory, then the service
with batching off (MAX_BATCH_SIZE=1) as the per-request baseline. Figures are reported as ratios
to the in-process limit of the same run.
"""

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.inprocess import measure_in_process
from benchmarks.load import Route, Server, measure_level, routes, run_wrk
from benchmarks.report import evaluate_targets, write_report


def make_request_image(path: Path, target_kib: float = 22) -> Path:
    """A shapes JPEG of about `target_kib` KiB, the size the issue's comparison used."""
    from PIL import Image

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


def notebook_model(repository: Path) -> Path:
    """The notebook's network at its own size (128x128, 5 classes); weights do not change its speed."""
    from training.export import export_model
    from training.inception_v2 import inception_v2_seed

    return export_model(
        inception_v2_seed(),
        ["circle", "cross", "square", "star", "triangle"],
        base_path=repository,
        name="notebook",
        architecture="inception_v2_seed",
    )


def served_version(base_path: Path, name: str) -> Path:
    """The version the service itself would serve: resolved by the service's own code."""
    from app.errors import ModelLoadError
    from app.runtime.model import find_version

    try:
        return find_version(base_path, name, None)
    except ModelLoadError as error:
        raise SystemExit(str(error)) from None


def benchmark_model(label: str, version_dir: Path, image: Path, args: argparse.Namespace) -> dict:
    base_path, name = str(version_dir.parent.parent), version_dir.parent.name
    print(f"[{label}] in-process limit ...", flush=True)
    limit = measure_in_process(str(version_dir), image.read_bytes(), args.batch_sizes, args.inprocess_seconds)
    print(f"[{label}] {json.dumps(limit.as_dict())}", flush=True)

    result = {"model": label, "version_dir": str(version_dir), "in_process": limit.as_dict()}
    predict, *protocols = routes(image, name, image.parent)
    with Server(base_path, name, settings=args.settings) as server:
        result["cold_start"] = server.cold_start
        result["rss_mib_after_warmup"] = round(server.rss_mib(), 1)
        result["batching"], served = [], 0
        for clients in args.levels:
            level = measure_level(server, predict, clients, args.seconds, args.warmup)
            served += level["requests"] + level["warmup_requests"]
            result["batching"].append(level)
            print(f"[{label}] batching, {clients} clients: {json.dumps(level)}", flush=True)
        after = measure_level(server, predict, 1, args.seconds, warmup=0)
        served += after["requests"]
        result["after_burst"] = after
        print(f"[{label}] 1 client after the burst: {json.dumps(after)}", flush=True)
        result["protocols"] = compare_protocols(label, server, [predict, *protocols], args)
        served += sum(level["requests"] + level["warmup_requests"] for level in result["protocols"])
        while served < args.memory_requests:
            served += run_wrk(server.url, predict, 8, 5)["requests"]
        result["requests_before_rss"] = served
        result["rss_mib_after_requests"] = round(server.rss_mib(), 1)
        result["exit_code"] = server.stop()

    result["per_request"] = []
    with Server(base_path, name, settings={**args.settings, "MAX_BATCH_SIZE": "1"}) as baseline:
        for clients in args.levels:
            level = measure_level(baseline, predict, clients, args.seconds, args.warmup)
            result["per_request"].append(level)
            print(f"[{label}] batching off, {clients} clients: {json.dumps(level)}", flush=True)
        baseline.stop()
    result["targets"] = evaluate_targets(result)
    for target in result["targets"]:
        print(
            f"[{label}] {'PASS' if target['met'] else 'MISS'} {target['name']}: {target['measured']}",
            flush=True,
        )
    return result


def compare_protocols(
    label: str, server: Server, compared: list[Route], args: argparse.Namespace
) -> list[dict]:
    """Each route at the busiest level, one after the other, as ratios to the first (/predict)."""
    clients = args.levels[-1]
    levels = []
    for route in compared:
        level = {"route": route.name, "path": route.path}
        level.update(measure_level(server, route, clients, args.seconds, args.warmup))
        first = levels[0] if levels else level
        level["throughput_ratio"] = round(level["images_per_second"] / first["images_per_second"], 3)
        level["p50_ratio"] = round(level["p50_ms"] / first["p50_ms"], 3)
        levels.append(level)
        print(f"[{label}] {route.name}, {clients} clients: {json.dumps(level)}", flush=True)
    return levels


def machine() -> dict:
    import tensorflow as tf

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kib = int(
        next(
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024**2, 1),
        "gpu": bool(tf.config.list_physical_devices("GPU")),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="notebook,demo", help="comma-separated: notebook, demo")
    parser.add_argument(
        "--model-base-path", type=Path, default=Path("models"), help="where the demo model is"
    )
    parser.add_argument("--model-name", default="inception_v2")
    parser.add_argument("--levels", default="1,8,32,64", help="concurrent clients per level")
    parser.add_argument("--seconds", type=float, default=20, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=5, help="unmeasured seconds before each level")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64", help="in-process batch sizes to try")
    parser.add_argument(
        "--inprocess-seconds", type=float, default=8, help="seconds per in-process batch size"
    )
    parser.add_argument(
        "--memory-requests", type=int, default=10_000, help="requests before the second RSS reading"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting for both runs, e.g. --set BATCH_TIMEOUT_MS=2",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/performance.md"))
    parser.add_argument("--quick", action="store_true", help="a short smoke run (not for quoting)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.inprocess_seconds, args.memory_requests = 2, 1, 1, 200
        args.levels, args.batch_sizes = "1,8", "1,8"
    args.levels = [int(n) for n in args.levels.split(",")]
    args.batch_sizes = [int(n) for n in args.batch_sizes.split(",")]
    args.models = args.models.split(",")
    args.settings = dict(item.split("=", 1) for item in args.set)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed: `apt-get install wrk` (Debian) or your system's package.", file=sys.stderr
        )
        return 2
    results = {"machine": machine(), "settings": args.settings, "quick": args.quick, "models": []}
    with tempfile.TemporaryDirectory() as scratch:
        image = make_request_image(Path(scratch) / "request.jpg")
        results["request_image_bytes"] = image.stat().st_size
        for label in args.models:
            if label == "notebook":
                version_dir = notebook_model(Path(scratch) / "repository")
            elif label == "demo":
                version_dir = served_version(args.model_base_path, args.model_name)
            else:
                raise SystemExit(f"--models takes notebook and demo. Received: {label!r}")
            results["models"].append(benchmark_model(label, version_dir, image, args))
    write_report(results, args.out)
    print(f"Wrote {args.out} and {args.out.with_suffix('')}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
