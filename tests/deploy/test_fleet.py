"""The fleet on Docker swarm (deploy/swarm/). Without Docker: the stack file and the balancer's image
and configuration agree with the service's shutdown. With it (`-m image`), `make fleet` run for real:
3 replicas of the demo image behind HAProxy; under a steady load through the balancer, a rolling
restart and a killed replica cost no request; a new model version written to the shared volume
reaches every replica."""

import csv
import io
import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import yaml

from tests.deploy.containers import DOCKER, START_PERIOD_S, docker, free_port, jpeg, wait_for
from tests.deploy.manifests import ROOT, compose_environment, seconds
from tests.support.models import LABELS, MODEL_NAME
from tests.tools import tool

SWARM_DIR = ROOT / "deploy" / "swarm"
STACK_FILE = SWARM_DIR / "stack.yml"
HAPROXY_CFG = SWARM_DIR / "haproxy" / "haproxy.cfg"
STACK = "inception-v2"
API = f"{STACK}_api"
REPLICAS = 3
# A replica's start: at most the stack's health check start period, with room for a loaded machine.
REPLICA_START_S = (
    seconds(yaml.safe_load(STACK_FILE.read_text())["services"]["api"]["healthcheck"]["start_period"]) + 60
)


def test_stack_file_follows_the_compose_specification_and_the_balancer_image_passes_hadolint():
    for command in (
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(STACK_FILE)],
        [tool("hadolint"), "--no-color", str(SWARM_DIR / "haproxy" / "Dockerfile")],
    ):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_only_the_balancer_publishes_and_both_services_avoid_ipvs():
    services = yaml.safe_load(STACK_FILE.read_text())["services"]
    api, balancer = services["api"], services["lb"]

    assert "ports" not in api
    assert [(p["target"], p["published"], p["mode"]) for p in balancer["ports"]] == [
        (8080, "${FLEET_PORT:-8080}", "host")
    ]
    assert api["deploy"]["endpoint_mode"] == balancer["deploy"]["endpoint_mode"] == "dnsrr"
    assert re.search(r"^\s*server-template api \d+ tasks\.api:8000$", HAPROXY_CFG.read_text(), re.MULTILINE)


def test_a_stopping_replica_leaves_the_pool_before_it_stops_serving_and_drains_before_sigkill():
    api = yaml.safe_load(STACK_FILE.read_text())["services"]["api"]
    settings = compose_environment(api, {})
    delay, drain = float(settings["SHUTDOWN_DELAY_S"]), float(settings["SHUTDOWN_TIMEOUT_S"])
    check = re.search(
        r"^\s*default-server check inter (\d+)s fall (\d+) ", HAPROXY_CFG.read_text(), re.MULTILINE
    )
    assert check, "HAProxy checks every replica"
    taken_out = int(check[1]) * int(check[2])  # checks every `inter`, out after `fall` failures

    assert re.search(r"^\s*http-check send meth GET uri /readyz ", HAPROXY_CFG.read_text(), re.MULTILINE)
    assert taken_out <= delay / 2, "out of the pool well within the shutdown delay"
    assert api["stop_signal"] == "SIGTERM"
    assert seconds(api["stop_grace_period"]) >= delay + drain + 10
    assert seconds(api["healthcheck"]["start_period"]) >= START_PERIOD_S, "at least the image's start period"
    update = api["deploy"]["update_config"]
    assert (update["parallelism"], update["order"]) == (1, "start-first"), "3 replicas serve throughout"


@dataclass
class Fleet:
    url: str
    image: str
    volume: str


