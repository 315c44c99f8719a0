"""The one data plane under the service's three faces, as KServe's `DataPlane`.

It holds the model repository and the verbs every face calls: model lookup, readiness, and infer
(with the request limits and the cancellation of abandoned work). The faces only parse requests and
shape answers: `/predict` and `/model` (predict.py, model.py), TF Serving's `/v1` (tfserving.py),
the Open Inference Protocol's `/v2` (v2.py), and the readiness probes (health.py).
"""

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from starlette.requests import Request

from app.errors import ModelNotFound, ModelNotReady, RequestAbandoned, TooManyFiles, VersionNotFound
from app.runtime.classifier import Classifier, Upload
from app.runtime.model import Model
from app.runtime.repository import ModelRepository
from app.settings import Settings


class ImageCounter(Protocol):
    """Refuses a request once it holds too many images (`DataPlane.count_images`)."""

    def __call__(self, count: int, *, more_to_come: bool = False) -> None: ...


@dataclass(frozen=True)
class ImageResult:
    """What the model says of one image. Whatever else is said of each image belongs here, made once
    in `DataPlane.infer`, so that every face can shape it."""

    probabilities: np.ndarray  # float32 [classes]
    # How far the image is from the training data (higher: further), and whether that is within the
    # threshold (OOD_THRESHOLD, else the version's own); both None for a version exported without them.
    ood_score: float | None
    confident: bool | None

    @classmethod
    def of(cls, record: np.void, threshold: float | None) -> "ImageResult":
        """The result of one `Model.infer` record, judged against `threshold`."""
        score = float(record["ood_score"])
        if threshold is None or np.isnan(score):
            return cls(record["probabilities"], None, None)
        return cls(record["probabilities"], score, score <= threshold)


@dataclass(frozen=True)
class Inference:
    """The answer to one inference request: the version that gave it, and one result per image, in order."""

    model: Model
    images: list[ImageResult]


class DataPlane:
    """The model repository (once loaded) and the verbs over it; made once per app (`app.state.dataplane`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.repository: ModelRepository | None = None  # set by the lifespan once a version is loaded
        self.draining = False  # from the stop signal on: readiness fails while admitted requests finish

    def models(self) -> ModelRepository:
        """The model repository; `ModelNotReady` before it is loaded."""
        if self.repository is None:
            raise ModelNotReady("The model is not loaded")
        return self.repository

    def model(
        self, name: str | None = None, version: int | None = None, label: str | None = None
    ) -> Classifier:
        """The served version a request names: `name` (checked, when the protocol names the model),
        `version` or `label` (by default the highest version available).

        Raises `ModelNotFound`, `VersionNotFound` or `ModelNotReady`.
        """
        return self._serving(name).get(version=version, label=label)

    def ready(self) -> None:
        """Return while some version can answer; `ModelNotReady` before, and once shutdown begins."""
        if self.draining:
            raise ModelNotReady("The service is shutting down")
        self.models().get()

    def model_ready(self, name: str, version: int | None = None) -> None:
        """Return while the model (or its `version`) can answer; `ModelNotReady` while it cannot yet or
        failed to load, `ModelNotFound` or `VersionNotFound` when it is not in the repository."""
        models = self._serving(name)
        if version is None:
            models.get()
            return
        status = next((status for status in models.statuses() if status.version == version), None)
        if status is None:
            raise VersionNotFound(f"Version {version} of {name!r} is not in the model repository")
        if status.state != "AVAILABLE":
            reason = f": {status.error}" if status.error else ""
            raise ModelNotReady(f"Version {version} of {name!r} is {status.state}{reason}")

    def _serving(self, name: str | None) -> ModelRepository:
        """The repository, if it serves the model `name` (any, for None)."""
        models = self.models()
        if name is not None and name != models.name:
            raise ModelNotFound(f"Unknown model {name!r}: this server serves {models.name!r}")
        return models

    def count_images(self, count: int, *, more_to_come: bool = False) -> None:
        """Refuse a request of `count` images over MAX_FILES; the parsers count as early as they can,
        before the work of decoding or building what they count (`more_to_come`: the parser stopped)."""
        most = self.settings.max_files
        if count > most:
            counted = f"More than {most}" if more_to_come else str(count)
            raise TooManyFiles(f"{counted} images in one request; the most allowed is {most}")

    async def infer(
        self, request: Request, classifier: Classifier, inputs: Sequence[Upload] | np.ndarray
    ) -> Inference:
        """Classify encoded images (`(name, file)` pairs, decoded as /predict decodes its uploads) or
        float32 pixels [images, height, width, 3], each image one result.

        Raises `TooManyFiles`, the classifier's errors, and `RequestAbandoned` when the client
        disconnects first.
        """
        self.count_images(len(inputs))
        if isinstance(inputs, np.ndarray):
            work = classifier.classify_pixels(inputs)
        else:
            work = classifier.classify(inputs)
        records = await unless_abandoned(request, work)
        threshold = classifier.model.ood_threshold(self.settings.ood_threshold)
        return Inference(classifier.model, [ImageResult.of(record, threshold) for record in records])


async def unless_abandoned(request: Request, work: Coroutine[Any, Any, list[np.ndarray]]) -> list[np.ndarray]:
    """Run `work`, cancelling it if the client disconnects first: nobody would read the answer.

    A client that gave up (a timeout, a closed tab) would otherwise leave its images in the queue,
    and everyone behind them would wait for answers nobody reads. `work` runs in this task and a
    watcher cancels it on a disconnect: one task per request rather than two, on the busiest path.
    """
    this_task = asyncio.current_task()
    assert this_task is not None
    watcher = asyncio.ensure_future(_cancel_on_disconnect(request, this_task))
    try:
        return await work
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():  # the watcher cancelled us, not the server
            this_task.uncancel()
            raise RequestAbandoned("The client disconnected before its answer was ready") from None
        raise
    finally:
        watcher.cancel()  # no-op once finished


async def _cancel_on_disconnect(request: Request, task: asyncio.Task) -> None:
    """Cancel `task` when the client disconnects; the body has been read, so nothing else can arrive."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    task.cancel()
