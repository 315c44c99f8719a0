"""How many requests one event loop can parse, and where its time goes: `python -m benchmarks.event_loop`.

The real service (`python -m app`) serves a model that does nothing (a SavedModel whose
`predict_pixels` answers the same probabilities for any pixels, at 32x32), so what is left of a
request is the service's own work: HTTP parsing, routing, middleware, the response, and decoding
on the decoder threads. wrk loads it at `--clients` for `--seconds`, and the report gives requests
per second, the CPU milliseconds per request of the whole process and of its main thread (where
uvicorn's event loop runs), and the ceiling one event loop sets: 1000 / its milliseconds per
request, the most requests per second it could answer with a core of its own.

Then the same server runs with cProfile on its main thread (the event loop) for the measured
seconds only, not start-up (`serve_profiled`), at the same load, timed by the thread's CPU clock,
and the report gives each package's share of the loop's busy time (waiting in epoll left out; a
built-in function's time counted to the package that called it) and the functions that take most
of it. cProfile slows Python code (reading the CPU clock at every call more so), so read shares,
not times; on a busy machine the shares still hold, the rates do not (`--label` says which).

`--in-process N` measures instead the application's own share of the loop, with no server: N
requests per route (`/predict`, TF Serving's `:predict`, the OIP's `infer`) sent straight to the
ASGI app, 16 at a time after 300 unmeasured, timed by this thread's CPU clock. It is the figure to
compare two checkouts by on a shared machine: run it from each, alternately.
"""

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp

from benchmarks.images import make_request_image
from benchmarks.load import Route, Server, measure_level, routes, run_wrk

IDLE_LABELS = ["a", "b", "c"]
IDLE_SIZE = 32


