"""The benchmark harness end to end, in its --quick mode: real service processes, real wrk load.

It checks that the suite runs and reports, not any speed: speed targets are read from
`make bench`, never asserted in tests.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MODEL_NAME

# A developer without wrk may skip this; CI (which sets CI=true) installs wrk and must not.
pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None and os.environ.get("CI") != "true", reason="needs wrk (apt-get install wrk)"
)


def test_quick_run_measures_both_services_and_writes_the_report(tmp_path, model_repository):
    out = tmp_path / "performance.md"
    out.write_text(
        "# Performance\n\nintro\n"
        "<!-- benchmark results: start -->\nPREVIOUS RESULTS\n<!-- benchmark results: end -->\noutro\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--models",
            "demo",
            "--model-base-path",
            str(model_repository),
            "--model-name",
            MODEL_NAME,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr[-3000:]

    results = json.loads((tmp_path / "performance" / "results.json").read_text())
    (demo,) = results["models"]
    assert [level["clients"] for level in demo["batching"]] == [1, 8]
    assert [level["clients"] for level in demo["per_request"]] == [1, 8]
    for level in demo["batching"] + demo["per_request"] + [demo["after_burst"]]:
        assert level["errors"] == 0
        assert level["requests"] > 0
        assert 0 < level["p50_ms"] <= level["p99_ms"]
    assert [level["path"] for level in demo["protocols"]] == [
        "/predict",
        f"/v1/models/{MODEL_NAME}:predict",
        f"/v2/models/{MODEL_NAME}/infer",
    ]
    for level in demo["protocols"]:
        assert (level["clients"], level["errors"]) == (8, 0)
        assert level["requests"] > 0
        assert level["throughput_ratio"] > 0
    assert demo["protocols"][0]["throughput_ratio"] == demo["protocols"][0]["p50_ratio"] == 1
    assert demo["requests_before_rss"] >= 200
    assert demo["exit_code"] == 0
    assert demo["in_process"]["best_batch_size"] in (1, 8)
    assert len(demo["targets"]) == 5
    assert demo["cold_start"]["ready_seconds"] >= demo["cold_start"]["load_seconds"] > 0

    report = out.read_text()
    assert report.startswith("# Performance\n\nintro\n")
    assert report.endswith("<!-- benchmark results: end -->\noutro\n")
    assert "PREVIOUS RESULTS" not in report
    assert "a --quick smoke run: not for quoting" in report
    assert "### demo" in report
    assert f"| OIP infer (binary) (`/v2/models/{MODEL_NAME}/infer`) |" in report
    assert (tmp_path / "performance" / "demo.png").stat().st_size > 10_000
