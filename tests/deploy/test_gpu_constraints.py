"""The GPU image's locked CUDA libraries resolve on PyPI. The image cannot run here (no GPU), but
pip can resolve exactly what its build would install: a dry run, nothing downloaded into place."""

import json
import subprocess
import sys

import pytest

from tests.deploy.manifests import ROOT

pytestmark = pytest.mark.image

CUDA_CONSTRAINTS = ROOT / "deploy" / "docker" / "constraints-cuda.txt"


def pins(path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


def test_the_gpu_builds_requirements_resolve_to_the_locked_cuda_libraries(compose, tmp_path):
    gpu_package = compose["services"]["inception-v2-gpu"]["build"]["args"]["TF_PACKAGE"]
    subprocess.run(
        [sys.executable, ROOT / "deploy" / "docker" / "requirements.py", gpu_package, tmp_path],
        cwd=ROOT,
        check=True,
    )
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", report, "-c", ROOT / "constraints.txt", "-c", CUDA_CONSTRAINTS,
         "-r", tmp_path / "runtime.txt"],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    installed = {
        item["metadata"]["name"]: item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    cuda = {name: version for name, version in installed.items() if name.startswith("nvidia-")}
    assert cuda == pins(CUDA_CONSTRAINTS), "every CUDA library pinned, and every pin used"
    assert installed["tensorflow"] == "2.21.0"