def export_idle_model(repository: Path) -> Path:
    """A model that does nothing: the same probabilities (1/3 each) for any image."""
    import keras

    from training.export import export_model

    model = keras.Sequential(
        [
            keras.Input((IDLE_SIZE, IDLE_SIZE, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(IDLE_LABELS), activation="softmax", kernel_initializer="zeros"),
        ]
    )
    return export_model(model, IDLE_LABELS, base_path=repository, name="idle", architecture="idle")


IN_PROCESS_CONCURRENCY = 16
IN_PROCESS_WARMUP = 300


async def send_straight(app: ASGIApp, route: Route, body: bytes) -> int:
    """One request sent to the ASGI `app` as uvicorn would send it; its status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": route.path,
        "raw_path": route.path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in route.headers.items()]
        + [(b"content-length", str(len(body)).encode()), (b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    never = asyncio.Event()  # the client stays connected

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await never.wait()
        raise AssertionError("unreachable")

    statuses = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


async def app_cpu_ms_per_request(base_path: str, routes_: list[Route], requests: int) -> dict[str, float]:
    """The application's event-loop CPU milliseconds per request on each route (see the docstring)."""
    from app.main import create_app, lifespan
    from app.settings import Settings

    app = create_app(Settings(model_base_path=base_path, model_name="idle", log_level="WARNING"))
    figures = {}
    async with lifespan(app):
        for route in routes_:
            body = route.body.read_bytes()
            for count in (IN_PROCESS_WARMUP, requests):
                start, statuses = time.thread_time(), []
                for _ in range(max(1, count // IN_PROCESS_CONCURRENCY)):
                    batch = [send_straight(app, route, body) for _ in range(IN_PROCESS_CONCURRENCY)]
                    statuses += await asyncio.gather(*batch)
                cpu = time.thread_time() - start
                if set(statuses) != {200}:
                    raise RuntimeError(f"{route.name} answered {sorted(set(statuses))}, not only 200")
            figures[route.name] = round(1000 * cpu / len(statuses), 4)
    return figures


def serve_profiled(stats: str) -> int:
    """`python -m app` in this process, its main thread profiled from SIGUSR1 until SIGUSR2, which
    writes the statistics to `stats`. Signal handlers run on the main thread: the event loop's."""
    from app.__main__ import main

    # The thread's CPU clock, not cProfile's default wall clock: on a shared machine the wall clock
    # charges whichever function was running when the thread lost its core with the wait.
    profiler = cProfile.Profile(time.thread_time)

    def stop(signum: int, frame: object) -> None:
        profiler.disable()
        profiler.dump_stats(stats)

    signal.signal(signal.SIGUSR1, lambda signum, frame: profiler.enable())
    signal.signal(signal.SIGUSR2, stop)
    return main([])


@dataclass
class ProfiledServer(Server):
    """The service as `serve_profiled` runs it."""

    stats: str = ""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.event_loop", "--serve-profiled", self.stats]

    def profile(self, route, clients: int, seconds: float, warmup: float) -> None:
        """Profile the event loop for `seconds` of load, after `warmup` seconds unprofiled."""
        run_wrk(self.url, route, clients, warmup)
        os.kill(self.process.pid, signal.SIGUSR1)
        run_wrk(self.url, route, clients, seconds)
        os.kill(self.process.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 60
        while not Path(self.stats).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server wrote no profile to {self.stats} within 60 s")
            time.sleep(0.1)


def package(filename: str) -> str:
    """Which package a profiled function belongs to: the folder under site-packages, ours, or the
    standard library's module."""
    path = Path(filename)
    if "site-packages" in path.parts:
        return path.parts[path.parts.index("site-packages") + 1].removesuffix(".py")
    for ours in ("app", "imaging"):
        if ours in path.parts:
            return ours
    library = Path(os.__file__).parent  # the standard library: by module, asyncio apart from threading
    if path.is_relative_to(library):
        return f"standard library: {path.relative_to(library).parts[0].removesuffix('.py')}"
    return path.name


def built_in(function: tuple[str, int, str]) -> bool:
    return function[0] == "~"


def waiting(function: tuple[str, int, str]) -> bool:
    """The loop waiting for sockets: idle, not work."""
    return built_in(function) and "poll" in function[2] and "epoll" in function[2]


def shares(stats_file: Path, top: int) -> dict:
    """The loop's busy time by package and its `top` functions, as shares (see the module docstring)."""
    stats = pstats.Stats(str(stats_file)).stats
    busy = {function: figures for function, figures in stats.items() if not waiting(function)}
    total = sum(figures[2] for figures in busy.values())
    by_package: dict[str, float] = {}
    for function, (_, _, own, _, callers) in busy.items():
        if not built_in(function):
            by_package[package(function[0])] = by_package.get(package(function[0]), 0.0) + own
            continue
        for caller, (_, _, own_from_caller, _) in callers.items():  # each call edge's share
            name = "the event loop itself" if built_in(caller) else package(caller[0])
            by_package[name] = by_package.get(name, 0.0) + own_from_caller
    functions = sorted(busy.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return {
        "by_package": {
            name: round(own / total, 3)
            for name, own in sorted(by_package.items(), key=lambda kv: -kv[1])
            if own / total >= 0.001
        },
        "top_functions": [
            {"function": pstats.func_std_string(function), "share": round(figures[2] / total, 3)}
            for function, figures in functions
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.event_loop",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=5, help="unmeasured seconds before each run")
    parser.add_argument("--top", type=int, default=15, help="functions listed in the profile")
    parser.add_argument("--label", default="", help="a note for the output, e.g. 'busy machine'")
    parser.add_argument(
        "--in-process", type=int, metavar="N", help="the application's own share, N requests a route"
    )
    parser.add_argument("--serve-profiled", metavar="STATS", help=argparse.SUPPRESS)  # see serve_profiled
    args = parser.parse_args(argv)
    if args.serve_profiled:
        return serve_profiled(args.serve_profiled)
    with tempfile.TemporaryDirectory() as scratch:
        version_dir = export_idle_model(Path(scratch) / "repository")
        image = make_request_image(Path(scratch) / "request.jpg")
        every_route = routes(image, "idle", Path(scratch))
        predict = every_route[0]
        base_path = str(version_dir.parent.parent)
        if args.in_process:
            figures = asyncio.run(app_cpu_ms_per_request(base_path, every_route, args.in_process))
            print(json.dumps({"label": args.label, "app_cpu_ms_per_request": figures}, indent=2))
            return 0
        settings = {"LOG_LEVEL": "WARNING", "SHUTDOWN_DELAY_S": "0"}
        with Server(base_path, "idle", settings=settings) as server:
            level = measure_level(server, predict, args.clients, args.seconds, args.warmup)
            server.stop()
        loop_ms = level["main_thread_cpu_ms_per_request"]
        result = {
            "label": args.label,
            "clients": args.clients,
            "requests_per_second": level["images_per_second"],
            "cpu_ms_per_request": level["cpu_ms_per_request"],
            "event_loop_cpu_ms_per_request": loop_ms,
            "decode_and_model_ms_per_request": round(
                level["cpu_ms_per_request"] - level["tax_ms_per_request"], 3
            ),
            "one_event_loop_ceiling_requests_per_second": round(1000 / loop_ms, 1) if loop_ms else None,
            "errors": level["errors"],
        }
        print(json.dumps(result, indent=2), flush=True)
        stats = Path(scratch) / "loop.prof"
        with ProfiledServer(base_path, "idle", settings=settings, stats=str(stats)) as profiled:
            profiled.profile(predict, args.clients, args.seconds, args.warmup)
            profiled.stop()
        print(json.dumps({"event_loop_profile": shares(stats, args.top)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
