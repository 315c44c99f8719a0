import shutil
import sys
from pathlib import Path

import pytest

from tests.deploy.manifests import DOCKERFILE, Stage, load_compose, load_k8s, parse_dockerfile


def tool(name: str) -> str:
    """A command-line tool from the dev extra, installed beside this Python."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed: pip install -c constraints.txt -e '.[dev]'"
    return found


@pytest.fixture(scope="session")
def stages() -> dict[str, Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="session")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="session")
def k8s() -> dict[str, dict]:
    return load_k8s()
