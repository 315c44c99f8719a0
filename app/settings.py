"""Service configuration: one `Settings` class read from environment variables of the same name."""

import os
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LABEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


# MAX_BATCH_SIZE when unset, by the kind of device the model runs on. Warm-up runs every size up to it
# once, so on a CPU, where a batch costs in proportion to its images, cold start grows with its
# square; a GPU runs a batch of 128 in a few times the time of one image (docs/performance.md).
DEFAULT_MAX_BATCH_SIZE = {"CPU": 32, "GPU": 128}


class InvalidSettings(ValueError):
    """One or more environment variables hold values the service refuses to start with."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which of the versions present are served: TF Serving's model_version_policy.

    `latest:N` serves the N highest, `all` every one, `specific:1,3` those listed.
    """

    kind: Literal["latest", "all", "specific"]
    count: int = 1
    versions: tuple[int, ...] = ()

    def select(self, present: Iterable[int]) -> set[int]:
        """The versions this policy serves among `present`."""
        present = set(present)
        if self.kind == "all":
            return present
        if self.kind == "specific":
            return present & set(self.versions)
        return set(sorted(present)[-self.count :])

    def __str__(self) -> str:
        if self.kind == "specific":
            return "specific:" + ",".join(map(str, self.versions))
        if self.kind == "latest" and self.count > 1:
            return f"latest:{self.count}"
        return self.kind


def parse_version_policy(value: object) -> object:
    """`latest`, `latest:N`, `all` or `specific:V1,V2,...` -> `VersionPolicy`."""
    if not isinstance(value, str):
        return value
    kind, _, argument = value.strip().lower().partition(":")
    numbers = [part.strip() for part in argument.split(",")] if argument else []
    if not all(n.isdigit() and int(n) >= 1 for n in numbers):
        raise ValueError(f"versions and counts are whole numbers from 1; got {argument!r}")
    if kind == "latest" and len(numbers) <= 1:
        return VersionPolicy("latest", int(numbers[0]) if numbers else 1)
    if kind == "all" and not numbers:
        return VersionPolicy("all")
    if kind == "specific" and numbers:
        return VersionPolicy("specific", versions=tuple(sorted({int(n) for n in numbers})))
    raise ValueError("expected latest, latest:N, all or specific:V1,V2 (TF Serving's model_version_policy)")


def parse_version_labels(value: object) -> object:
    """`stable=1,canary=2` -> {"stable": 1, "canary": 2}."""
    if not isinstance(value, str):
        return value
    labels = {}
    for pair in filter(None, (part.strip() for part in value.split(","))):
        label, _, version = (part.strip() for part in pair.partition("="))
        if not version.isdigit() or int(version) < 1:
            raise ValueError(f"expected label=version pairs such as stable=1,canary=2; got {pair!r}")
        labels[label] = int(version)
    return labels


def check_label_names(labels: dict[str, int]) -> dict[str, int]:
    for label in labels:
        if not LABEL_NAME.fullmatch(label):
            raise ValueError(
                f"a version label starts with a letter, then letters, digits, _ . -; got {label!r}"
            )
    return labels


Policy = Annotated[VersionPolicy, NoDecode, BeforeValidator(parse_version_policy), PlainSerializer(str)]
VersionLabels = Annotated[dict[str, int], NoDecode, BeforeValidator(parse_version_labels)]