def make(target: str, **variables: str) -> subprocess.CompletedProcess:
    """A Makefile target, as a user runs it."""
    return subprocess.run(
        ["make", "--no-print-directory", target, *(f"{name}={value}" for name, value in variables.items())],
        cwd=ROOT, env=os.environ | {"DOCKER": DOCKER}, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip


@pytest.fixture(scope="module")
def fleet(images) -> Iterator[Fleet]:
    """The stack deployed by `make fleet` on its own port and model volume; removed afterwards, and the
    engine left as it was found: if `make fleet` made the swarm, it is left, and the bridge that swarm
    mode adds (docker_gwbridge, which leaving keeps) removed."""
    swarm = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    bridge = docker("network", "ls", "--quiet", "--filter", "name=^docker_gwbridge$").stdout.strip()
    if swarm == "active":
        stacks = docker("stack", "ls", "--format", "{{.Name}}").stdout.split()
        assert STACK not in stacks, f"a stack {STACK} runs here: the test would replace it (make fleet-down)"
    port, volume = free_port(), f"inception-v2-test-{uuid.uuid4().hex[:8]}"
    try:
        up = make("fleet", IMAGE=images["demo"], FLEET_PORT=str(port), MODELS_VOLUME=volume)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield Fleet(f"http://127.0.0.1:{port}", images["demo"], volume)
    finally:
        down = make("fleet-down", MODELS_VOLUME=volume)
        docker("volume", "rm", volume, check=False)
        if swarm == "inactive":
            docker("swarm", "leave", "--force", check=False)
            if not bridge:
                docker("network", "rm", "docker_gwbridge", check=False)
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]


def replicas() -> str:
    """The api service's replicas as `docker service ls` shows them: running/desired."""
    return docker("service", "ls", "--filter", f"name={API}", "--format", "{{.Name}} {{.Replicas}}").stdout


def healthy_replicas() -> set[str]:
    """The api service's containers that Docker's health check passes."""
    found = docker("ps", "--quiet", "--filter", f"label=com.docker.swarm.service.name={API}",
                   "--filter", "health=healthy")  # fmt: skip
    return set(found.stdout.split())


def in_the_container(container: str, url: str) -> str:
    """GET a URL from inside a container of the fleet (its image has Python, not curl)."""
    code = (
        f"import sys, urllib.request as u; sys.stdout.write(u.urlopen({url!r}, timeout=10).read().decode())"
    )
    return docker("exec", container, "python3", "-c", code).stdout


def balancer() -> str:
    """The balancer's container."""
    (container,) = docker(
        "ps", "--quiet", "--filter", f"label=com.docker.swarm.service.name={STACK}_lb"
    ).stdout.split()
    return container


def balancer_stats() -> list[dict[str, str]]:
    """HAProxy's statistics (its CSV), one row per frontend, server and backend."""
    return list(
        csv.DictReader(io.StringIO(in_the_container(balancer(), "http://127.0.0.1:8404/stats;csv")[2:]))
    )


def balancer_log() -> str:
    """The balancer's log: the requests that failed, were retried or redispatched, and each replica's
    comings and goings."""
    output = docker("logs", balancer())
    return output.stdout + output.stderr


def pool() -> dict[str, str]:
    """The api backend's servers that DNS gave an address, and their state (UP, DOWN, ...)."""
    servers = [row for row in balancer_stats() if row["pxname"] == "api" and row["svname"].startswith("api")]
    return {row["svname"]: row["status"] for row in servers if row["status"] != "MAINT (resolution)"}


def whole() -> bool:
    """3 replicas running and healthy for Docker, and each of them UP in HAProxy."""
    return (
        replicas().split() == [API, f"{REPLICAS}/{REPLICAS}"] and list(pool().values()) == ["UP"] * REPLICAS
    )


@dataclass
class Load:
    """Clients posting a JPEG to /predict through the balancer, each in a loop, until stopped."""

    url: str
    clients: int = 2
    limit_s: float = 1800
    served: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> "Load":
        self._threads = [threading.Thread(target=self._client, args=(i,)) for i in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in self._threads), "a client is still waiting"

    def _client(self, seed: int) -> None:
        image = {"file": ("shape.jpg", jpeg(seed=seed), "image/jpeg")}
        deadline = time.monotonic() + self.limit_s
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.post(f"{self.url}/predict", files=image)
                    failure = (
                        None if response.status_code == 200 else f"{response.status_code}: {response.text}"
                    )
                except httpx.HTTPError as error:
                    failure = f"{type(error).__name__}: {error}"
                with self._lock:
                    if failure is None:
                        self.served += 1
                    else:
                        self.failures.append(failure)

    def wait_served(self, more: int, timeout_s: float = 120) -> None:
        target = self.served + more
        wait_for(lambda: self.served >= target, timeout_s, f"{more} more requests served", every_s=0.2)


