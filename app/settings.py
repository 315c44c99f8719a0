"""Service configuration: one `Settings` class read from environment variables of the same name."""

import os
import textwrap
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class InvalidSettings(ValueError):
    """One or more environment variables hold values the service refuses to start with."""


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
        None, ge=1, description="Which version to serve; unset serves the highest version present."
    )
    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on (0.0.0.0 in a container).")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")

    max_batch_size: int = Field(32, ge=1, le=1024, description="Most images the model sees in one call.")
    batch_timeout_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="Longest an image waits for images still being decoded to join its batch; "
        "an idle model never waits for images that are not on their way.",
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
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest image (width x height) decoded; larger ones get 413 undecoded."
    )
    max_files: int = Field(16, ge=1, description="Most images in one /predict request.")

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
    shutdown_timeout_s: float = Field(
        30.0, gt=0, description="On SIGTERM, longest wait for admitted requests to finish before exiting."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_consistency(self) -> "Settings":
        if self.max_files > self.max_queue_size:
            raise ValueError(
                f"MAX_FILES ({self.max_files}) must not exceed MAX_QUEUE_SIZE ({self.max_queue_size}): "
                "a request with that many images could never be admitted"
            )
        if self.batch_timeout_ms >= self.request_timeout_ms:
            raise ValueError(
                f"BATCH_TIMEOUT_MS ({self.batch_timeout_ms:g}) must be below REQUEST_TIMEOUT_MS "
                f"({self.request_timeout_ms:g})"
            )
        return self


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
        text = f"{field.description} Default: {'unset' if default is None else default}."
        first = f"  {name.upper():<21}"
        lines.extend(textwrap.wrap(text, 100, initial_indent=first, subsequent_indent=" " * len(first)))
    return "\n".join(lines)
