"""Run the benchmark suite: `python -m benchmarks` (see `--help`).

For each model, in one run: the in-process limit; the service with batching at 1 to 256 clients
and one client again right after the burst; the protocol routes; throughput and latency against
files per request and against image size (the small JPEG and a generated 12-megapixel one); cold
start and memory; the service with batching off (MAX_BATCH_SIZE=1) as the per-request baseline;
then the peers a user would pick instead (`--peers`: a plain FastAPI app, BentoML with adaptive
batching) at the same levels on the same body. Figures are reported as ratios to the in-process
limit of the same run.
"""

import argparse
import functools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from benchmarks.decode_cost import compare_with_djpeg
from benchmarks.images import make_large_image, make_request_image
from benchmarks.inprocess import measure_in_process
from benchmarks.load import HttpProcess, Route, Server, measure_level, predict_route, routes, run_wrk
from benchmarks.peers import REQUIREMENTS, Peer, missing
from benchmarks.report import evaluate_targets, ratio, write_report


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
    """The version the service serves by default (the highest), found by the service's own code."""
    from app.errors import ModelLoadError
    from app.runtime.model import list_versions, no_versions

    try:
        if versions := list_versions(base_path / name):
            return versions[max(versions)]
        raise no_versions(base_path / name)
    except ModelLoadError as error:
        raise SystemExit(str(error)) from None


def benchmark_model(label: str, version_dir: Path, images: dict[str, Path], args: argparse.Namespace) -> dict:
    base_path, name = str(version_dir.parent.parent), version_dir.parent.name
    image = images["small"]
    print(f"[{label}] in-process limit ...", flush=True)
    limit = measure_in_process(str(version_dir), image.read_bytes(), args.batch_sizes, args.inprocess_seconds)
    print(f"[{label}] {json.dumps(limit.as_dict())}", flush=True)

    result = {"model": label, "version_dir": str(version_dir), "in_process": limit.as_dict()}
    predict, *protocols = routes(image, name, image.parent)
    with Server(base_path, name, settings=args.settings) as server:
        result["cold_start"] = server.cold_start
        result["batch_choice"] = server.batching
        result["rss_mib_after_warmup"] = round(server.rss_mib(), 1)
        result["batching"], result["after_burst"] = measure_levels(f"{label}, service", server, predict, args)
        result["batch_choice_after_levels"] = server.current_batching()
        result["protocols"] = compare_protocols(label, server, [predict, *protocols], args)
        result["curves"] = measure_curves(label, server, images, result["batching"], args)
        served = sum(
            level["requests"] + level.get("warmup_requests", 0)
            for level in [
                *result["batching"],
                result["after_burst"],
                *result["protocols"],
                *all_curves(result),
            ]
        )
        while served < args.memory_requests:
            served += run_wrk(server.url, predict, 8, 5)["requests"]
        result["requests_before_rss"] = served
        result["rss_mib_after_requests"] = round(server.rss_mib(), 1)
        result["rss_mib_after_peaks"] = measure_peaks(label, server, predict, args)
        result["exit_code"] = server.stop()
    print(f"[{label}] decoding against djpeg -scale 1/8 ...", flush=True)
    result["decode_against_djpeg"] = compare_with_djpeg(images["large"].read_bytes(), args.decode_repeats)
    print(f"[{label}] {json.dumps(result['decode_against_djpeg'])}", flush=True)

    with Server(base_path, name, settings={**args.settings, "MAX_BATCH_SIZE": "1"}) as baseline:
        result["per_request"], _ = measure_levels(
            f"{label}, batching off", baseline, predict, args, burst=False
        )
        baseline.stop()
    result["peers"] = [measure_peer(label, peer, version_dir, predict, args) for peer in args.peers]
    result["targets"] = evaluate_targets(result)
    for target in result["targets"]:
        print(
            f"[{label}] {'PASS' if target['met'] else 'MISS'} {target['name']}: {target['measured']}",
            flush=True,
        )
    return result


def measure_levels(
    label: str, server: HttpProcess, route: Route, args: argparse.Namespace, burst: bool = True
) -> tuple[list[dict], dict | None]:
    """Each concurrency level in turn, then (with `burst`) one client right after the busiest."""
    levels = []
    for clients in args.levels:
        levels.append(measure_level(server, route, clients, args.seconds, args.warmup))
        print(f"[{label}] {clients} clients: {json.dumps(levels[-1])}", flush=True)
    if not burst:
        return levels, None
    after = measure_level(server, route, 1, args.seconds, warmup=0)
    print(f"[{label}] 1 client after the burst: {json.dumps(after)}", flush=True)
    return levels, after


