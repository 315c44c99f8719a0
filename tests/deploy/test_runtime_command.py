"""Run the runtime image's own CMD, ENV and health checks outside Docker, against a real model."""

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from tests.app.servers import wait_for
from tests.deploy.manifests import (
    ROOT,
    command,
    compose_environment,
    compose_healthcheck_command,
    parse_healthcheck,
    seconds,
    stage_env,
    stage_last,
    substitute,
)

SERVICE = "inception-v2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def host_environment(container_env: dict[str, str], paths: dict[str, str]) -> dict[str, str]:
    """The container's environment on this machine: its paths mapped to ours, `$PATH` and such from ours."""
    env = dict(os.environ)
    for key, value in container_env.items():
        for container_path, host_path in paths.items():
            value = value.replace(container_path, host_path)
        env[key] = substitute(value, os.environ)
    return env


def readyz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def requests_in_progress(port: int) -> float:
    """The service's own count of requests being served, read from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("http_requests_in_progress "):
                return float(line.split()[1])
    raise AssertionError("/metrics has no http_requests_in_progress")


def start_upload(port: int, image: bytes) -> tuple[socket.socket, bytes]:
    """Send a /predict request all but the end of its body; return the socket and what is left to send."""
    boundary = "deploy-test"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="shape.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head.encode() + body[:-10])
    return sock, body[-10:]


def finish_upload(sock: socket.socket, rest: bytes) -> str:
    """Send the rest of the body and return the response's status line."""
    with sock:
        sock.sendall(rest)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return response.split(b"\r\n", 1)[0].decode()


def png(size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def child_processes(pid: int) -> list[str]:
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [child for task in tasks for child in (task / "children").read_text().split()]


@pytest.fixture
def service_env(stages, compose, model_repository) -> dict[str, str]:
    """What `docker compose up` gives the container (image ENV, then compose's settings at their defaults),
    on a free port of 127.0.0.1 instead of 0.0.0.0:8000."""
    container_env = stage_env(stages, "runtime") | compose_environment(compose["services"][SERVICE], {})
    paths = {
        "/opt/venv/bin": str(Path(sys.executable).parent),
        "/srv": str(ROOT),
        "/models": str(model_repository),
    }
    return host_environment(container_env, paths) | {"HOST": "127.0.0.1", "PORT": str(free_port())}


def test_health_checks_pass_only_while_the_service_is_ready(stages, compose, service_env, tmp_path):
    image_check = parse_healthcheck(stage_last(stages, "runtime", "HEALTHCHECK").arguments)
    compose_check = compose_healthcheck_command(compose["services"][SERVICE]["healthcheck"]["test"])
    checks = {"Dockerfile HEALTHCHECK": image_check.command, "compose healthcheck": compose_check}
    port = int(service_env["PORT"])

    def healthy(name: str) -> bool:
        result = subprocess.run(
            checks[name],
            env=service_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=seconds(image_check.options["timeout"]),
        )
        assert result.returncode in (0, 1), f"{name}: Docker reads only 0 and 1. {result.stderr}"
        assert result.stderr == "", f"{name} is broken: {result.stderr}"
        return result.returncode == 0

    for name in checks:
        assert not healthy(name), f"{name} passes with no server running"

    log_path = tmp_path / "service.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            command(stage_last(stages, "runtime", "CMD").arguments),
            env=service_env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        started = time.monotonic()
        for name in checks:
            assert not healthy(name), f"{name} passes while the model is still loading"

        start_period = seconds(image_check.options["start-period"])
        while not healthy("Dockerfile HEALTHCHECK"):
            assert server.poll() is None, f"the service exited ({server.returncode}):\n{log_path.read_text()}"
            assert time.monotonic() - started < start_period, f"not ready in time:\n{log_path.read_text()}"
            time.sleep(0.5)
        assert readyz(port) == 200
        assert healthy("compose healthcheck")
        assert child_processes(server.pid) == [], "one server process, no workers"

        # A request admitted before SIGTERM is drained; the health checks fail from SIGTERM on, while
        # the listener stays open for SHUTDOWN_DELAY_S so that a load balancer sees /readyz say 503.
        upload, rest = start_upload(port, png())
        wait_for(lambda: requests_in_progress(port) >= 2, "the upload in progress")  # it and /metrics
        server.send_signal(signal.SIGTERM)
        assert float(service_env["SHUTDOWN_DELAY_S"]) > 0
        wait_for(lambda: readyz(port) == 503, "/readyz answering 503 after SIGTERM")
        assert server.poll() is None, "the service exited with a request in flight"
        for name in checks:
            assert not healthy(name), f"{name} passes while the service is shutting down"
        assert finish_upload(upload, rest) == "HTTP/1.1 200 OK"
        grace = seconds(compose["services"][SERVICE]["stop_grace_period"])
        assert server.wait(timeout=grace) == 0, log_path.read_text()
        for name in checks:
            assert not healthy(name), f"{name} passes after the service has exited"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
