"""Versions served side by side, chosen by policy and label, loaded and unloaded while serving."""

import asyncio
import gc
import io
import json
import logging
import shutil
import threading
import time
import weakref
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.errors import ModelLoadError, ModelNotReady, VersionNotFound
from app.main import create_app
from app.runtime.repository import LABELS_FILE, ModelRepository, VersionStatus
from tests.support.http import files, problem, samples
from tests.support.images import png
from tests.support.models import MODEL_NAME

DEADLINE_S = 60


@pytest.fixture
def repository(tmp_path: Path, two_versions: Path):
    """A repository of its own, into which a test copies versions of the session's two models."""

    def add(version: int, source: int = 1) -> Path:
        target = tmp_path / MODEL_NAME / str(version)
        shutil.copytree(two_versions / MODEL_NAME / str(source), target)
        return target

    return tmp_path, add


def corrupt(version_dir: Path) -> None:
    (version_dir / "saved_model.pb").write_bytes(b"\x00garbage" * 100)


@pytest.fixture
def serve(make_settings):
    """Start a ModelRepository on a folder (no watcher: tests call poll() themselves); closed after."""
    started: list[ModelRepository] = []

    def start(base: Path, **settings) -> ModelRepository:
        server = ModelRepository.start(make_settings(model_base_path=base, model_poll_seconds=0, **settings))
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def app_log(caplog, monkeypatch):
    """The service's log records (its `app` logger does not pass them to the root logger)."""
    monkeypatch.setattr(logging.getLogger("app"), "propagate", True)
    return caplog


def states(server: ModelRepository) -> list[tuple[int, str]]:
    return [(status.version, status.state) for status in server.statuses()]


@pytest.mark.parametrize(
    "policy, served",
    [("latest", [3]), ("latest:2", [2, 3]), ("all", [1, 2, 3]), ("specific:1,3", [1, 3])],
)
def test_the_policy_chooses_the_versions_served(repository, serve, policy, served):
    base, add = repository
    for version in (1, 2, 3):
        add(version)

    server = serve(base, model_version_policy=policy)

    assert states(server) == [(version, "AVAILABLE") for version in served]
    assert server.get().model.version == max(served)
    assert [server.get(version).model.version for version in served] == served


def test_model_version_still_serves_one_version(repository, serve):
    base, add = repository
    add(1)
    add(2, source=2)

    server = serve(base, model_version=1)

    assert states(server) == [(1, "AVAILABLE")]


def test_a_new_version_takes_traffic_and_the_old_one_is_unloaded_and_freed(repository, serve):
    base, add = repository
    add(1)
    server = serve(base)
    old_model = weakref.ref(server.get().model)

    add(2, source=2)
    server.poll()

    assert states(server) == [(1, "END"), (2, "AVAILABLE")]
    assert server.get().model.version == 2
    gc.collect()
    assert old_model() is None  # nothing holds the unloaded model any more: its memory is given back
    with pytest.raises(VersionNotFound) as caught:
        server.get(1)
    assert str(caught.value) == f"version 1 of {MODEL_NAME}, which is END; available: 2"


def test_a_request_holding_a_version_finishes_on_it_while_it_is_unloaded(repository, serve):
    base, add = repository
    add(1)
    server = serve(base)
    held = server.get()
    add(2, source=2)

    checking = threading.Thread(target=server.poll)
    checking.start()
    wait_for(lambda: (1, "UNLOADING") in states(server))
    [record] = asyncio.run(held.classify([("a.png", io.BytesIO(png()))]))
    assert record["probabilities"].shape == (3,)
    assert held.model.version == 1
    unloaded = weakref.ref(held)
    del held
    checking.join(DEADLINE_S)

    assert not checking.is_alive()
    assert states(server) == [(1, "END"), (2, "AVAILABLE")]
    assert unloaded() is None


def test_a_corrupt_version_is_reported_while_the_good_one_serves(repository, serve, app_log):
    base, add = repository
    add(1)
    corrupt(add(2))

    server = serve(base)

    [serving, failed] = server.statuses()
    assert serving == VersionStatus(1, "AVAILABLE")
    assert (failed.version, failed.state) == (2, "END")
    assert failed.error.startswith(f"{base / MODEL_NAME / '2'}: not a loadable SavedModel (")
    assert f"Cannot serve version 2: {failed.error}" in app_log.messages
    assert server.get().model.version == 1
    with pytest.raises(VersionNotFound, match=r"version 2 of inception_v2, which is END: .*not a loadable"):
        server.get(2)


def test_a_failed_version_is_tried_again_once_its_folder_changes(repository, serve):
    base, add = repository
    add(1)
    corrupt(add(2))
    server = serve(base)
    server.poll()  # unchanged: not tried again
    assert states(server) == [(1, "AVAILABLE"), (2, "END")]

    shutil.rmtree(base / MODEL_NAME / "2")
    add(2, source=2)
    server.poll()

    assert states(server) == [(1, "END"), (2, "AVAILABLE")]
    assert server.statuses()[1].error is None


def test_an_unfinished_export_is_not_a_version(repository, serve):
    base, add = repository
    add(1)
    (base / MODEL_NAME / ".export-abc123").mkdir()
    (base / MODEL_NAME / "2").mkdir()  # being copied in: no saved_model.pb yet

    server = serve(base)
    server.poll()

    assert states(server) == [(1, "AVAILABLE")]


def test_the_last_available_version_is_kept_when_the_chosen_ones_fail(repository, serve):
    base, add = repository
    add(1)
    server = serve(base)

    corrupt(add(2))
    server.poll()

    assert states(server)[0] == (1, "AVAILABLE")
    assert server.get().model.version == 1


