"""Which worker of a training cluster this process is, from `TF_CONFIG`, TensorFlow's convention.

No TensorFlow here: `python -m training train` reads it first, so a malformed `TF_CONFIG` fails in
the first second, and the deployment tests check the Kubernetes Job's with it.
"""

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Worker:
    """This process's place in the cluster `TF_CONFIG` describes."""

    cluster: dict[str, list[str]]
    task_type: str
    task_id: int

    @property
    def count(self) -> int:
        return sum(len(self.cluster.get(job, [])) for job in ("chief", "worker"))

    @property
    def is_chief(self) -> bool:
        """The `chief` task, or worker 0 when the cluster has none (TensorFlow's convention)."""
        if "chief" in self.cluster:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_id == 0

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_id} ({self.cluster[self.task_type][self.task_id]})"

    def peer_named_in(self, message: str) -> str | None:
        """The first other task of the cluster `message` names, by TensorFlow's device name
        (`/job:worker/replica:0/task:1`) or its address, in words: `worker 1 (host:port)`."""
        for job, task in re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", message):
            addresses = self.cluster.get(job, [])
            if (job, int(task)) != (self.task_type, self.task_id) and int(task) < len(addresses):
                return f"{job} {task} ({addresses[int(task)]})"
        for job, addresses in self.cluster.items():
            for task, address in enumerate(addresses):
                if (job, task) != (self.task_type, self.task_id) and address in message:
                    return f"{job} {task} ({address})"
        return None


def worker_from_environment(environ: Mapping[str, str] | None = None) -> Worker | None:
    """The worker `TF_CONFIG` makes of this process, or None when it is unset (training alone)."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        config = json.loads(raw)
        cluster = {job: list(addresses) for job, addresses in config["cluster"].items()}
        task_type, task_id = config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host:port", ...]}, '
            f'"task": {{"type": "worker", "index": 0}}}} ({error!r}). Received: {raw!r}'
        ) from None
    if task_type not in ("chief", "worker") or not 0 <= task_id < len(cluster.get(task_type, [])):
        raise ValueError(
            f"TF_CONFIG's task must be a chief or a worker listed in its cluster. Received: {config['task']}"
        )
    return Worker(cluster, task_type, task_id)
