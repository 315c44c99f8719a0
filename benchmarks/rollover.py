"""`python -m benchmarks.rollover`: how fast a new version takes traffic, and the memory an unload gives back.

Serves the demo network (Inception V2 at 64x64, 5 classes, random weights) under one client sending
JPEGs, then drops in new versions the way the exporter does (a hidden folder renamed into place),
one after another. Prints, per rollover: the time from the folder appearing to the first answer
from the new version, the time until the old version is unloaded, the slowest request meanwhile,
and the server's resident memory with one version, at the peak with two, and after the unload.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.__main__ import make_request_image
from benchmarks.load import free_port

NAME = "inception_v2"


def export_demo_model(repository: Path, seed: int) -> Path:
    import keras

    from training.export import export_model
    from training.inception_v2 import inception_v2

    keras.utils.set_random_seed(seed)
    model = inception_v2(input_shape=(64, 64, 3), num_classes=5)
    return export_model(
        model, ["circle", "cross", "square", "star", "triangle"], base_path=repository, name=NAME
    )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Client(threading.Thread):
    """Sends one image after another; records (time answered, version, seconds taken)."""

    def __init__(self, url: str, image: bytes) -> None:
        super().__init__(daemon=True)
        self.url, self.image = url, image
        self.answers: list[tuple[float, int, float]] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            while not self.stop.is_set():
                start = time.monotonic()
                response = http.post("/predict", files={"file": ("a.jpg", self.image, "image/jpeg")})
                if response.status_code != 200:
                    self.failures += 1
                    continue
                self.answers.append(
                    (time.monotonic(), int(response.headers["X-Model-Version"]), time.monotonic() - start)
                )


def wait(condition, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.05)


def state(url: str, version: int) -> str | None:
    versions = httpx.get(f"{url}/model", timeout=30).json()["versions"]
    return next((v["state"] for v in versions if v["version"] == version), None)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rollover", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rollovers", type=int, default=3)
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rollover-"))
    repository, spare = work / "models", work / "spare"
    export_demo_model(repository, seed=0)
    sources = [export_demo_model(spare, seed=i) for i in range(1, args.rollovers + 1)]
    image = make_request_image(work / "request.jpg").read_bytes()
    port = free_port()
    env = {
        "MODEL_BASE_PATH": str(repository),
        "PORT": str(port),
        "MODEL_POLL_SECONDS": str(args.poll_seconds),
    }
    log = (work / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "app"], env=env | _inherit(), stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: _ready(url))
        client = Client(url, image)
        client.start()
        wait(lambda: len(client.answers) >= 50)
        print(f"one version loaded, serving: RSS {rss_mib(server.pid):.0f} MiB")
        for new, source in enumerate(sources, start=2):
            peak = rss_mib(server.pid)
            staging = repository / NAME / f".export-{new}"
            shutil.copytree(source, staging)
            appeared = time.monotonic()
            staging.rename(repository / NAME / str(new))
            while not any(v == new for _, v, _ in client.answers[-5:]):
                peak = max(peak, rss_mib(server.pid))
                time.sleep(0.05)
            first = next(t for t, v, _ in client.answers if v == new)
            while state(url, new - 1) != "END":
                peak = max(peak, rss_mib(server.pid))
                time.sleep(0.05)
            unloaded = time.monotonic()
            slowest = max(s for t, _, s in client.answers if appeared <= t <= unloaded + 1)
            settled = len(client.answers) + 20
            wait(lambda settled=settled: len(client.answers) >= settled)
            print(
                f"version {new}: first answer {first - appeared:.1f} s after the folder appeared "
                f"(poll every {args.poll_seconds:g} s), version {new - 1} unloaded after "
                f"{unloaded - appeared:.1f} s; slowest request meanwhile {slowest * 1000:.0f} ms; "
                f"RSS peak {peak:.0f} MiB, after the unload {rss_mib(server.pid):.0f} MiB"
            )
        client.stop.set()
        client.join(60)
        steady = sorted(s for _, _, s in client.answers)
        median_ms = steady[len(steady) // 2] * 1000
        print(f"{len(client.answers)} requests, {client.failures} failed; median {median_ms:.0f} ms")
        log.flush()
        for line in (work / "server.log").read_text().splitlines():
            if "Loaded model" in line or "Warmed up" in line:
                print("server:", line.split(maxsplit=1)[1])
    finally:
        server.terminate()
        server.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _inherit() -> dict[str, str]:
    import os

    return {
        key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "TF_CPP_MIN_LOG_LEVEL")
    }


if __name__ == "__main__":
    sys.exit(main())
