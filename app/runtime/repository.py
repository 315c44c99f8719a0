"""The model repository: the versions of one model, loaded, labelled and unloaded while serving,
in TF Serving's lifecycle (KServe calls this a model repository; each version is a `Classifier`).

The model's folder is checked at start-up and then every MODEL_POLL_SECONDS on a thread of its
own. Each check:
- loads and warms up the versions that MODEL_VERSION_POLICY selects and that are not served yet,
  one at a time, while the others keep serving; a version takes traffic once warmed up;
- unloads the served versions the policy no longer selects, but only once a selected version is
  available, so the service never drops to no version at all;
- re-reads the version labels (MODEL_VERSION_LABELS, then `version_labels.json`).

A version that cannot be loaded is END with the reason and is not tried again until its folder
changes. A folder counts as a version once it holds saved_model.pb and metadata.json (the exporter
renames a finished folder into place, so a version appears complete).

Unloading waits for the requests holding the version's `Classifier` to let go of it (a weak
reference tells), up to REQUEST_TIMEOUT_MS and a margin, so admitted requests finish on the
version that admitted them; then the batcher drains and stops and the model's memory is freed.
"""

import functools
import gc
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from app.errors import ModelLoadError, ModelNotReady, VersionNotFound
from app.runtime.classifier import Classifier
from app.runtime.model import first_line, incomplete, list_versions, no_versions, place_on_device
from app.settings import Settings, VersionLabels, check_label_names

logger = logging.getLogger(__name__)

LABELS_FILE = "version_labels.json"
# Beyond REQUEST_TIMEOUT_MS, how long an unload waits for requests still holding the version.
RELEASE_MARGIN_S = 10.0

State = Literal["LOADING", "AVAILABLE", "UNLOADING", "END"]
VersionBatchObserver = Callable[[int, int, float], None]  # version, images, seconds
Fingerprint = tuple[tuple[str, int, int], ...]

_labels_file = TypeAdapter(VersionLabels)


@dataclass(frozen=True)
class VersionStatus:
    """Where one version is in its lifecycle; `error` says why a version that failed to load is END."""

    version: int
    state: State
    error: str | None = None


