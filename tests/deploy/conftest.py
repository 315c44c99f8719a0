import os

import pytest

from tests.deploy.containers import IMAGE, build_images, require_docker
from tests.deploy.manifests import DOCKERFILE, Stage, load_compose, load_k8s, parse_dockerfile


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
def images() -> dict[str, str]:
    """The runtime, trainer and demo images, built for real (cached layers make a rebuild quick).

    DEMO_EPOCHS (default 1) trains the demo model briefly: the tests need a model, not a good one.
    """
    require_docker()
    seconds = build_images(["runtime", "trainer", "demo"], os.environ.get("DEMO_EPOCHS", "1"))
    print(f"\nimages built in {seconds:.0f} s")
    return {target: f"{IMAGE}:{target}" for target in ("runtime", "trainer", "demo")}
