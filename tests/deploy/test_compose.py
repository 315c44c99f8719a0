import subprocess

from tests.deploy.manifests import (
    COMPOSE_FILE,
    compose_environment,
    compose_healthcheck_command,
    parse_healthcheck,
    seconds,
    stage_last,
)
from tests.tools import tool

SERVICES = ("inception-v2", "inception-v2-gpu")


def test_compose_file_follows_the_compose_specification():
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_mount_the_model_repository_read_only(compose):
    for name in SERVICES:
        service = compose["services"][name]
        assert service["build"]["target"] == "runtime"
        assert service["volumes"] == [
            {"type": "bind", "source": "./models", "target": "/models", "read_only": True}
        ]
        assert service["restart"] == "unless-stopped"
        assert (service["read_only"], service["tmpfs"]) == (True, ["/tmp"])
        assert [port.rsplit(":", 1)[1] for port in service["ports"]] == ["8000"]


def test_healthcheck_is_the_images_and_waits_for_the_model(compose, stages):
    image = parse_healthcheck(stage_last(stages, "runtime", "HEALTHCHECK").arguments)
    for name in SERVICES:
        healthcheck = compose["services"][name]["healthcheck"]
        assert compose_healthcheck_command(healthcheck["test"]) == image.command
        for option in ("interval", "timeout", "start-period"):
            assert seconds(healthcheck[option.replace("-", "_")]) == seconds(image.options[option]), option
        assert healthcheck["retries"] == int(image.options["retries"])


def test_stop_waits_for_the_drain(compose):
    for name in SERVICES:
        service = compose["services"][name]
        assert service["stop_signal"] == "SIGTERM"
        settings = compose_environment(service, {})
        drain = float(settings["SHUTDOWN_DELAY_S"]) + float(settings["SHUTDOWN_TIMEOUT_S"])
        assert seconds(service["stop_grace_period"]) > drain + 10


def test_train_profile_writes_the_next_version_into_models(compose):
    train = compose["services"]["train"]
    assert train["profiles"] == ["train"]
    assert train["build"]["target"] == "trainer"
    assert train["volumes"] == ["./models:/models"]
    assert "user" in train, "as the host user, so the new version in ./models is the user's own"


def test_gpu_profile_reserves_an_nvidia_device_and_installs_cuda(compose):
    gpu = compose["services"]["inception-v2-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["args"]["TF_PACKAGE"] == "tensorflow[and-cuda]"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    ports = {p.split(":", 1)[1] for name in SERVICES for p in compose["services"][name]["ports"]}
    assert len(ports) == len(SERVICES), "each service publishes its own host port, so both can run"


def test_settings_are_the_services_own_at_its_defaults(compose):
    from app.settings import Settings

    for name in SERVICES:
        declared = {key.lower() for key in compose["services"][name]["environment"]}
        assert declared <= set(Settings.model_fields), "a misspelt setting would be silently ignored"
        environment = compose_environment(compose["services"][name], {})
        settings = Settings(**{key.lower(): value for key, value in environment.items()})
        for key, value in environment.items():
            default = Settings.model_fields[key.lower()].default
            assert getattr(settings, key.lower()) == default, f"{key}={value} is not the default, {default}"
