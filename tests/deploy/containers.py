"""Drive the real Docker Engine from the image tests: build, run, wait on Docker's health status, stop.

Every wait polls with a deadline. `docker` is Debian's 20.10 CLI (/usr/bin/docker) when present: a
newer CLI without the buildx plugin cannot build with BuildKit. DOCKER overrides it.
"""

import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from tests.deploy.manifests import ROOT

DOCKER = os.environ.get("DOCKER") or ("/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker")
IMAGE = os.environ.get("IMAGE", "inception-v2-service")  # build-images.sh tags IMAGE too
BUILD_SCRIPT = ROOT / "deploy" / "docker" / "build-images.sh"
# The image's start period: Docker counts no failure before it, so it bounds the time to healthy.
START_PERIOD_S = 180


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def require_docker() -> None:
    """Fail, never skip, when there is no Docker: CI installs and starts it (.ci/run)."""
    assert shutil.which(DOCKER), f"{DOCKER} not found: apt-get install docker.io (see docs/deployment.md)"
    info = subprocess.run([DOCKER, "info"], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, f"the Docker daemon does not answer (start dockerd):\n{info.stderr}"


def build_images(targets: list[str], demo_epochs: str) -> float:
    """Build the targets with the air-gapped build script; return the seconds it took."""
    started = time.monotonic()
    env = os.environ | {"DOCKER": DOCKER, "BUILD_ARGS": f"--build-arg DEMO_EPOCHS={demo_epochs}"}
    result = subprocess.run(
        [str(BUILD_SCRIPT), *targets], capture_output=True, text=True, env=env, timeout=60 * 60
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return time.monotonic() - started


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container).stdout)[0]


def wait_healthy(container: str, timeout_s: float = START_PERIOD_S + 60) -> float:
    """Poll Docker's own health status until `healthy`; return the seconds since the container started."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = inspect(container)["State"]
        if state["Health"]["Status"] == "healthy":
            break
        assert state["Running"], f"the container exited ({state['ExitCode']}):\n{logs(container)}"
        assert state["Health"]["Status"] == "starting", f"{state['Health']}\n{logs(container)}"
        assert time.monotonic() < deadline, f"not healthy after {timeout_s} s:\n{logs(container)}"
        time.sleep(0.5)
    return seconds_since(state["StartedAt"])


def seconds_since(docker_time: str) -> float:
    """Seconds from a Docker timestamp (RFC 3339, nanoseconds) until now, by the daemon's clock."""
    from datetime import datetime

    whole, _, fraction = docker_time.rstrip("Z").partition(".")
    started = datetime.fromisoformat(whole + "+00:00").timestamp() + float(f"0.{fraction or 0}")
    return time.time() - started


def logs(container: str) -> str:
    result = docker("logs", container, check=False)
    return result.stdout + result.stderr


def published_url(container: str, port: str = "8000/tcp") -> str:
    (binding,) = inspect(container)["NetworkSettings"]["Ports"][port]
    assert binding["HostIp"] == "127.0.0.1", "published on loopback only"
    return f"http://127.0.0.1:{binding['HostPort']}"


def jpeg(kind: str = "circle", size: int = 96, seed: int = 0) -> bytes:
    """A demo-data shape as a JPEG file, as a user would send it."""
    from training.demo_data import draw_shape

    buffer = io.BytesIO()
    draw_shape(kind, size, np.random.default_rng(seed)).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def readiness(url: str) -> int | str:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code
    except httpx.TransportError as error:
        return type(error).__name__


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.05) -> float:
    """Poll `predicate` every `every_s` until true; return the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s} s"
        time.sleep(every_s)
    return time.monotonic() - started


@dataclass
class SlowUploads:
    """Requests whose bodies trickle in, so they are admitted and still in flight when a stop begins."""

    responses: list[httpx.Response | Exception]
    threads: list[threading.Thread]

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "uploads still running"


@contextmanager
def slow_uploads(url: str, count: int, seconds: float = 3.0) -> Iterator[SlowUploads]:
    boundary = "image-test"
    responses: list[httpx.Response | Exception] = []

    def upload(i: int) -> None:
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{i}.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode()
            + jpeg(seed=i)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        chunks = [body[j : j + len(body) // 20 + 1] for j in range(0, len(body), len(body) // 20 + 1)]

        def trickle() -> Iterator[bytes]:
            for chunk in chunks:
                time.sleep(seconds / len(chunks))
                yield chunk

        headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
        try:
            responses.append(httpx.post(f"{url}/predict", content=trickle(), headers=headers, timeout=60))
        except Exception as error:  # recorded: the test asserts every upload got its answer
            responses.append(error)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    yield SlowUploads(responses, threads)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