class ModelRepository:
    """The versions of MODEL_NAME that MODEL_VERSION_POLICY selects (see the module docstring)."""

    def __init__(self, settings: Settings, on_batch: VersionBatchObserver | None = None) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.model_dir = settings.model_base_path / settings.model_name
        self._on_batch = on_batch
        self._lock = threading.Lock()  # guards _serving, _states and _labels (read by requests)
        self._serving: dict[int, Classifier] = {}
        self._states: dict[int, VersionStatus] = {}
        self._labels: dict[str, int] = {}  # MODEL_VERSION_LABELS and the file's, read by each check
        self._failed: dict[int, Fingerprint] = {}  # the folder as it was when it failed to load
        self._file_labels: dict[str, int] = {}
        self._reported: set[str] = set()  # problems already logged, so each poll does not repeat them
        self._checking = threading.Lock()  # one check of the folder at a time
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._decoders = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self._device: str | None = None
        self._started = False

    @classmethod
    def start(cls, settings: Settings, on_batch: VersionBatchObserver | None = None) -> "ModelRepository":
        """Load the versions the policy selects, then watch the folder.

        Raises `ModelLoadError`, naming the path and the problem, when no version can be served.
        """
        repository = cls(settings, on_batch)
        try:
            list_versions(repository.model_dir)  # a missing folder is named as such
            repository.poll()
            if not repository._serving:
                raise repository._nothing_to_serve()  # one line for everything: the service will not start
        except BaseException:
            repository.close()
            raise
        for status in repository.statuses():
            if status.error:
                logger.error("Cannot serve version %d: %s", status.version, status.error)
        repository._started = True
        if settings.model_poll_seconds > 0:
            repository._watcher = threading.Thread(
                target=repository._watch, name="model-watcher", daemon=True
            )
            repository._watcher.start()
        return repository

    def get(self, version: int | None = None, label: str | None = None) -> Classifier:
        """The classifier of `version`, or of the version `label` points to; by default the highest.

        Raises `VersionNotFound` for a version or label that is not available, and `ModelNotReady`
        when no version is.
        """
        with self._lock:
            if not self._serving:
                raise ModelNotReady(f"No version of {self.name} is available")
            if label is not None:
                version = self._resolve(label)
            if version is None:
                return self._serving[max(self._serving)]
            if version not in self._serving:
                raise VersionNotFound(self._why_not_available(version))
            return self._serving[version]

    def available(self) -> dict[int, Classifier]:
        """The classifiers taking traffic, by version."""
        with self._lock:
            return dict(self._serving)

    def statuses(self) -> list[VersionStatus]:
        """Every version known: loading, available, unloading, or ended (unloaded, or failed to load)."""
        with self._lock:
            return [self._states[version] for version in sorted(self._states)]

    def labels(self) -> dict[str, int]:
        """The version labels in force: those pointing to an available version."""
        with self._lock:
            return {label: v for label, v in sorted(self._labels.items()) if v in self._serving}

    def poll(self) -> None:
        """Check the folder once: load what the policy selects, unload what it dropped, relabel."""
        with self._checking:
            present = self._present_versions()
            # Highest first; a version that fails drops out of the choice, which may then fall on another.
            while pending := self._wanted(present) - self._serving.keys():
                if self._stop.is_set():
                    return
                version = max(pending)
                self._load(version, present[version])
            wanted = self._wanted(present)
            if wanted & self._serving.keys():
                for version in sorted(self._serving.keys() - wanted):
                    self._unload(version)
            elif self._serving:
                self._report_once(
                    f"keep:{sorted(self._serving)}",
                    "None of the versions MODEL_VERSION_POLICY selects is available; still serving %s",
                    ", ".join(map(str, sorted(self._serving))),
                )
            self._read_labels()

    def close(self) -> None:
        """Stop watching, finish the queued images of every version, and stop the threads."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        with self._checking:
            for version in sorted(self._serving):
                self._set_state(version, "UNLOADING")
                self._serving[version].close()
                with self._lock:
                    del self._serving[version]
                self._set_state(version, "END")
        self._decoders.shutdown()

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.model_poll_seconds):
            try:
                self.poll()
            except Exception:  # the next check may do better; serving goes on meanwhile
                logger.exception("Checking %s for model versions failed", self.model_dir)

    def _present_versions(self) -> dict[int, Path]:
        """The complete version folders, forgetting the ended versions whose folder is gone."""
        try:
            folders = list_versions(self.model_dir)
        except ModelLoadError as exc:
            self._report_once(str(exc), "%s", exc)
            folders = {}
        present = {version: path for version, path in folders.items() if incomplete(path) is None}
        with self._lock:
            for version, status in list(self._states.items()):
                if version not in present and status.state == "END":
                    del self._states[version]
                    self._failed.pop(version, None)
        return present

    def _wanted(self, present: dict[int, Path]) -> set[int]:
        """The versions the policy selects among those present, passing over the ones that failed.

        A failed version is tried again once its folder changes (fixed, or copied in again).
        """
        candidates = {
            version
            for version, path in present.items()
            if version not in self._failed or self._failed[version] != fingerprint(path)
        }
        return self.settings.version_policy.select(candidates)

    def _load(self, version: int, path: Path) -> None:
        self._set_state(version, "LOADING")
        self._failed.pop(version, None)
        if self._device is None:
            settings = self.settings
            self._device = place_on_device(
                settings.gpu_memory_limit_mb, settings.intra_op_threads, settings.inter_op_threads
            )
        started = time.monotonic()
        on_batch = functools.partial(self._on_batch, version) if self._on_batch else None
        try:
            serving = self.available().values()
            classifier = Classifier.start(
                path, self._device, self.settings, self._decoders, on_batch, serving
            )
        except Exception as exc:  # whatever is wrong with this version, the others keep serving
            error = str(exc) if isinstance(exc, ModelLoadError) else f"{path}: {first_line(exc)}"
            self._failed[version] = fingerprint(path)
            self._set_state(version, "END", error)
            if self._started:  # start-up reports its failures itself
                logger.error("Cannot serve version %d: %s", version, error)
            return
        keep_heap_frozen()
        with self._lock:
            self._serving[version] = classifier
        self._set_state(version, "AVAILABLE")
        logger.info(
            "Serving %s version %d (ready %.1f s after loading began)",
            self.name,
            version,
            time.monotonic() - started,
        )

    def _unload(self, version: int) -> None:
        """Stop routing to `version`, wait for the requests holding it, then free it."""
        with self._lock:
            classifier = self._serving.pop(version)
        self._set_state(version, "UNLOADING")
        released = threading.Event()
        weakref.finalize(classifier, released.set)
        batcher = classifier.batcher
        del classifier
        deadline = time.monotonic() + self.settings.request_timeout_ms / 1000 + RELEASE_MARGIN_S
        while not released.wait(0.5) and time.monotonic() < deadline:
            gc.collect()  # a request's traceback may hold the classifier in a reference cycle
        if not released.is_set():
            logger.warning("Unloading version %d while requests still hold it; they get 503", version)
        batcher.close()
        del batcher
        self._set_state(version, "END")
        gc.unfreeze()  # the version's objects were frozen with the heap: let the collector free them
        keep_heap_frozen()
        logger.info("Unloaded %s version %d", self.name, version)

    def _set_state(self, version: int, state: State, error: str | None = None) -> None:
        with self._lock:
            self._states[version] = VersionStatus(version, state, error)

    def _resolve(self, label: str) -> int:
        if label not in self._labels:
            known = describe_labels(self._labels)
            raise VersionNotFound(f"No version of {self.name} is labelled {label!r}; labels: {known}")
        version = self._labels[label]
        if version not in self._serving:
            raise VersionNotFound(f"Label {label!r} points to {self._why_not_available(version)}")
        return version

    def _why_not_available(self, version: int) -> str:
        serving = ", ".join(map(str, sorted(self._serving)))
        status = self._states.get(version)
        if status is None:
            return f"version {version} of {self.name}, which is not served; available: {serving}"
        reason = f": {status.error}" if status.error else ""
        return f"version {version} of {self.name}, which is {status.state}{reason}; available: {serving}"

    def _read_labels(self) -> None:
        """MODEL_VERSION_LABELS, with `version_labels.json` on top; a label on an unavailable version is
        not in force (TF Serving's rule) and is logged once."""
        file = self.model_dir / LABELS_FILE
        try:
            self._file_labels = check_label_names(_labels_file.validate_json(file.read_bytes()))
        except FileNotFoundError:
            self._file_labels = {}
        except (OSError, ValidationError, ValueError) as exc:  # keep the labels read last time
            problem = exc.errors(include_url=False)[0]["msg"] if isinstance(exc, ValidationError) else exc
            self._report_once(
                f"labels:{problem}",
                '%s: %s; expected {"stable": 1, ...}, kept the labels as they were',
                file,
                problem,
            )
        labels = dict(self.settings.model_version_labels) | self._file_labels
        with self._lock:
            before = {label: v for label, v in self._labels.items() if v in self._serving}
            self._labels = labels
        in_force = self.labels()
        if in_force != before:
            logger.info("Version labels in force: %s", describe_labels(in_force))
        for label, version in sorted(labels.items()):
            key = f"dangling:{label}={version}"
            if label in in_force:
                self._reported.discard(key)  # should it dangle again, say so again
            else:
                self._report_once(
                    key,
                    "Label %r points to version %d, which is not available; the label is not in force",
                    label,
                    version,
                )

    def _report_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._reported:
            self._reported.add(key)
            logger.warning(message, *args)

    def _nothing_to_serve(self) -> ModelLoadError:
        """Why start-up found nothing to serve, naming the paths and problems."""
        if errors := [status.error for status in self.statuses() if status.error]:
            return ModelLoadError("; ".join(errors))
        folders = list_versions(self.model_dir)
        if not folders:
            return no_versions(self.model_dir)
        policy = self.settings.version_policy
        if policy.kind == "specific" and not set(policy.versions) & folders.keys():
            setting = "MODEL_VERSION" if self.settings.model_version else "MODEL_VERSION_POLICY"
            wanted = ", ".join(map(str, policy.versions))
            where = self.model_dir / wanted if len(policy.versions) == 1 else self.model_dir
            present = ", ".join(map(str, sorted(folders)))
            return ModelLoadError(f"{where}: no such version ({setting} {wanted}); present: {present}")
        return ModelLoadError("; ".join(filter(None, (incomplete(path) for path in folders.values()))))


def describe_labels(labels: dict[str, int]) -> str:
    return ", ".join(f"{label}={version}" for label, version in sorted(labels.items())) or "none"


def fingerprint(folder: Path) -> Fingerprint:
    """Every file under `folder` with its size and modification time: changes when the folder does."""
    files = []
    for root, _, names in os.walk(folder):
        for name in names:
            stat = (Path(root) / name).stat()
            files.append((os.path.relpath(Path(root) / name, folder), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(files))


def keep_heap_frozen() -> None:
    """Collect, then keep the surviving objects (TensorFlow's, the models') out of later collections.

    TensorFlow and a model leave some 450,000 long-lived objects; every full collection walked them
    all and stalled every request for about 200 ms. Frozen, the collector skips them.
    """
    gc.collect()
    gc.freeze()
