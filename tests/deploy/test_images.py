"""The images built and run for real on Docker Engine: health, a JPEG through the published port, the
user and the read-only root file system, a quiet start, and `docker stop` draining in-flight requests."""

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.containers import (
    DOCKER,
    docker,
    inspect,
    jpeg,
    logs,
    published_url,
    readiness,
    slow_uploads,
    wait_for,
    wait_healthy,
)
from tests.support.logs import error_lines

pytestmark = pytest.mark.image

SHUTDOWN_DELAY_S = 5


def run(image: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Start a container as production would: read-only root, a tmpfs for /tmp, loopback port."""
    name = f"inception-v2-test-{uuid.uuid4().hex[:8]}"
    options = [f"--env={key}={value}" for key, value in (env or {}).items()]
    docker("run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp", "--publish",
           "127.0.0.1::8000", *options, *args, image)  # fmt: skip
    return name


@pytest.fixture(scope="module")
def demo(images) -> Iterator[tuple[str, float]]:
    """The demo image, healthy: (container, seconds from start to healthy)."""
    container = run(images["demo"])
    try:
        yield container, wait_healthy(container)
    finally:
        docker("rm", "--force", container, check=False)


def readable_copy(model_repository: Path, tmp_path: Path) -> Path:
    """The test model where the image's user (uid 10001) can read it."""
    models = shutil.copytree(model_repository, tmp_path / "models")
    for path in [models, *models.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return models


def test_demo_image_turns_healthy_and_classifies_a_jpeg(demo):
    container, to_healthy = demo
    url = published_url(container)
    model = httpx.get(f"{url}/model", timeout=10).json()
    response = httpx.post(f"{url}/predict", files={"file": ("circle.jpg", jpeg(), "image/jpeg")}, timeout=30)

    assert (model["name"], model["version"]) == ("inception_v2", 1)
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["filename"] == "circle.jpg"
    assert {p["label"] for p in result["predictions"]} <= set(model["labels"])
    print(f"\ndemo image healthy {to_healthy:.1f} s after start")


def test_demo_runs_as_uid_10001_on_a_read_only_root(demo):
    container, _ = demo
    config = inspect(container)["HostConfig"]
    status = docker("exec", container, "cat", "/proc/1/status").stdout
    write_root = docker("exec", container, "touch", "/srv/file", check=False)
    write_tmp = docker("exec", container, "touch", "/tmp/file", check=False)
    processes = docker("exec", container, "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout

    assert config["ReadonlyRootfs"] is True
    assert re.search(r"^Uid:\s+10001\s+10001\s+10001\s+10001$", status, re.MULTILINE), status
    assert re.search(r"^Gid:\s+10001\s", status, re.MULTILINE), status
    assert "Read-only file system" in write_root.stderr
    assert write_tmp.returncode == 0, write_tmp.stderr
    assert processes.count("python -m app ") == 1, f"one server process: {processes}"


def test_a_cpu_start_logs_no_error_lines(demo):
    container, _ = demo
    output = logs(container)
    assert "Application startup complete" in output
    assert error_lines(output) == [], output


def test_runtime_image_has_the_cpu_wheel_and_no_training_extra(images):
    def imports(image: str, code: str) -> subprocess.CompletedProcess:
        return docker("run", "--rm", "--entrypoint", "python", image, "-c", code, check=False)

    runtime = imports(images["runtime"], "import importlib.metadata as m; print(m.version('tensorflow-cpu'))")
    assert runtime.stdout.strip() == "2.21.0", runtime.stderr
    assert imports(images["runtime"], "import matplotlib").returncode == 1
    assert imports(images["trainer"], "import matplotlib").returncode == 0
    leftovers = docker(
        "run", "--rm", "--entrypoint", "find", images["runtime"], "/opt/venv", "-name", "__pycache__",
        "-o", "-name", "tests", "-type", "d", "-o", "-path", "*/tensorflow/include",
    )  # fmt: skip
    assert leftovers.stdout == ""


def test_docker_stop_drains_behind_a_503_readiness(images, model_repository, tmp_path):
    models = readable_copy(model_repository, tmp_path)
    container = run(
        images["runtime"],
        "--volume", f"{models}:/models:ro",
        env={"SHUTDOWN_DELAY_S": str(SHUTDOWN_DELAY_S), "SHUTDOWN_TIMEOUT_S": "30"},
    )  # fmt: skip
    try:
        to_healthy = wait_healthy(container)
        url = published_url(container)
        in_flight = 6
        with slow_uploads(url, in_flight, seconds=SHUTDOWN_DELAY_S + 3) as uploads:
            metrics = f"http_requests_in_progress {in_flight + 1}.0"  # the uploads and this request
            wait_for(lambda: metrics in httpx.get(f"{url}/metrics").text, 30, "uploads admitted")

            started = time.monotonic()
            stop = subprocess.Popen([DOCKER, "stop", "--time", "60", container], stdout=subprocess.DEVNULL)
            to_503 = wait_for(lambda: readiness(url) == 503, 30, "/readyz answering 503")
            late = httpx.post(f"{url}/predict", files={"file": ("late.jpg", jpeg(seed=9), "image/jpeg")})
            late_answered = time.monotonic() - started
            uploads.join(timeout_s=90)
        assert stop.wait(timeout=90) == 0
        stopped = time.monotonic() - started

        state = inspect(container)["State"]
        assert late.status_code == 200, late.text
        assert [getattr(r, "status_code", r) for r in uploads.responses] == [200] * in_flight
        assert state["ExitCode"] == 0 and not state["OOMKilled"], logs(container)
        assert "Finished server process" in logs(container)
        print(
            f"\nruntime healthy {to_healthy:.1f} s after start; after `docker stop`: /readyz 503 in "
            f"{to_503:.2f} s, a new request answered at {late_answered:.2f} s, {in_flight} in-flight "
            f"uploads answered 200, exit code 0, stopped in {stopped:.1f} s"
        )
    finally:
        docker("rm", "--force", container, check=False)
