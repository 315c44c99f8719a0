"""Monitoring as an operator runs it: promtool on the rules, and Debian's Prometheus scraping a real
`python -m app` process with deploy/prometheus/, answering every Grafana panel's query."""

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.app.servers import Server, free_port, running_server
from tests.deploy.manifests import load_compose
from tests.support import ROOT
from tests.support.images import encode, noise
from tests.support.models import MODEL_NAME
from tests.tools import require

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "inception-v2-service.json"
JOB = "inception-v2"
DEADLINE_S = 60
# What Grafana puts in place of the dashboard's variables.
PREDICTIONS = f'http_requests_total{{job="{JOB}", route="/predict", method="POST"}}'
VARIABLES = {"$__rate_interval": "1m", "$version": ".*", "$job": JOB}


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require("promtool", "prometheus"), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_rules_are_valid():
    result = promtool("check", "rules", "rules.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 14 rules found" in result.stdout


def test_the_rules_pass_their_unit_tests():
    result = promtool("test", "rules", "rules_test.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("SUCCESS")


def test_the_prometheus_config_is_valid():
    result = promtool("check", "config", "prometheus.yml")

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_monitoring_profile_wires_prometheus_and_grafana_to_the_service():
    services = load_compose()["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    (scrape,) = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())["scrape_configs"]
    assert scrape["job_name"] == JOB  # the job the rules and the dashboard select
    assert scrape["static_configs"] == [{"targets": ["inception-v2:8000"]}]  # the service's port inside
    assert "inception-v2" in services
    assert {
        "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
        "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro",
    } <= set(grafana["volumes"])
    (datasource,) = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/inception-v2.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


@dataclass
class Prometheus:
    process: subprocess.Popen
    url: str
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result; fails on a query Prometheus rejects."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        assert response.status_code == 200, f"{expr}: {response.text}"
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def wait_for(self, expr: str, check: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        """Poll `expr` until `check` accepts its result, for at most DEADLINE_S."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert self.process.poll() is None, self.log.read_text()
            result = self.query(expr)
            if check(result):
                return result
            assert time.monotonic() < deadline, f"{expr} still {result} after {DEADLINE_S} s"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def service(model_repository, tmp_path_factory) -> Iterator[Server]:
    """The service on every version of a repository whose version 2 is corrupt: 1 serves, 2 failed."""
    repository = tmp_path_factory.mktemp("monitored")
    served = repository / MODEL_NAME
    shutil.copytree(model_repository / MODEL_NAME / "1", served / "1")
    shutil.copytree(served / "1", served / "2")
    (served / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    with running_server(repository, repository / "server.log", MODEL_VERSION_POLICY="all") as server:
        yield server


@pytest.fixture(scope="module")
def prometheus(service, tmp_path_factory) -> Iterator[Prometheus]:
    """deploy/prometheus/prometheus.yml, scraping the local service every second."""
    binary = require("prometheus", "prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{service.port}"]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not _ready(prometheus):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, (
                f"Prometheus not ready after {DEADLINE_S} s:\n{log.read_text()}"
            )
            time.sleep(0.2)
        yield prometheus
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ready(prometheus: Prometheus) -> bool:
    try:
        return httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def traffic(service, prometheus) -> dict[str, int]:
    """Three JPEGs classified and a text file refused, after Prometheus has seen the first JPEG:
    rates need two samples of a series, and a series starts with its first request. Counts by status."""
    jpeg = encode(noise(64, 48, seed=5), "JPEG")

    def post(name: str, data: bytes) -> int:
        return httpx.post(f"{service.url}/predict", files={"file": (name, data)}, timeout=60).status_code

    assert post("a.jpg", jpeg) == 200
    prometheus.wait_for(PREDICTIONS, lambda result: counts(result) == {"200": 1})
    assert [post("b.jpg", jpeg), post("c.jpg", jpeg), post("notes.txt", b"not an image")] == [200, 200, 415]
    return {"200": 3, "415": 1}


def counts(result: list[dict[str, Any]]) -> dict[str, int]:
    return {series["metric"]["status"]: int(float(series["value"][1])) for series in result}


def test_prometheus_scrapes_the_service_and_reads_its_counters(service, prometheus, traffic):
    (up,) = prometheus.wait_for(f'up{{job="{JOB}"}}', lambda result: len(result) == 1)
    assert up["metric"]["instance"] == f"127.0.0.1:{service.port}"
    assert up["value"][1] == "1"

    result = prometheus.wait_for(PREDICTIONS, lambda result: counts(result) == traffic)
    assert counts(result) == {"200": 3, "415": 1}


def test_the_recording_rules_match_the_services_metrics(prometheus, traffic):
    (rate,) = prometheus.wait_for(f'job:http_requests:rate5m{{job="{JOB}"}}', lambda result: len(result) == 1)
    assert float(rate["value"][1]) > 0
    (p99,) = prometheus.wait_for(
        'job_route:http_request_duration_seconds:histogram_quantile{route="/predict", quantile="0.99"}',
        lambda result: len(result) == 1,
    )
    assert 0 < float(p99["value"][1]) <= 10  # within the histogram's buckets
    # Version 1's queue, empty once the traffic is answered; no series for the failed version 2.
    prometheus.wait_for(
        "instance_version:inference_queue:utilization",
        lambda result: [(s["metric"]["version"], s["value"][1]) for s in result] == [("1", "0")],
    )
    # Up and ready: neither alert even pending (ALERTS holds pending alerts too).
    prometheus.wait_for(
        'ALERTS{alertname=~"InceptionV2Down|InceptionV2NotReady"}', lambda result: result == []
    )


def test_a_version_that_failed_to_load_raises_its_alert(prometheus):
    (alert,) = prometheus.wait_for(
        'ALERTS{alertname="InceptionV2VersionFailedToLoad"}', lambda result: result
    )

    assert alert["metric"]["version"] == "2"
    assert alert["metric"]["name"] == MODEL_NAME
    assert alert["metric"]["alertstate"] in ("pending", "firing")  # firing after its minute


def dashboard_queries() -> dict[str, str]:
    """Every PromQL expression of the dashboard, by panel title (and target), variables substituted."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries[f"{panel['title']} ({target['refId']})"] = _substitute(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            selector = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
            assert selector, variable["query"]
            queries[f"${variable['name']}"] = _substitute(selector[1])
    return queries


def _substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def test_every_dashboard_query_runs_and_the_service_panels_show_data(prometheus, traffic):
    queries = dashboard_queries()
    # Rates need two samples of each series since the traffic: wait for the latest series, the 415s.
    prometheus.wait_for(
        queries["/predict latency (C)"], lambda result: result and result[0]["value"][1] != "NaN"
    )
    prometheus.wait_for(
        queries["Errors by status (A)"], lambda result: {s["metric"]["status"] for s in result} == {"415"}
    )

    results = {title: prometheus.query(expr) for title, expr in queries.items()}

    assert len(results) == 20  # 18 panel targets, 2 variables
    empty = {title for title, result in results.items() if not result}
    assert empty == {"Shed predictions by instance (A)"}  # no 503 was sent
    versions = {(s["metric"]["version"], s["metric"]["state"]) for s in results["Versions (A)"]}
    assert versions == {("1", "AVAILABLE"), ("2", "END")}
