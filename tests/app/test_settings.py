import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import InvalidSettings, Settings, load_settings
from tests.support import ROOT


@pytest.fixture
def environ(monkeypatch):
    """A clean environment: only what a test sets reaches the settings."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_defaults(environ):
    settings = load_settings()

    assert settings.model_base_path == Path("models")
    assert settings.model_name == "inception_v2"
    assert settings.model_version is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.max_batch_size is None  # resolved by the device the model runs on
    assert settings.log_level == "INFO"


@pytest.mark.parametrize(
    ("device", "max_batch_size", "limit"),
    [("/CPU:0", None, 32), ("/GPU:0", None, 128), ("/device:GPU:1", None, 128), ("/GPU:0", 16, 16)],
)
def test_max_batch_size_defaults_by_device_and_is_kept_as_set(device, max_batch_size, limit):
    assert Settings(max_batch_size=max_batch_size).batch_size_limit(device) == limit


def test_settings_come_from_environment_variables(environ):
    environ.setenv("MODEL_VERSION", "3")
    environ.setenv("MAX_BATCH_SIZE", "4")
    environ.setenv("LOG_LEVEL", "debug")

    settings = load_settings()

    assert (settings.model_version, settings.max_batch_size, settings.log_level) == (3, 4, "DEBUG")


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("MAX_BATCH_SIZE", "0", "MAX_BATCH_SIZE='0': Input should be greater than or equal to 1"),
        (
            "PORT",
            "http",
            "PORT='http': Input should be a valid integer, unable to parse string as an integer",
        ),
        ("MODEL_VERSION", "0", "MODEL_VERSION='0': Input should be greater than or equal to 1"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL='LOUD': Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ],
)
def test_an_unsafe_value_is_refused_naming_the_variable(environ, name, value, message):
    environ.setenv(name, value)

    with pytest.raises(InvalidSettings) as caught:
        load_settings()

    assert str(caught.value) == f"Invalid settings:\n  {message}"


def test_settings_that_contradict_each_other_are_refused(environ):
    environ.setenv("MAX_FILES", "20")
    environ.setenv("MAX_QUEUE_SIZE", "10")

    with pytest.raises(InvalidSettings, match=r"MAX_FILES \(20\) must not exceed MAX_QUEUE_SIZE \(10\)"):
        load_settings()


def test_the_body_budget_must_hold_the_largest_upload(environ):
    environ.setenv("MAX_UPLOAD_BYTES", "2000000")
    environ.setenv("MAX_BODY_BYTES_HELD", "1000000")

    with pytest.raises(InvalidSettings) as caught:
        load_settings()

    assert str(caught.value) == (
        "Invalid settings:\n  MAX_BODY_BYTES_HELD (1000000) must not be below MAX_UPLOAD_BYTES (2000000): "
        "an upload of the largest size could never be let in"
    )


def test_the_batch_timeout_must_be_shorter_than_the_request_timeout(environ):
    environ.setenv("BATCH_TIMEOUT_MS", "100")
    environ.setenv("REQUEST_TIMEOUT_MS", "100")

    with pytest.raises(
        InvalidSettings, match=r"BATCH_TIMEOUT_MS \(100\) must be below REQUEST_TIMEOUT_MS \(100\)"
    ):
        load_settings()


def test_help_lists_every_setting_with_its_default():
    result = subprocess.run(
        [sys.executable, "-m", "app", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )

    for name in Settings.model_fields:
        assert f"\n  {name.upper()} " in result.stdout
    assert "Default: 256." in result.stdout  # MAX_QUEUE_SIZE
    assert "Unset: 32 on a CPU, 128 on a GPU" in " ".join(result.stdout.split())  # MAX_BATCH_SIZE
    assert "tensorflow" not in result.stderr.lower()


def test_the_server_refuses_to_start_with_invalid_settings():
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env={"MAX_BATCH_SIZE": "-1"}, capture_output=True, text=True
    )

    assert result.returncode == 2
    assert (
        result.stderr
        == "Invalid settings:\n  MAX_BATCH_SIZE='-1': Input should be greater than or equal to 1\n"
    )


@pytest.mark.parametrize(
    "value, policy, chosen",
    [
        ("latest", "latest", [5]),
        ("latest:2", "latest:2", [3, 5]),
        (" Latest:9 ", "latest:9", [1, 2, 3, 5]),
        ("all", "all", [1, 2, 3, 5]),
        ("specific:3,1,3", "specific:1,3", [1, 3]),
        ("specific:4", "specific:4", []),
    ],
)
def test_the_version_policy_is_tf_servings(environ, value, policy, chosen):
    environ.setenv("MODEL_VERSION_POLICY", value)

    settings = load_settings()

    assert str(settings.version_policy) == policy
    assert sorted(settings.version_policy.select([1, 2, 3, 5])) == chosen


def test_model_version_is_a_specific_policy(environ):
    environ.setenv("MODEL_VERSION", "3")

    assert str(load_settings().version_policy) == "specific:3"


@pytest.mark.parametrize(
    "name, value, message",
    [
        (
            "MODEL_VERSION_POLICY",
            "newest",
            "expected latest, latest:N, all or specific:V1,V2 (TF Serving's model_version_policy)",
        ),
        ("MODEL_VERSION_POLICY", "latest:0", "versions and counts are whole numbers from 1; got '0'"),
        ("MODEL_VERSION_POLICY", "specific:1,x", "versions and counts are whole numbers from 1; got '1,x'"),
        (
            "MODEL_VERSION_LABELS",
            "stable:1",
            "expected label=version pairs such as stable=1,canary=2; got 'stable:1'",
        ),
        (
            "MODEL_VERSION_LABELS",
            "2=1",
            "a version label starts with a letter, then letters, digits, _ . -; got '2'",
        ),
        ("MODEL_POLL_SECONDS", "-1", "Input should be greater than or equal to 0"),
    ],
)
def test_a_bad_version_setting_is_refused_naming_it(environ, name, value, message):
    environ.setenv(name, value)

    with pytest.raises(InvalidSettings) as caught:
        load_settings()

    assert str(caught.value) == f"Invalid settings:\n  {name}={value!r}: {message}"


def test_version_labels_are_read(environ):
    environ.setenv("MODEL_VERSION_LABELS", "stable=1, canary=2")

    assert load_settings().model_version_labels == {"stable": 1, "canary": 2}


def test_model_version_and_a_policy_together_are_refused(environ):
    environ.setenv("MODEL_VERSION", "1")
    environ.setenv("MODEL_VERSION_POLICY", "all")

    with pytest.raises(
        InvalidSettings, match=r"Set MODEL_VERSION \(1\) or MODEL_VERSION_POLICY \(all\), not both"
    ):
        load_settings()


@pytest.mark.parametrize("value", [",", "", " , ,"])
def test_api_keys_that_hold_no_key_are_refused_not_taken_as_open_access(value):
    """A comma, or a Secret never filled in, would otherwise start the service requiring no key."""
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env={"API_KEYS": value}, capture_output=True, text=True
    )

    assert result.returncode == 2
    assert result.stderr == (
        f"Invalid settings:\n  API_KEYS={value!r}: holds no key; unset it to serve without API keys\n"
    )


def test_an_empty_api_keys_file_is_refused(environ, tmp_path):
    key_file = tmp_path / "api-keys"
    key_file.write_text("\n  \n")
    environ.setenv("API_KEYS_FILE", str(key_file))

    with pytest.raises(InvalidSettings) as caught:
        load_settings()

    assert str(caught.value) == (
        f"Invalid settings:\n  API_KEYS_FILE={str(key_file)!r}: holds no key; "
        "unset it to serve without API keys"
    )
