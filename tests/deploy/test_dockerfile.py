import subprocess

import pytest

from tests.deploy.manifests import (
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    command,
    dockerignore_rules,
    ignored,
    parse_healthcheck,
    stage_chain,
    stage_env,
    stage_last,
)
from tests.tools import tool


def test_hadolint_passes():
    result = subprocess.run([tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ignored_rule_says_why():
    pragmas = [line for line in DOCKERFILE.read_text().splitlines() if "hadolint ignore=" in line]
    for line in pragmas:
        rules, _, reason = line.partition("ignore=")[2].partition(" ")
        assert reason.strip(" #-:"), f"give the reason for ignoring {rules} on the same line: {line!r}"
    assert not list(ROOT.glob(".hadolint.y*ml")), "ignore rules inline, with the reason, not in a config file"


def test_runtime_serves_the_model_repository_on_all_interfaces(stages):
    env = stage_env(stages, "runtime")
    assert (env["MODEL_BASE_PATH"], env["MODEL_NAME"]) == ("/models", "inception_v2")
    assert env["HOST"] == "0.0.0.0"
    assert stage_last(stages, "runtime", "EXPOSE").arguments == env["PORT"] == "8000"


def test_runtime_runs_one_server_process_as_a_numeric_non_root_user(stages):
    cmd = stage_last(stages, "runtime", "CMD").arguments
    assert cmd.startswith("["), "exec form, so SIGTERM reaches Python and not a shell"
    assert command(cmd) == ["python", "-m", "app"]
    uid, _, gid = stage_last(stages, "runtime", "USER").arguments.partition(":")
    # Kubernetes' runAsNonRoot can only verify a numeric user.
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit())
    assert stage_last(stages, "runtime", "STOPSIGNAL").arguments == "SIGTERM"


def test_healthcheck_needs_no_curl_and_waits_for_the_model(stages):
    healthcheck = parse_healthcheck(stage_last(stages, "runtime", "HEALTHCHECK").arguments)
    assert healthcheck.command == ["python", "-m", "app.healthcheck"]
    assert set(healthcheck.options) >= {"interval", "timeout", "start-period", "retries"}


def test_builder_and_runtime_run_the_same_python(stages):
    """The virtual environment is copied from deps into runtime: both must come from one base image."""
    assert stage_chain(stages, "deps")[0] is stage_chain(stages, "runtime")[0]
    copies = [i.arguments.split() for i in stages["runtime"].all("COPY") if i.arguments.startswith("--from=")]
    assert ["--from=deps", "/opt/venv", "/opt/venv"] in copies


def test_locked_dependencies_are_installed_before_the_code_is_copied(stages):
    deps = stages["deps"]
    assert deps.instructions.index(deps.all("COPY")[0]) < deps.instructions.index(deps.all("RUN")[0])
    assert deps.all("COPY")[0].arguments.split()[0] == "constraints.txt"
    assert "./pip-install.sh runtime.txt" in deps.last("RUN").arguments  # what it installs: test_images.py
    assert [s.name for s in stage_chain(stages, "deps")] == ["base", "deps"]


def test_trainer_and_demo_targets_bake_the_demo_model(stages):
    assert stage_last(stages, "trainer", "CMD").arguments == '["train-demo-model"]'
    assert [s.name for s in stage_chain(stages, "demo-model")][-2:] == ["trainer", "demo-model"]
    assert stages["demo-model"].last("RUN").arguments.startswith("train-demo-model ")
    assert stages["demo"].base == "runtime"
    assert stages["demo"].last("COPY").arguments == "--from=demo-model /models /models"
    assert stage_env(stages, "trainer")["MODEL_BASE_PATH"] == "/models"


def test_gpu_build_is_a_build_argument(stages):
    arguments = [f"ARG {i.arguments}" for i in stages["requirements"].all("ARG")]
    assert "ARG TF_PACKAGE=tensorflow-cpu" in arguments
    assert '"${TF_PACKAGE}"' in stages["requirements"].last("RUN").arguments
    assert "--gpus all" in DOCKERFILE.read_text()


def copy_sources(stages) -> list[str]:
    """Every path a COPY takes from the build context."""
    sources = []
    for stage in stages.values():
        for instruction in stage.all("COPY"):
            words = [w for w in instruction.arguments.split() if not w.startswith("--")]
            if not instruction.arguments.startswith("--from="):
                sources += words[:-1]
    return sources


def test_build_context_holds_what_the_dockerfile_copies(stages):
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    sources = copy_sources(stages)
    assert {"pyproject.toml", "constraints.txt", "app", "training"} <= set(sources)
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not ignored(rules, relative), (
                f".dockerignore leaves out {relative}, which COPY {source} needs"
            )


@pytest.mark.parametrize(
    "path",
    [
        "data/demo/circle/0001.jpg",
        "models/inception_v2/1/saved_model.pb",
        "checkpoints/inception_v2/backup",
        ".venv/bin/python",
        ".git/HEAD",
        ".pytest_cache/v/cache",
        "app/__pycache__/main.cpython-311.pyc",
        "training/__pycache__/train.cpython-311.pyc",
        "tests/deploy/test_dockerfile.py",
    ],
)
def test_build_context_leaves_out_data_models_and_caches(path):
    assert ignored(dockerignore_rules(DOCKERIGNORE.read_text()), path)
