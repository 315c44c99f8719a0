"""Training on several workers, as a user runs it: two real `python -m training train` processes on
127.0.0.1, one `TF_CONFIG` each, on tiny generated data."""

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.app.servers import free_port
from tests.support.models import TRAINED_SIZE, write_colour_folder
from tests.training.test_train import ENV

# Both workers run on this machine's 2 cores, beside the rest of the suite.
DEADLINE_S = 420
# A lost peer is noticed by TensorFlow's coordination service (10 s of missed heartbeats) or by the
# next collective that cannot reach it; the bound leaves room for a busy machine.
LOST_PEER_BOUND_S = 90
# One worker and two score the same validation images; two workers see each step's images in
# another order (two shards), so their weights drift apart a little. Out of 18 images, the two may
# differ by at most 3; after the first epoch, their validation losses by at most a factor of 2.
SCORE_TOLERANCE = 3 / 18
FIRST_LOSS_RATIO = 2.0


@dataclass
class Worker:
    process: subprocess.Popen
    stdout: Path
    stderr: Path

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(), self.stderr.read_text()


def train_args(root: Path, *extra: str) -> list[str]:
    # fmt: off
    return [
        "--data-dir", str(root / "data"), "--model-base-path", str(root / "models"), "--model-name", "tiny",
        "--arch", "inception_v2_seed", "--image-size", str(TRAINED_SIZE), "--batch-size", "8",
        "--validation-split", "0.2", "--seed", "7", "--checkpoint-dir", str(root / "checkpoints"), *extra,
    ]
    # fmt: on


def cluster_ports() -> list[int]:
    ports: set[int] = set()
    while len(ports) < 2:
        ports.add(free_port())
    return sorted(ports)


def start_workers(
    root: Path, ports: list[int], args: list[str], run: str, extra: dict[int, list[str]] | None = None
) -> list[Worker]:
    """The same command on each worker (plus `extra[index]`, if any); only TF_CONFIG's task index
    differs. Each worker's temporary folder is its own, so what it leaves behind shows."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(len(ports)):
        tmp = root / f"tmp-{index}"
        tmp.mkdir(exist_ok=True)
        stdout, stderr = root / f"{run}-{index}.out", root / f"{run}-{index}.err"
        env = {
            **ENV,
            "TMPDIR": str(tmp),
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        }
        with stdout.open("w") as out, stderr.open("w") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "training", "train", *args, *(extra or {}).get(index, [])],
                stdout=out,
                stderr=err,
                env=env,
            )
        workers.append(Worker(process, stdout, stderr))
    return workers


def wait_all(workers: list[Worker], deadline: float) -> None:
    for worker in workers:
        try:
            worker.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in workers:
                other.process.kill()
            raise AssertionError(f"a worker ran past its deadline:\n{worker.output()}") from None


def finished_epochs(stdout: str) -> list[int]:
    return [int(line.split()[1].split("/")[0]) for line in stdout.splitlines() if line.startswith("Epoch ")]


def versions(root: Path) -> list[str]:
    model_dir = root / "models" / "tiny"
    return sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []


def scratch_folders(root: Path) -> list[Path]:
    """The non-chief's temporary checkpoint folders (TensorFlow's own temporary files aside: a killed
    process leaves those behind)."""
    return list((root / "tmp-1").glob("training-*"))


def validation(root: Path) -> tuple[float, float]:
    """The exported version's validation accuracy, and its validation loss after the first epoch."""
    metrics = json.loads((root / "models" / "tiny" / "1" / "metadata.json").read_text())["training"][
        "metrics"
    ]
    return metrics["val_accuracy"], metrics["history"]["val_loss"][0]


@pytest.fixture
def colour_data(tmp_path: Path) -> Path:
    write_colour_folder(tmp_path / "data", per_class=30, seed=0)
    return tmp_path


@pytest.mark.parametrize(
    ("tf_config", "extra", "message"),
    [
        ("{not json", [], 'TF_CONFIG must be JSON like {"cluster": {"worker": ["host:port", ...]}'),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
            [],
            "TF_CONFIG's task must be a chief or a worker listed in its cluster. "
            "Received: {'type': 'worker', 'index': 1}",
        ),
        (
            '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}',
            ["--batch-size", "7"],
            "--batch-size (the global batch) must divide evenly among the 2 workers. Received: 7",
        ),
    ],
    ids=["not JSON", "no such task", "uneven batch"],
)
def test_a_cluster_that_cannot_train_is_refused_before_training(colour_data, tf_config, extra, message):
    result = subprocess.run(
        [sys.executable, "-m", "training", "train", *train_args(colour_data, *extra)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**ENV, "TF_CONFIG": tf_config},
    )
    assert result.returncode == 2, result.stderr
    assert f"error: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert versions(colour_data) == []