def measure_peaks(label: str, server: Server, route: Route, args: argparse.Namespace) -> list[float]:
    """RSS after each of `--peaks` bursts at the busiest level: memory is judged on whether it still
    grows from the second peak on, not on one reading (a first peak's high-water mark stays)."""
    readings = []
    for _ in range(args.peaks):
        run_wrk(server.url, route, args.levels[-1], args.seconds)
        readings.append(round(server.rss_mib(), 1))
    print(f"[{label}] RSS after each peak of {args.levels[-1]} clients: {readings} MiB", flush=True)
    return readings


def measure_peer(label: str, name: str, version_dir: Path, route: Route, args: argparse.Namespace) -> dict:
    """A peer at the service's levels, on the same body, with its own after-the-burst row."""
    with Peer(name=name, version_dir=str(version_dir)) as peer:
        result = {"name": name, "ready_seconds": round(peer.ready_seconds, 2)}
        result["rss_mib_after_warmup"] = round(peer.rss_mib(), 1)
        result["levels"], result["after_burst"] = measure_levels(f"{label}, {name}", peer, route, args)
        result["rss_mib_after_requests"] = round(peer.rss_mib(), 1)
    return result  # leaving the block kills the peer's process group: its shutdown is not measured


def measure_curves(
    label: str, server: Server, images: dict[str, Path], batching: list[dict], args: argparse.Namespace
) -> dict:
    """Throughput and latency against files per request and against image size, at `--curve-clients`.

    The one-small-file point is shared by both curves, and is the concurrency curve's own level when
    it has one at `--curve-clients`.
    """
    clients, scratch = args.curve_clients, images["small"].parent
    measured = {level["clients"]: level for level in batching}

    @functools.cache
    def point(files: int, image: str) -> dict:
        size = images[image].stat().st_size
        if (files, image) == (1, "small") and clients in measured:
            return measured[clients] | {"image": image, "image_bytes": size, "from_concurrency_curve": True}
        route = predict_route(
            f"{files} x {image}", images[image], files, scratch / f"curve-{files}-{image}.bin"
        )
        level = measure_level(server, route, clients, args.seconds, args.warmup)
        level |= {"image": image, "image_bytes": size}
        print(f"[{label}] {files} x {image} image, {clients} clients: {json.dumps(level)}", flush=True)
        return level

    return {
        "clients": clients,
        "files": [point(files, "small") for files in args.files],
        "sizes": [point(1, image) for image in images],
    }


def all_curves(result: dict) -> list[dict]:
    """The curve points measured on their own, each once (not the ones taken from the concurrency levels)."""
    points = {id(point): point for point in result["curves"]["files"] + result["curves"]["sizes"]}
    return [point for point in points.values() if not point.get("from_concurrency_curve")]


