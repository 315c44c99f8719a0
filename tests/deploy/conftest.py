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


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory) -> Path:
    """A model repository holding one tiny real version of `inception_v2`, as the image's /models does."""
    from training.export import export_model
    from training.inception_v2 import inception_v2_seed

    base = tmp_path_factory.mktemp("models")
    model = inception_v2_seed(input_shape=(32, 32, 3), num_classes=3)
    export_model(model, ["circle", "square", "triangle"], base_path=base, name="inception_v2")
    return base