@pytest.mark.timeout(2 * DEADLINE_S)
def test_two_workers_train_one_model_that_scores_like_one_worker(colour_data, tmp_path_factory):
    alone = tmp_path_factory.mktemp("alone")
    (alone / "data").symlink_to(colour_data / "data")
    args = ["--epochs", "3", "--patience", "3"]
    single = subprocess.run(
        [sys.executable, "-m", "training", "train", *train_args(alone, *args)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=ENV,
    )
    assert single.returncode == 0, single.stderr

    workers = start_workers(colour_data, cluster_ports(), train_args(colour_data, *args), "run")
    wait_all(workers, time.monotonic() + DEADLINE_S)
    (chief_out, chief_err), (other_out, other_err) = (worker.output() for worker in workers)
    assert [worker.process.returncode for worker in workers] == [0, 0], chief_err + other_err

    # One model: the workers print the same figures for every epoch (each epoch's are summed over both).
    chief_epochs = [line for line in chief_out.splitlines() if " - loss: " in line]
    other_epochs = [line for line in other_out.splitlines() if " - loss: " in line]
    assert len(chief_epochs) == 3
    assert [line.split("/step - ")[1] for line in chief_epochs] == [
        line.split("/step - ")[1] for line in other_epochs
    ]
    # Each read its own half of the 72 training images (the other 18 validate): 36 a worker, in
    # 9 steps of 4 (the global batch of 8, halved).
    assert "worker 0 (127.0.0.1:" in chief_err and "reads 36 of the 72 training images" in chief_err
    assert "worker 1 (127.0.0.1:" in other_err and "reads 36 of the 72 training images" in other_err
    assert all(line.startswith("9/9 ") for line in chief_epochs)

    # Only the chief exported, once; the other left nothing behind.
    assert versions(colour_data) == ["1"]
    assert f"Exported {colour_data / 'models' / 'tiny' / '1'}" in chief_out
    assert "Exported" not in other_out
    assert "the chief exports the version" in other_out
    assert not (colour_data / "checkpoints").exists()
    assert scratch_folders(colour_data) == []

    (accuracy, first_loss), (accuracy_alone, first_loss_alone) = validation(colour_data), validation(alone)
    assert abs(accuracy - accuracy_alone) <= SCORE_TOLERANCE, (accuracy, accuracy_alone)
    assert 1 / FIRST_LOSS_RATIO <= first_loss / first_loss_alone <= FIRST_LOSS_RATIO, (
        first_loss,
        first_loss_alone,
    )


@pytest.mark.parametrize("victim", [1, 0], ids=["a worker", "the chief"])
@pytest.mark.timeout(3 * DEADLINE_S)
def test_a_killed_worker_stops_the_other_and_the_same_commands_resume(colour_data, victim):
    args = train_args(colour_data, "--epochs", "3", "--patience", "3")
    ports = cluster_ports()
    workers = start_workers(colour_data, ports, args, "first")
    state = colour_data / "checkpoints" / "state.json"
    deadline = time.monotonic() + DEADLINE_S
    while not state.exists():  # the chief has finished epoch 1
        assert all(worker.process.poll() is None for worker in workers), [w.output() for w in workers]
        if time.monotonic() > deadline:
            for worker in workers:
                worker.process.kill()
            raise AssertionError(f"no checkpoint within {DEADLINE_S} s: {[w.output() for w in workers]}")
        time.sleep(0.2)
    workers[victim].process.kill()
    killed_at = time.monotonic()
    survivor = workers[1 - victim]
    wait_all([survivor], killed_at + LOST_PEER_BOUND_S)
    stopped_after = time.monotonic() - killed_at

    stdout, stderr = survivor.output()
    assert survivor.process.returncode == 1, stderr
    lost = f"worker {victim} (127.0.0.1:{ports[victim]})"
    assert f"error: worker {1 - victim} (127.0.0.1:{ports[1 - victim]}) lost {lost}" in stderr
    assert "Nothing was exported" in stderr
    assert versions(colour_data) == []
    assert stopped_after < LOST_PEER_BOUND_S
    if victim == 0:  # the surviving non-chief deleted its temporary checkpoints
        assert scratch_folders(colour_data) == []
    finished = json.loads(state.read_text())["epoch"]
    assert 1 <= finished < 3

    if victim == 1:  # a worker that cannot see the chief's checkpoints would start over: refused
        apart = start_workers(
            colour_data, ports, args, "apart", {1: ["--checkpoint-dir", str(colour_data / "own")]}
        )
        wait_all(apart, time.monotonic() + DEADLINE_S)
        for index, worker in enumerate(apart):
            stdout, stderr = worker.output()
            assert worker.process.returncode == 2, stderr
            assert f"error: The workers would resume from different epochs (0, {finished}; " in stderr
            assert f"from {finished if index == 0 else 0}): --checkpoint-dir " in stderr
            assert "must be one folder all workers read, on shared storage." in stderr
        assert versions(colour_data) == []

    rerun = start_workers(colour_data, ports, args, "rerun")
    wait_all(rerun, time.monotonic() + DEADLINE_S)
    for worker in rerun:
        stdout, stderr = worker.output()
        assert worker.process.returncode == 0, stderr
        assert f"Resuming after epoch {finished} from {colour_data / 'checkpoints'}" in stderr
        assert finished_epochs(stdout) == list(range(finished + 1, 4))
    assert versions(colour_data) == ["1"]
    assert not (colour_data / "checkpoints").exists()
    # The rerun deleted its temporary checkpoints, and those a killed non-chief left.
    assert scratch_folders(colour_data) == []