class Settings(BaseSettings):
    """Every setting is the upper-case environment variable of its field name (`MAX_BATCH_SIZE`)."""

    model_config = SettingsConfigDict(frozen=True)

    model_base_path: Path = Field(
        Path("models"), description="The model repository: holds <MODEL_NAME>/<version>/ folders."
    )
    model_name: str = Field(
        "inception_v2", min_length=1, description="Which model of the repository to serve."
    )
    model_version: int | None = Field(
        None, ge=1, description="Serve only this version (the same as MODEL_VERSION_POLICY=specific:N)."
    )
    model_version_policy: Policy = Field(
        VersionPolicy("latest"),
        description="Which versions to serve, as TF Serving's model_version_policy: latest (the highest), "
        "latest:N (the N highest), all, or specific:1,3.",
    )
    model_version_labels: VersionLabels = Field(
        default_factory=dict,
        description="Version labels such as stable=1,canary=2; a version_labels.json in the model's "
        "folder may move them while serving.",
    )
    model_poll_seconds: float = Field(
        5.0,
        ge=0,
        description="How often the model's folder is checked for new, removed and relabelled versions; "
        "0 checks only at start-up.",
    )
    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on (0.0.0.0 in a container).")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")

    max_batch_size: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Most images the model sees in one call; below it, the batch size the model gains "
        "from is measured at warm-up (BATCH_MEASURE_S) and revised from live batches. Unset: "
        + ", ".join(f"{size} on a {kind}" for kind, size in DEFAULT_MAX_BATCH_SIZE.items())
        + " (the device the model runs on).",
    )
    batch_timeout_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="Longest an image waits for images still being decoded to join its batch; "
        "an idle model never waits for images that are not on their way.",
    )
    batch_measure_s: float = Field(
        2.0,
        ge=0,
        le=600,
        description="Seconds of warm-up spent timing the model at batch sizes 1, 2, 4 ... MAX_BATCH_SIZE "
        "(at least 3 calls each) to choose the largest batch it gains from and whether to wait for one; "
        "0 takes MAX_BATCH_SIZE and BATCH_TIMEOUT_MS as set.",
    )
    max_queue_size: int = Field(
        256, ge=1, description="Most images admitted and not yet in a batch; beyond it requests get 503."
    )
    request_timeout_ms: float = Field(
        10_000, gt=0, description="An image not in a batch this long after its request was admitted gets 503."
    )
    max_upload_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body; larger bodies get 413 unread."
    )
    max_body_bytes_held: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        description="Most bytes of request bodies held in memory at once, over all requests; beyond it "
        "requests get 503. The default fits a 2 GiB memory limit (docs/deployment.md).",
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest image (width x height) decoded; larger ones get 413 undecoded."
    )
    max_files: int = Field(16, ge=1, description="Most images in one /predict request.")
    ood_threshold: float | None = Field(
        None,
        description='The ood_score above which an answer is not confident ("not sure"), for every version '
        "served; unset uses the threshold each version chose at export. See docs/confidence.md.",
    )

    decode_threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Threads decoding and resizing images; one per CPU unless set.",
    )
    intra_op_threads: int = Field(
        0, ge=0, description="TensorFlow threads inside one operation; 0 lets TensorFlow choose."
    )
    inter_op_threads: int = Field(
        0, ge=0, description="TensorFlow operations run in parallel; 0 lets TensorFlow choose."
    )
    gpu_memory_limit_mb: int | None = Field(
        None, ge=1, description="Cap on GPU memory; unset grows GPU memory as needed."
    )
    shutdown_delay_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="On SIGTERM, how long /readyz answers 503 while requests are still served, so load "
        "balancers stop sending traffic before the listener closes; 0 where a preStop hook waits instead.",
    )
    shutdown_timeout_s: float = Field(
        30.0,
        gt=0,
        description="After SHUTDOWN_DELAY_S, longest wait for admitted requests to finish before exiting.",
    )
    header_timeout_s: float = Field(
        5.0, gt=0, description="Longest a client may take to send a request's headers; then it is cut off."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="Longest a client may take to send a request body; then it gets 408."
    )
    keep_alive_timeout_s: int = Field(
        5, ge=1, description="How long an idle keep-alive connection stays open between requests."
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Largest request head (request line and headers); larger gets 431."
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Most connections open at once; uvicorn answers requests beyond it with a plain 503.",
    )
    api_keys: SecretStr | None = Field(
        None,
        description="Comma-separated API keys; requests must send one (Authorization: Bearer <key> or "
        "X-API-Key). Several at once let keys be rotated. Unset (and no API_KEYS_FILE): no keys needed; "
        "set but holding no key: the service refuses to start.",
    )
    api_keys_file: Path | None = Field(
        None, description="A file of API keys, one a line (a mounted Secret); adds to API_KEYS."
    )
    metrics_require_key: bool = Field(
        False, description="Whether /metrics needs an API key too; health checks never do."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("model_version_labels", mode="after")
    @classmethod
    def _label_names(cls, labels: dict[str, int]) -> dict[str, int]:
        return check_label_names(labels)

    @property
    def version_policy(self) -> VersionPolicy:
        """MODEL_VERSION_POLICY, or specific:MODEL_VERSION when that is set."""
        if self.model_version is not None:
            return VersionPolicy("specific", versions=(self.model_version,))
        return self.model_version_policy

    @model_validator(mode="after")
    def _check_consistency(self) -> "Settings":
        if self.model_version is not None and self.model_version_policy != VersionPolicy("latest"):
            raise ValueError(
                f"Set MODEL_VERSION ({self.model_version}) or MODEL_VERSION_POLICY "
                f"({self.model_version_policy}), not both"
            )
        if self.max_files > self.max_queue_size:
            raise ValueError(
                f"MAX_FILES ({self.max_files}) must not exceed MAX_QUEUE_SIZE ({self.max_queue_size}): "
                "a request with that many images could never be admitted"
            )
        if self.max_body_bytes_held < self.max_upload_bytes:
            raise ValueError(
                f"MAX_BODY_BYTES_HELD ({self.max_body_bytes_held}) must not be below MAX_UPLOAD_BYTES "
                f"({self.max_upload_bytes}): an upload of the largest size could never be let in"
            )
        if self.batch_timeout_ms >= self.request_timeout_ms:
            raise ValueError(
                f"BATCH_TIMEOUT_MS ({self.batch_timeout_ms:g}) must be below REQUEST_TIMEOUT_MS "
                f"({self.request_timeout_ms:g})"
            )
        return self

    # Set, but holding no key (a lone comma, a Secret never filled in): the service would start
    # requiring no key, which is the opposite of what whoever set it meant.
    @field_validator("api_keys", mode="after")
    @classmethod
    def _keys_given(cls, keys: SecretStr | None) -> SecretStr | None:
        if keys is not None and not split_keys(keys.get_secret_value().replace(",", "\n")):
            raise ValueError(NO_KEY)
        return keys

    @field_validator("api_keys_file", mode="after")
    @classmethod
    def _key_file_given(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        if not path.is_file():
            raise ValueError("is not a readable file")
        if not split_keys(path.read_text()):
            raise ValueError(NO_KEY)
        return path

    def batch_size_limit(self, device: str) -> int:
        """MAX_BATCH_SIZE, or when unset its default for `device` ("/GPU:0", "/CPU:0")."""
        if self.max_batch_size is not None:
            return self.max_batch_size
        return DEFAULT_MAX_BATCH_SIZE["GPU" if "GPU" in device.upper() else "CPU"]

    def api_key_list(self) -> list[str]:
        """Every accepted API key, from API_KEYS and API_KEYS_FILE; empty when access is open."""
        text = self.api_keys.get_secret_value().replace(",", "\n") if self.api_keys else ""
        if self.api_keys_file is not None:
            text += "\n" + self.api_keys_file.read_text()
        return split_keys(text)


NO_KEY = "holds no key; unset it to serve without API keys"


def split_keys(text: str) -> list[str]:
    """The keys in `text`, one a line, blank lines and surrounding spaces dropped."""
    return [key.strip() for key in text.splitlines() if key.strip()]


def load_settings() -> Settings:
    """Read the settings from the environment, or raise `InvalidSettings` naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            name = ".".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            if name:
                problems.append(f"{name}={error['input']!r}: {message}")
            else:
                problems.append(message)
        raise InvalidSettings("Invalid settings:\n  " + "\n  ".join(problems)) from None


def describe_settings() -> str:
    """The settings as a table for `python -m app --help`: variable, default, description."""
    lines = ["environment variables:"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        text = f"{field.description} Default: {'unset' if default in (None, {}) else default}."
        first = f"  {name.upper():<21}"
        lines.extend(textwrap.wrap(text, 100, initial_indent=first, subsequent_indent=" " * len(first)))
    return "\n".join(lines)
