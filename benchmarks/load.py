"""The service under load: a real `python -m app` process on 127.0.0.1, driven by wrk.

wrk (Debian's package) is written in C and runs one thread here, so the client costs little of the
two cores the server needs; its CPU share is measured and reported with every level. Each route
(/predict, TF Serving's :predict, the Open Inference Protocol's infer) is asked for the same image,
in the body its clients send.
"""

import base64
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

BOUNDARY = "wrk-benchmark-boundary"
MULTIPART_HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
LUA_SCRIPT = Path(__file__).with_name("post_body.lua")
BY_STATUS_SCRIPT = Path(__file__).with_name("by_status.lua")  # post_body.lua, plus latency by status
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except OSError:
        return 0, b""


def _descendants(pid: int) -> list[int]:
    """`pid` and every process under it: BentoML serves from worker processes its supervisor starts."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                pending.extend(int(child) for child in (task / "children").read_text().split())
    return found


@dataclass(kw_only=True)
class HttpProcess:
    """A server process on 127.0.0.1; `start()` returns once `ready_path` answers 200.

    CPU and memory are read for the whole process tree, so a server that forks workers is measured
    as the user would pay for it.
    """

    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    ready_seconds: float = 0.0
    ready_path: ClassVar[str] = "/readyz"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return {}

    def start(self, timeout: float = 180) -> Self:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **self.environment()}
        started = time.perf_counter()
        self.process = subprocess.Popen(self.command(), env=env, stdout=subprocess.DEVNULL)
        while _get(f"{self.url}{self.ready_path}", timeout=1)[0] != 200:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.command()} exited with {self.process.returncode} before it was ready"
                )
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{self.command()} was not ready within {timeout} s")
            time.sleep(0.05)
        self.ready_seconds = time.perf_counter() - started
        return self

    def _status(self, pid: int, key: str) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
        return 0

    def rss_mib(self) -> float:
        return sum(self._status(pid, "VmRSS:") for pid in _descendants(self.process.pid)) / 1024

    def cpu_seconds(self, main_threads: bool = False) -> float:
        """CPU seconds of the whole process tree, or of its processes' main threads only: where
        uvicorn runs its event loop, which parses, routes and answers every request."""
        ticks = 0
        for pid in _descendants(self.process.pid):
            stat = f"/proc/{pid}/task/{pid}/stat" if main_threads else f"/proc/{pid}/stat"
            with contextlib.suppress(OSError):
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / CLOCK_TICKS

    def work_seconds(self) -> dict[str, float]:
        """The server's own timings of decoding and of the model, where it reports them (see `Server`)."""
        return {}

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """The process and every process under it, so no worker outlives a run.

        By process id, not process group: BentoML's workers start sessions of their own, and an
        orphaned one would keep the benchmark's output pipes open.
        """
        for pid in _descendants(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


@dataclass
class Server(HttpProcess):
    """One `python -m app` process, with its cold start read from its own /model."""

    model_base_path: str
    model_name: str
    settings: dict[str, str] = field(default_factory=dict)
    cold_start: dict[str, float] = field(default_factory=dict)
    batching: dict = field(default_factory=dict)  # /model's: the batch size chosen and its curve

    def command(self) -> list[str]:
        return [sys.executable, "-m", "app"]

    def environment(self) -> dict[str, str]:
        return {
            "MODEL_BASE_PATH": self.model_base_path,
            "MODEL_NAME": self.model_name,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "WARNING",
            **self.settings,
        }

    def current_batching(self) -> dict:
        """/model's batching now: live batches may have revised warm-up's choice."""
        return json.loads(_get(f"{self.url}/model")[1])["runtime"]["batching"]

    def start(self, timeout: float = 180) -> Self:
        super().start(timeout)
        runtime = json.loads(_get(f"{self.url}/model")[1])["runtime"]
        self.batching = runtime["batching"]
        self.cold_start = {
            "ready_seconds": round(self.ready_seconds, 2),
            "load_seconds": round(runtime["load_seconds"], 2),
            "warmup_seconds": round(runtime["warmup_seconds"], 2),
            # The rest of warm-up timed the batch curve (BATCH_MEASURE_S).
            "first_calls_seconds": round(runtime["first_calls_seconds"], 2),
            # The rest: interpreter start, imports (TensorFlow is most of it), uvicorn start-up.
            "import_and_start_seconds": round(
                self.ready_seconds - runtime["load_seconds"] - runtime["warmup_seconds"], 2
            ),
        }
        return self

    def work_seconds(self) -> dict[str, float]:
        """From /metrics, CPU seconds: the decoder threads' (decoding), and the model's (the inference
        thread's in model calls and that of the threads Python did not start, TensorFlow's op pools,
        which also run the resizes' ops)."""
        text = _get(f"{self.url}/metrics")[1].decode()
        kinds = {
            "inference_decode_cpu_seconds_total": "decode",
            "inference_model_cpu_seconds_total": "model",
            "native_threads_cpu_seconds_total": "model",
        }
        totals = {"decode": 0.0, "model": 0.0}
        for line in text.splitlines():
            if kind := kinds.get(line.split("{", 1)[0].split(" ", 1)[0]):
                totals[kind] += float(line.rsplit(" ", 1)[1])
        return totals


@dataclass(frozen=True)
class Route:
    """One way to ask the service for an image's classification: a path, a request body, its headers."""

    name: str
    path: str
    body: Path
    headers: dict[str, str]
    images: int = 1  # per request: images/s counts images, not requests


def routes(image: Path, model_name: str, scratch: Path) -> list[Route]:
    """The image as /predict, TF Serving's `:predict` and the OIP's `infer` take it (/predict first).

    The OIP request is what tritonclient sends by default: binary tensor data, binary output.
    """
    data = image.read_bytes()
    multipart = multipart_body([data])
    tf_serving = json.dumps({"instances": [{"b64": base64.b64encode(data).decode()}]}).encode()
    element = len(data).to_bytes(4, "little") + data  # a BYTES tensor element
    infer_header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(element)},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    bodies = {
        "/predict": ("/predict", multipart, MULTIPART_HEADERS),
        "TF Serving :predict": (
            f"/v1/models/{model_name}:predict",
            tf_serving,
            {"Content-Type": "application/json"},
        ),
        "OIP infer (binary)": (
            f"/v2/models/{model_name}/infer",
            infer_header + element,
            {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(infer_header)),
            },
        ),
    }
    result = []
    for i, (name, (path, body, headers)) in enumerate(bodies.items()):
        body_file = scratch / f"request-{i}.bin"
        body_file.write_bytes(body)
        result.append(Route(name, path, body_file, headers))
    return result


