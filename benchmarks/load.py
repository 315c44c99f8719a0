"""The service under load: a real `python -m app` process on 127.0.0.1, driven by wrk.

wrk (Debian's package) is written in C and runs one thread here, so the client costs little of the
two cores the server needs; its CPU share is measured and reported with every level. Each route
(/predict, TF Serving's :predict, the Open Inference Protocol's infer) is asked for the same image,
in the body its clients send.
"""

import base64
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

LUA_SCRIPT = Path(__file__).with_name("post_body.lua")
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


@dataclass
class Server:
    """One service process; `start()` returns once /readyz answers 200."""

    model_base_path: str
    model_name: str
    settings: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    cold_start: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> "Server":
        env = {
            **os.environ,
            "MODEL_BASE_PATH": self.model_base_path,
            "MODEL_NAME": self.model_name,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "WARNING",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            **self.settings,
        }
        started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", "app"], env=env, stdout=subprocess.DEVNULL)
        while _get(f"{self.url}/readyz", timeout=1)[0] != 200:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode} before it was ready")
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"the service was not ready within {timeout} s")
            time.sleep(0.05)
        ready = time.perf_counter() - started
        runtime = json.loads(_get(f"{self.url}/model")[1])["runtime"]
        self.cold_start = {
            "ready_seconds": round(ready, 2),
            "load_seconds": round(runtime["load_seconds"], 2),
            "warmup_seconds": round(runtime["warmup_seconds"], 2),
            # The rest: interpreter start, imports (TensorFlow is most of it), uvicorn start-up.
            "import_and_start_seconds": round(ready - runtime["load_seconds"] - runtime["warmup_seconds"], 2),
        }
        return self

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass(frozen=True)
class Route:
    """One way to ask the service for an image's classification: a path, a request body, its headers."""

    name: str
    path: str
    body: Path
    headers: dict[str, str]


def routes(image: Path, model_name: str, scratch: Path) -> list[Route]:
    """The image as /predict, TF Serving's `:predict` and the OIP's `infer` take it (/predict first).

    The OIP request is what tritonclient sends by default: binary tensor data, binary output.
    """
    data = image.read_bytes()
    boundary = "wrk-benchmark-boundary"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="image.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
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
        "/predict": ("/predict", multipart, {"Content-Type": f"multipart/form-data; boundary={boundary}"}),
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


def run_wrk(url: str, route: Route, connections: int, seconds: float) -> dict:
    """One wrk run; returns its figures with the client's CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "60s",
            "-s",
            str(LUA_SCRIPT),
            f"{url}{route.path}",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "BENCH_BODY": str(route.body),
            "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in route.headers.items()),
        },
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    figures["client_cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return figures


def measure_level(server: Server, route: Route, connections: int, seconds: float, warmup: float) -> dict:
    """Warm up, then measure one concurrency level: images/s, latency percentiles, errors, CPU shares."""
    warm = run_wrk(server.url, route, connections, warmup) if warmup > 0 else {"requests": 0}
    server_cpu = server.cpu_seconds()
    figures = run_wrk(server.url, route, connections, seconds)
    server_cpu = server.cpu_seconds() - server_cpu
    duration = figures["duration_us"] / 1e6
    cores = os.cpu_count() or 1
    errors = sum(figures["errors"].values())
    return {
        "clients": connections,
        "requests": figures["requests"],
        "warmup_requests": warm["requests"],
        "images_per_second": round((figures["requests"] - figures["errors"]["status"]) / duration, 2),
        "p50_ms": figures["latency_us"]["p50"] / 1000,
        "p90_ms": figures["latency_us"]["p90"] / 1000,
        "p99_ms": figures["latency_us"]["p99"] / 1000,
        "max_ms": figures["latency_us"]["max"] / 1000,
        "errors": errors,
        "client_cpu_share": round(figures["client_cpu_seconds"] / (duration * cores), 4),
        "server_cpu_share": round(server_cpu / (duration * cores), 4),
    }
