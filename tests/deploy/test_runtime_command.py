"""Run the runtime image's own CMD, ENV and health checks outside Docker, against a real model."""

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


def test_health_checks_fail_until_the_model_is_ready_then_pass_until_sigterm(
    stages, compose, service_env, tmp_path
):
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

        server.send_signal(signal.SIGTERM)
        grace = seconds(compose["services"][SERVICE]["stop_grace_period"])
        assert server.wait(timeout=grace) == 0, log_path.read_text()
        for name in checks:
            assert not healthy(name), f"{name} passes after the service has exited"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