def multipart_body(files: list[bytes]) -> bytes:
    """A /predict body with each of `files` as a `file` part, as a browser or curl -F sends it."""
    return (
        b"".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="image-{i}.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode()
            + data
            + b"\r\n"
            for i, data in enumerate(files)
        )
        + f"--{BOUNDARY}--\r\n".encode()
    )


def predict_route(name: str, image: Path, files: int, body_file: Path) -> Route:
    """/predict with `files` copies of `image` in one request."""
    body_file.write_bytes(multipart_body([image.read_bytes()] * files))
    return Route(name, "/predict", body_file, MULTIPART_HEADERS, images=files)


def run_wrk(url: str, route: Route, connections: int, seconds: float, by_status: bool = False) -> dict:
    """One wrk run; returns its figures with the client's CPU seconds.

    With `by_status`, wrk runs one connection per thread and times each answer itself
    (by_status.lua): `by_status_us` then holds latency percentiles for each HTTP status.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [
            "wrk",
            f"-t{connections if by_status else 1}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "60s",
            "-s",
            str(BY_STATUS_SCRIPT if by_status else LUA_SCRIPT),
            f"{url}{route.path}",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "BENCH_SCRIPT_DIR": str(LUA_SCRIPT.parent),
            "BENCH_BODY": str(route.body),
            "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in route.headers.items()),
        },
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures: dict = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            figures.update(json.loads(line))
    figures["client_cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return figures


def measure_level(server: HttpProcess, route: Route, connections: int, seconds: float, warmup: float) -> dict:
    """Warm up, then measure one concurrency level: images/s, latency percentiles, errors, CPU shares."""
    warm = run_wrk(server.url, route, connections, warmup) if warmup > 0 else {"requests": 0}
    work, main_cpu, server_cpu = server.work_seconds(), server.cpu_seconds(True), server.cpu_seconds()
    figures = run_wrk(server.url, route, connections, seconds)
    server_cpu = server.cpu_seconds() - server_cpu
    main_cpu = server.cpu_seconds(True) - main_cpu
    work = {key: value - work[key] for key, value in server.work_seconds().items()}
    duration = figures["duration_us"] / 1e6
    cores = os.cpu_count() or 1
    errors = sum(figures["errors"].values())
    answered = figures["requests"] - figures["errors"]["status"]
    per_request = 1000 / max(answered, 1)
    return {
        "clients": connections,
        "images_per_request": route.images,
        "requests": figures["requests"],
        "warmup_requests": warm["requests"],
        "images_per_second": round(answered * route.images / duration, 2),
        "p50_ms": figures["latency_us"]["p50"] / 1000,
        "p90_ms": figures["latency_us"]["p90"] / 1000,
        "p99_ms": figures["latency_us"]["p99"] / 1000,
        "max_ms": figures["latency_us"]["max"] / 1000,
        "errors": errors,
        "client_cpu_share": round(figures["client_cpu_seconds"] / (duration * cores), 4),
        "server_cpu_share": round(server_cpu / (duration * cores), 4),
        # The serving tax: CPU milliseconds per answered request, all of it and the main threads'.
        "cpu_ms_per_request": round(server_cpu * per_request, 3),
        "main_thread_cpu_ms_per_request": round(main_cpu * per_request, 3),
        # By the server's own timings: what is neither decoding nor the model (see `work_seconds`).
        **(
            {"tax_ms_per_request": round((server_cpu - work["decode"] - work["model"]) * per_request, 3)}
            if work
            else {}
        ),
    }
