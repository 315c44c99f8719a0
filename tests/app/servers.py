"""Real `python -m app` processes on 127.0.0.1 for the tests that are about serving."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT

BOUNDARY = "test-boundary"


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model_repository: Path, log: Path, **settings: str) -> Server:
    """`python -m app` on a free port; it exits at once on SIGTERM unless SHUTDOWN_DELAY_S says otherwise.

    TensorFlow's log level is left to the service, as on a machine where nobody has set it.
    """
    port = free_port()
    env = os.environ | {"MODEL_BASE_PATH": str(model_repository), "PORT": str(port), "SHUTDOWN_DELAY_S": "0"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env |= settings
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return Server(process, port, log)


def wait_until_ready(server: Server, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.output()
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not ready after {timeout_s} s:\n{server.output()}")


def stop(server: Server) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=60)


@contextmanager
def running_server(model_repository: Path, log: Path, **settings: str) -> Iterator[Server]:
    """A started server, ready to answer; stopped on exit whatever happened."""
    server = start_server(model_repository, log, **settings)
    try:
        wait_until_ready(server)
        yield server
    finally:
        stop(server)


def multipart(filename: str, data: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def read_until_closed(connection: socket.socket) -> str:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received.decode()


def metric(server: Server, name: str, **labels: str) -> float | None:
    """One sample of the server's /metrics, or None if it has none with those labels."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)
