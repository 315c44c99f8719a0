"""Find a model version in the repository, load it onto the GPU when there is one, and warm it up."""

import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from pydantic import ValidationError

from app.errors import ModelLoadError
from app.runtime.metadata import ModelMetadata

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
SIGNATURES = ("predict_pixels", "resize_image")
MISSING_METADATA = "{}: missing; every version needs the metadata its exporter writes"
# Rounds of timed calls at each batch size after the first call: at least MIN_ROUNDS, so one
# preempted call cannot decide alone; at most MAX_ROUNDS, where a fast model's medians are settled.
MIN_ROUNDS, MAX_ROUNDS = 3, 15


@dataclass(frozen=True)
class BatchTiming:
    """The model's steady time for one call at one batch size: the median of `calls` timed calls."""

    batch_size: int
    seconds: float
    calls: int

    @property
    def images_per_second(self) -> float:
        return self.batch_size / self.seconds


def timed_batch_sizes(largest: int) -> list[int]:
    """The batch sizes the curve is timed at: powers of two below `largest`, and `largest`."""
    return sorted({2**i for i in range(largest.bit_length()) if 2**i < largest} | {largest})


@dataclass
class Model:
    """A loaded model version and the two signatures the service calls."""

    path: Path
    metadata: ModelMetadata
    device: str
    load_seconds: float
    saved_model: Any = field(repr=False)
    warmup_seconds: float = 0.0
    warmup_batch_sizes: list[int] = field(default_factory=list)
    first_calls_seconds: float = 0.0  # the part of warm-up spent on each batch size's first call
    batch_curve: list[BatchTiming] = field(default_factory=list)
    curve_version: int | None = None  # the version whose warm-up timed `batch_curve`

    def __post_init__(self) -> None:
        self._resize = self.saved_model.signatures["resize_image"]
        self._predict = self.saved_model.signatures["predict_pixels"]

    @property
    def name(self) -> str:
        """The name it is served under: its folder in the repository."""
        return self.path.parent.name

    @property
    def version(self) -> int:
        return int(self.path.name)

    @property
    def labels(self) -> list[str]:
        return self.metadata.labels

    def ood_threshold(self, override: float | None = None) -> float | None:
        """The ood_score above which an answer of this version is not confident: `override`
        (OOD_THRESHOLD) when set, else the one chosen at export; None when the version has no score."""
        if self.metadata.confidence is None:
            return None
        return self.metadata.confidence.ood.threshold if override is None else override

    def resize(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB [h, w, 3] -> float32 [height, width, 3]: the SavedModel's resize, as in training."""
        return self._resize(image=image)["pixels"].numpy()

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        """float32 [batch, height, width, 3] in 0..255 -> one record per image: its `probabilities`
        [classes] (calibrated, for versions exported with a temperature) and its `ood_score` (NaN for
        versions exported before the score). One row per image, as the batcher hands them out."""
        outputs = self._predict(pixels=pixels)
        probabilities = outputs["probabilities"].numpy()
        records = np.empty(
            len(probabilities),
            [("probabilities", np.float32, probabilities.shape[1:]), ("ood_score", np.float32)],
        )
        records["probabilities"] = probabilities
        records["ood_score"] = outputs["ood_score"].numpy() if "ood_score" in outputs else np.nan
        return records

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """float32 [batch, height, width, 3] in 0..255 -> probabilities [batch, classes]."""
        return self.infer(pixels)["probabilities"]

    def runs_like(self, other: "Model") -> bool:
        """Whether `other` is the same network on the same device, so runs at the same speed: the same
        layers, input and signatures (a retrained version of it; which layers trained does not count)."""
        mine, theirs = self.metadata, other.metadata
        return (
            self.device == other.device
            and mine.input == theirs.input
            and mine.signatures == theirs.signatures
            and mine.architecture.model_dump(exclude={"trainable_params"})
            == theirs.architecture.model_dump(exclude={"trainable_params"})
        )

    def warm_up(self, batch_sizes: list[int], measure_seconds: float = 0.0) -> None:
        """Run every batch size the batcher can form once, so no request pays for a first call; then,
        with `measure_seconds`, time the model at `timed_batch_sizes` (see `measure_batch_curve`)."""
        start = time.perf_counter()
        size = self.metadata.input
        self.resize(np.zeros((size.height + 1, size.width + 1, 3), np.uint8))
        pixels = np.zeros((max(batch_sizes), size.height, size.width, 3), np.float32)
        for batch_size in batch_sizes:
            probabilities = self.infer(pixels[:batch_size])["probabilities"]
            if probabilities.shape != (batch_size, len(self.labels)):
                raise ModelLoadError(
                    f"{self.path}: the model gives probabilities of shape {list(probabilities.shape[1:])} "
                    f"per image, but {METADATA_FILE} lists {len(self.labels)} labels"
                )
        self.first_calls_seconds = time.perf_counter() - start
        if measure_seconds > 0:
            self.batch_curve = self.measure_batch_curve(
                pixels, timed_batch_sizes(max(batch_sizes)), measure_seconds
            )
            self.curve_version = self.version
        self.warmup_seconds = time.perf_counter() - start
        self.warmup_batch_sizes = list(batch_sizes)

    def measure_batch_curve(
        self, pixels: np.ndarray, batch_sizes: list[int], seconds: float
    ) -> list[BatchTiming]:
        """The median time of a call at each of `batch_sizes`, in rounds that call each size in turn,
        so that a moment when the machine is busy slows every size alike rather than one of them.

        Rounds go on while under `seconds` in all, from MIN_ROUNDS to MAX_ROUNDS: a slow model's
        MIN_ROUNDS may take longer than `seconds` (its first calls took longer still).
        """
        times: dict[int, list[float]] = {size: [] for size in batch_sizes}
        start = time.perf_counter()
        for round_ in range(MAX_ROUNDS):
            if round_ >= MIN_ROUNDS and time.perf_counter() - start >= seconds:
                break
            for size in batch_sizes:
                called = time.perf_counter()
                self.predict(pixels[:size])
                times[size].append(time.perf_counter() - called)
        return [BatchTiming(size, statistics.median(calls), len(calls)) for size, calls in times.items()]


def list_versions(model_dir: Path) -> dict[int, Path]:
    """The numbered folders of a model (TF Serving's layout); an exporter's hidden staging folders are not."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: no such folder (MODEL_BASE_PATH/MODEL_NAME); train a model first")
    return {int(p.name): p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}


def no_versions(model_dir: Path) -> ModelLoadError:
    return ModelLoadError(
        f"{model_dir}: no model versions in it (numbered folders such as {model_dir / '1'})"
    )


def incomplete(version_dir: Path) -> str | None:
    """What a version folder still lacks to be loaded, or None once an exporter has finished it."""
    if not (version_dir / "saved_model.pb").is_file():
        return f"{version_dir}: no saved_model.pb in it; the version is empty or incomplete"
    if not (version_dir / METADATA_FILE).is_file():
        return MISSING_METADATA.format(version_dir / METADATA_FILE)
    return None


def read_metadata(version_dir: Path) -> ModelMetadata:
    file = version_dir / METADATA_FILE
    try:
        return ModelMetadata.model_validate_json(file.read_bytes())
    except FileNotFoundError:
        raise ModelLoadError(MISSING_METADATA.format(file)) from None
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ModelLoadError(f"{file}: {where + ': ' if where else ''}{error['msg']}") from None


def place_on_device(gpu_memory_limit_mb: int | None, intra_op_threads: int, inter_op_threads: int) -> str:
    """Apply the threading and GPU memory settings; return the device the model will run on."""
    try:
        if intra_op_threads:  # 0 leaves TensorFlow's choice
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        if inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
        for gpu in tf.config.list_physical_devices("GPU"):
            # TensorFlow takes either growth or a fixed cap per GPU, not both.
            if gpu_memory_limit_mb is None:
                tf.config.experimental.set_memory_growth(gpu, True)
            else:
                limit = tf.config.LogicalDeviceConfiguration(memory_limit=gpu_memory_limit_mb)
                tf.config.set_logical_device_configuration(gpu, [limit])
    except RuntimeError as exc:  # TensorFlow already ran in this process (tests load several apps)
        logger.warning(
            "TensorFlow was initialised before: threading and GPU settings left as they were (%s)", exc
        )
    return "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"


def load_version(path: Path, device: str) -> Model:
    """Load the version in folder `path` onto `device`, or raise `ModelLoadError` naming what is wrong."""
    if problem := incomplete(path):
        raise ModelLoadError(problem)
    metadata = read_metadata(path)
    start = time.perf_counter()
    try:
        with tf.device(device):
            saved_model = tf.saved_model.load(str(path))
    except Exception as exc:  # whatever TensorFlow raises, the files are not a SavedModel it can run
        raise ModelLoadError(f"{path}: not a loadable SavedModel ({first_line(exc)})") from exc
    missing = [signature for signature in SIGNATURES if signature not in saved_model.signatures]
    if missing:
        raise ModelLoadError(f"{path}: the SavedModel lacks the signature(s) {', '.join(missing)}")
    return Model(path, metadata, device, time.perf_counter() - start, saved_model)


def first_line(exc: BaseException) -> str:
    """An exception in one line: TensorFlow's messages run to many."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