def compare_protocols(
    label: str, server: Server, compared: list[Route], args: argparse.Namespace
) -> list[dict]:
    """Each route at `--protocol-clients`, one after the other, as ratios to the first (/predict)."""
    levels = []
    for route in compared:
        level = {"route": route.name, "path": route.path}
        level.update(measure_level(server, route, args.protocol_clients, args.seconds, args.warmup))
        first = levels[0] if levels else level
        level["throughput_ratio"] = ratio(level["images_per_second"], first["images_per_second"])
        level["p50_ratio"] = ratio(level["p50_ms"], first["p50_ms"])
        levels.append(level)
        print(f"[{label}] {route.name}, {args.protocol_clients} clients: {json.dumps(level)}", flush=True)
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
    parser.add_argument("--levels", default="1,8,32,64,128,256", help="concurrent clients per level")
    parser.add_argument("--seconds", type=float, default=15, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=5, help="unmeasured seconds before each level")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64", help="in-process batch sizes to try")
    parser.add_argument(
        "--inprocess-seconds", type=float, default=8, help="seconds per in-process batch size"
    )
    parser.add_argument(
        "--memory-requests", type=int, default=10_000, help="requests before the second RSS reading"
    )
    parser.add_argument(
        "--peers",
        default=None,
        help=f"comma-separated, from {', '.join(REQUIREMENTS)}, or 'none' (default: those installed)",
    )
    parser.add_argument(
        "--peaks", type=int, default=3, help="bursts at the busiest level, RSS read after each (at least 3)"
    )
    parser.add_argument(
        "--decode-repeats", type=int, default=9, help="turns of the decoder against djpeg -scale 1/8"
    )
    parser.add_argument("--protocol-clients", type=int, default=64, help="clients for the protocol routes")
    parser.add_argument("--curve-clients", type=int, default=8, help="clients for the files and size curves")
    parser.add_argument("--files", default="1,4,16", help="files per /predict request, for its curve")
    parser.add_argument("--large-size", default="4000x3000", help="WIDTHxHEIGHT of the large JPEG")
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
        args.seconds, args.warmup, args.inprocess_seconds, args.memory_requests = 1, 1, 1, 200
        args.peaks, args.decode_repeats = 3, 3
        args.levels, args.batch_sizes, args.files, args.large_size = "1,8", "1,8", "1,4", "1000x750"
        args.protocol_clients = args.curve_clients = 8
    if args.peaks < 3:
        parser.error(
            f"--peaks takes 3 or more: growth is judged after the second peak. Received: {args.peaks}"
        )
    args.levels = [int(n) for n in args.levels.split(",")]
    args.batch_sizes = [int(n) for n in args.batch_sizes.split(",")]
    args.files = [int(n) for n in args.files.split(",")]
    args.large_size = tuple(int(n) for n in args.large_size.split("x"))
    args.models = args.models.split(",")
    if unknown := [label for label in args.models if label not in ("notebook", "demo")]:
        parser.error(f"--models takes notebook and demo. Received: {unknown[0]!r}")
    args.settings = dict(item.split("=", 1) for item in args.set)
    args.peers, args.skipped_peers = choose_peers(args.peers, parser)
    return args


def choose_peers(requested: str | None, parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, str]]:
    """The peers to measure, and why each other one is not: a skipped peer is named in the report."""
    if requested == "none":
        return [], {name: "not asked for (--peers none)" for name in REQUIREMENTS}
    names = list(REQUIREMENTS) if requested is None else requested.split(",")
    if unknown := [name for name in names if name not in REQUIREMENTS]:
        parser.error(f"--peers takes {', '.join(REQUIREMENTS)} or none. Received: {', '.join(unknown)}")
    reasons = {name: missing(name) for name in names}
    if requested is not None and (absent := {n: r for n, r in reasons.items() if r}):
        parser.error("; ".join(f"peer {name}: {reason}" for name, reason in absent.items()))
    skipped = {name: reason for name, reason in reasons.items() if reason}
    skipped |= {name: f"not asked for (--peers {requested})" for name in REQUIREMENTS if name not in names}
    return [name for name in names if not reasons[name]], skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed: `apt-get install wrk` (Debian) or your system's package.", file=sys.stderr
        )
        return 2
    # Found before anything is measured: a missing demo model used to end a run after the notebook's
    # twenty minutes, with nothing written.
    demo_version = served_version(args.model_base_path, args.model_name) if "demo" in args.models else None
    for name, reason in args.skipped_peers.items():
        print(f"Peer {name} not measured: {reason}", flush=True)
    results = {
        "machine": machine(),
        "settings": args.settings,
        "quick": args.quick,
        "peers": args.peers,
        "skipped_peers": args.skipped_peers,
        "models": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        images = {
            "small": make_request_image(Path(scratch) / "request.jpg"),
            "large": make_large_image(Path(scratch) / "large.jpg", *args.large_size),
        }
        results["images"] = {
            label: {"bytes": path.stat().st_size, "size": list(Image.open(path).size)}
            for label, path in images.items()
        }
        for label in args.models:
            version_dir = demo_version if label == "demo" else notebook_model(Path(scratch) / "repository")
            result = benchmark_model(label, version_dir, images, args)
            if label == "notebook":  # a scratch folder gone after the run: the report names it otherwise
                result["version_shown"] = "`notebook/1`, random weights exported for this run"
            results["models"].append(result)
    write_report(results, args.out)
    print(f"Wrote {args.out} and {args.out.with_suffix('')}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