def test_start_up_fails_naming_every_version_that_could_not_be_loaded(repository, make_settings):
    base, add = repository
    corrupt(add(1))

    with pytest.raises(ModelLoadError) as caught:
        ModelRepository.start(make_settings(model_base_path=base, model_poll_seconds=0))

    assert str(caught.value).startswith(f"{base / MODEL_NAME / '1'}: not a loadable SavedModel (")


def test_labels_come_from_the_setting_and_the_file_and_only_point_to_available_versions(
    repository, serve, app_log
):
    base, add = repository
    add(1)
    add(2, source=2)
    server = serve(base, model_version_policy="all", model_version_labels={"stable": 1, "canary": 3})

    assert server.labels() == {"stable": 1}  # version 3 is not available: canary is not in force
    assert server.get(label="stable").model.version == 1
    with pytest.raises(VersionNotFound) as caught:
        server.get(label="canary")
    assert (
        str(caught.value)
        == f"Label 'canary' points to version 3 of {MODEL_NAME}, which is not served; available: 1, 2"
    )
    with pytest.raises(
        VersionNotFound, match="No version of inception_v2 is labelled 'beta'; labels: canary=3, stable=1"
    ):
        server.get(label="beta")

    (base / MODEL_NAME / LABELS_FILE).write_text(json.dumps({"canary": 2}))
    server.poll()

    assert server.labels() == {"canary": 2, "stable": 1}
    assert server.get(label="canary").model.version == 2
    assert [m for m in app_log.messages if m.startswith(("Version labels", "Label "))] == [
        "Version labels in force: stable=1",
        "Label 'canary' points to version 3, which is not available; the label is not in force",
        "Version labels in force: canary=2, stable=1",
    ]


def test_a_bad_labels_file_is_logged_and_the_labels_kept(repository, serve, app_log):
    base, add = repository
    add(1)
    (base / MODEL_NAME / LABELS_FILE).write_text(json.dumps({"stable": 1}))
    server = serve(base)

    (base / MODEL_NAME / LABELS_FILE).write_text("{stable: 1")
    server.poll()

    assert server.labels() == {"stable": 1}
    [line] = [message for message in app_log.messages if LABELS_FILE in message]
    assert line.startswith(f"{base / MODEL_NAME / LABELS_FILE}: Invalid JSON")


def test_no_version_is_not_ready(make_settings):
    server = ModelRepository(make_settings())

    with pytest.raises(ModelNotReady, match="No version of inception_v2 is available"):
        server.get()


@pytest.fixture
def versions_client(repository, make_settings):
    base, add = repository
    add(1)
    add(2, source=2)
    (base / MODEL_NAME / LABELS_FILE).write_text(json.dumps({"stable": 1, "canary": 2}))
    corrupt(add(3))
    settings = make_settings(model_base_path=base, model_version_policy="all", model_poll_seconds=0)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    "query, version",
    [("", 2), ("?version=1", 1), ("?version=2", 2), ("?label=stable", 1), ("?label=canary", 2)],
)
def test_predict_and_model_answer_from_the_version_asked_for(versions_client, query, version):
    predicted = versions_client.post(f"/predict{query}", files=files(("a.png", png())))
    described = versions_client.get(f"/model{query}")

    assert predicted.status_code == 200
    assert predicted.json()["model"] == {"name": MODEL_NAME, "version": version}
    assert predicted.headers["X-Model-Version"] == str(version)
    assert described.json()["version"] == version
    assert described.headers["X-Model-Version"] == str(version)


def test_model_lists_every_version_with_its_state_labels_and_error(versions_client):
    [one, two, three] = versions_client.get("/model").json()["versions"]

    assert one == {"version": 1, "state": "AVAILABLE", "version_labels": ["stable"], "error": None}
    assert two == {"version": 2, "state": "AVAILABLE", "version_labels": ["canary"], "error": None}
    assert (three["version"], three["state"], three["version_labels"]) == (3, "END", [])
    assert "3: not a loadable SavedModel (" in three["error"]


def test_an_unknown_version_or_label_is_404(versions_client):
    response = versions_client.post("/predict?version=7", files=files(("a.png", png())))

    problem(
        response,
        404,
        "urn:inception-v2-service:problem:version-not-found",
        "Model version not found",
        f"version 7 of {MODEL_NAME}, which is not served; available: 1, 2",
    )
    assert versions_client.get("/model?label=beta").status_code == 404


def test_a_version_and_a_label_together_are_refused(versions_client):
    response = versions_client.get("/model?version=1&label=stable")

    problem(
        response,
        422,
        "urn:inception-v2-service:problem:invalid-request",
        "Invalid request",
        "query.label: Give a version or a label, not both",
        errors=[
            {"loc": ["query", "label"], "msg": "Give a version or a label, not both", "type": "value_error"}
        ],
    )


def test_a_failed_version_is_in_the_metrics(versions_client):
    metrics = samples(versions_client)

    assert metrics[("model_version_failed", (("name", MODEL_NAME), ("version", "3")))] == 1
    assert metrics[("model_version_failed", (("name", MODEL_NAME), ("version", "1")))] == 0
    assert metrics[("model_version_state", (("name", MODEL_NAME), ("state", "END"), ("version", "3")))] == 1
    assert metrics[("inference_queue_capacity", (("version", "2"),))] == 256
    assert ("inference_queue_depth", (("version", "3"),)) not in metrics


def wait_for(condition, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)