@pytest.mark.image
@pytest.mark.timeout(2400)
def test_a_rolling_update_and_a_killed_replica_cost_no_request(fleet):
    wait_for(whole, 120, "3 replicas UP in the balancer", every_s=1)
    before = healthy_replicas()
    with Load(fleet.url) as load:
        load.wait_served(20)
        started = time.monotonic()
        update = docker(
            "service", "update", "--force", "--detach=false", API, timeout=REPLICAS * REPLICA_START_S
        )
        rolled_s = time.monotonic() - started
        assert "Service converged" in update.stdout, update.stdout + update.stderr
        wait_for(whole, 120, "3 replicas UP in the balancer after the update", every_s=1)
        served_while_rolling = load.served
        rolled = healthy_replicas()

        load.wait_served(20)
        victim = sorted(rolled)[0]
        started = time.monotonic()
        docker("kill", victim)
        replaced = wait_for(
            lambda: victim not in (now := healthy_replicas()) and len(now) == REPLICAS,
            REPLICA_START_S, "a healthy replica in place of the killed one", every_s=1,
        )  # fmt: skip
        wait_for(whole, 120, "3 replicas UP in the balancer after the kill", every_s=1)
        load.wait_served(20)

    (backend,) = [row for row in balancer_stats() if row["pxname"] == "api" and row["svname"] == "BACKEND"]
    print(
        f"\nfleet of {REPLICAS}: {load.served} requests served, {len(load.failures)} failed, from "
        f"{load.clients} clients; rolling update of {REPLICAS} replicas {rolled_s:.0f} s "
        f"({served_while_rolling} requests served by then); killed replica replaced and healthy in "
        f"{replaced:.0f} s; the balancer retried {backend['wretr']} connections and redispatched "
        f"{backend['wredis']} requests to another replica"
    )
    assert load.failures == [], f"{load.failures}\nHAProxy's log of what went wrong:\n{balancer_log()}"
    assert rolled.isdisjoint(before), "every replica was replaced by the update"
    assert len(rolled) == REPLICAS


@pytest.mark.image
@pytest.mark.timeout(600)
def test_a_new_version_in_the_shared_volume_reaches_every_replica(fleet, model_repository):
    # Written as the docs tell: copied into a hidden folder of the volume, then renamed into place.
    incoming, version = f"/models/{MODEL_NAME}/.incoming-2", f"/models/{MODEL_NAME}/2"
    docker(
        "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "sh",
        "--volume", f"{model_repository / MODEL_NAME / '1'}:/version:ro",
        "--volume", f"{fleet.volume}:/models", fleet.image,
        "-c", f"cp -R /version {incoming} && chmod -R a+rX {incoming} && mv {incoming} {version}",
    )  # fmt: skip

    def served(container: str) -> tuple[int, list[str]]:
        model = json.loads(in_the_container(container, "http://127.0.0.1:8000/model"))
        return model["version"], model["labels"]

    fleet_replicas = healthy_replicas()
    assert len(fleet_replicas) == REPLICAS
    took = wait_for(
        lambda: all(served(replica) == (2, LABELS) for replica in fleet_replicas), 180,
        "version 2 served by every replica", every_s=1,
    )  # fmt: skip
    image = {"file": ("shape.jpg", jpeg(), "image/jpeg")}
    answers = [httpx.post(f"{fleet.url}/predict", files=image, timeout=30) for _ in range(3 * REPLICAS)]

    assert [(a.status_code, a.headers["X-Model-Version"]) for a in answers] == [(200, "2")] * (3 * REPLICAS)
    assert {a.json()["results"][0]["predictions"][0]["label"] for a in answers} <= set(LABELS)
    print(f"\nversion 2 served by all {REPLICAS} replicas {took:.1f} s after it was written")
