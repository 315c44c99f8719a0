"""A new version goes live without a restart: a real server under load while the trainer exports.

The issue's acceptance test: `python -m app` serves version 1 to several clients without pause;
`python -m training train` writes version 2 into its repository; answers move to version 2 with no
failed request; then a corrupt version 3 is dropped in, reported, and version 2 keeps serving.
"""

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.app.servers import Server, start_server, stop, wait_until_ready
from tests.support import ROOT
from tests.support.http import samples
from tests.support.images import encode, noise
from tests.support.models import MODEL_NAME

CLIENTS = 3
DEADLINE_S = 300


@dataclass
class Answers:
    """What the clients got: (version in the body, version in the header) per answer, and failures."""

    versions: list[list[tuple[int, int]]] = field(default_factory=lambda: [[] for _ in range(CLIENTS)])
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def latest(self) -> set[int]:
        return {answers[-1][0] for answers in self.versions if answers}


def keep_predicting(server: Server, answers: Answers, client: int, image: bytes) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        while not answers.stop.is_set():
            try:
                response = http.post("/predict", files={"file": ("photo.jpg", image, "image/jpeg")})
            except httpx.HTTPError as exc:
                answers.failures.append(repr(exc))
                continue
            if response.status_code != 200:
                answers.failures.append(f"{response.status_code} {response.text}")
                continue
            answers.versions[client].append(
                (response.json()["model"]["version"], int(response.headers["X-Model-Version"]))
            )


def wait_for(condition: Callable[[], bool], what: str, server: Server, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert server.process.poll() is None, server.output()
        assert time.monotonic() < deadline, f"{what}: not before the deadline\n{server.output()}"
        time.sleep(0.2)


def versions(server: Server) -> dict[int, dict]:
    return {v["version"]: v for v in httpx.get(f"{server.url}/model", timeout=30).json()["versions"]}


@pytest.fixture
def repository(tmp_path: Path, model_repository: Path) -> Path:
    shutil.copytree(model_repository / MODEL_NAME, tmp_path / "models" / MODEL_NAME)
    return tmp_path / "models"


def train(repository: Path, work: Path) -> None:
    """Train the smallest network one epoch on generated shapes, exporting into `repository`."""

    def run(*args: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "training", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
        assert result.returncode == 0, result.stderr

    run("make-demo-data", "--out", str(work / "data"), "--images-per-class", "20", "--size", "40")
    run(
        "train",
        *("--data-dir", str(work / "data"), "--model-base-path", str(repository)),
        *("--model-name", MODEL_NAME, "--epochs", "1", "--image-size", "32"),
        *("--arch", "inception_v2_seed", "--checkpoint-dir", str(work / "checkpoints")),
    )


def test_a_trained_version_takes_over_under_load_and_a_corrupt_one_is_reported(repository, tmp_path):
    server = start_server(repository, tmp_path / "server.log", MODEL_POLL_SECONDS="0.5", MAX_BATCH_SIZE="8")
    answers = Answers()
    image = encode(noise(64, 48, seed=3), "JPEG", quality=90)
    clients = [
        threading.Thread(target=keep_predicting, args=(server, answers, client, image))
        for client in range(CLIENTS)
    ]
    try:
        wait_until_ready(server)
        for client in clients:
            client.start()
        wait_for(lambda: answers.latest() == {1}, "every client answered by version 1", server)

        train(repository, tmp_path)
        wait_for(lambda: answers.latest() == {2}, "every client answered by version 2", server)
        wait_for(lambda: versions(server)[1]["state"] == "END", "version 1 unloaded", server)

        staging = repository / MODEL_NAME / ".export-corrupt"  # dropped in as the exporter does
        shutil.copytree(repository / MODEL_NAME / "2", staging)
        (staging / "saved_model.pb").write_bytes(b"\x00garbage" * 100)
        staging.rename(repository / MODEL_NAME / "3")
        wait_for(lambda: 3 in versions(server), "version 3 reported", server)
        served_after = sum(map(len, answers.versions))
        wait_for(lambda: sum(map(len, answers.versions)) > served_after + CLIENTS, "answers go on", server)
        reported = versions(server)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            metrics = samples(http)
    finally:
        answers.stop.set()
        for client in clients:
            if client.is_alive():
                client.join(60)
        exit_code = stop(server)

    assert answers.failures == []
    for answered in answers.versions:
        assert all(body == header for body, header in answered)  # every answer names its version
        moved = [version for version, _ in answered]
        assert moved == sorted(moved) and moved[0] == 1 and moved[-1] == 2  # 1 then 2, never back
    assert [(v["version"], v["state"]) for v in reported.values()] == [
        (1, "END"),
        (2, "AVAILABLE"),
        (3, "END"),
    ]
    assert reported[3]["error"].startswith(f"{repository / MODEL_NAME / '3'}: not a loadable SavedModel (")
    assert current_states(metrics) == {1: "END", 2: "AVAILABLE", 3: "END"}
    assert metrics[("model_version_failed", (("name", MODEL_NAME), ("version", "3")))] == 1
    [line] = [line for line in server.output().splitlines() if "Cannot serve version 3" in line]
    assert line.endswith(f"Cannot serve version 3: {reported[3]['error']}")
    assert exit_code == 0


def current_states(metrics: dict[tuple, float]) -> dict[int, str]:
    """Each version's state, as /metrics reports it."""
    return {
        int(dict(labels)["version"]): dict(labels)["state"]
        for (name, labels), value in metrics.items()
        if name == "model_version_state" and value == 1
    }
