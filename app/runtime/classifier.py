"""One served model version: the loaded model behind its own batcher, decoding on a shared pool."""

import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import BinaryIO

import numpy as np

from app.errors import InvalidInput
from app.runtime.batcher import Batcher, BatchObserver, BatchTuner, choose_batching
from app.runtime.images import decode_image
from app.runtime.model import Model, load_version
from app.settings import Settings

logger = logging.getLogger(__name__)

Upload = tuple[str, BinaryIO]  # filename, file


class Classifier:
    """Turns uploaded images into class probabilities, batching concurrent requests."""

    def __init__(
        self,
        model: Model,
        settings: Settings,
        decoders: Executor,
        on_batch: BatchObserver | None = None,
        previous: BatchTuner | None = None,
    ) -> None:
        """`previous`: the tuner of a version that runs like this one, to start from its batching."""
        self.model = model
        self.settings = settings
        self._decoders = decoders
        self.max_batch_size = settings.batch_size_limit(model.device)  # MAX_BATCH_SIZE, or its default
        self.batcher = Batcher(
            model.infer,
            max_batch_size=self.max_batch_size,
            batch_timeout_s=settings.batch_timeout_ms / 1000,
            max_queue_size=settings.max_queue_size,
            request_timeout_s=settings.request_timeout_ms / 1000,
            on_batch=on_batch,
            tuner=tuner_for(model, previous),
        )

    @classmethod
    def start(
        cls,
        path: Path,
        device: str,
        settings: Settings,
        decoders: Executor,
        on_batch: BatchObserver | None = None,
        serving: Sequence["Classifier"] = (),
    ) -> "Classifier":
        """Load and warm up the version in `path`; raises `ModelLoadError` when it cannot be served.

        When one of the versions `serving` runs like it (the same network, retrained), the new version
        takes that one's timed curve and its batching as revised since, rather than timing its own:
        timed now, its curve would measure the other version's traffic on the same cores as much as
        the model, and the live batches have the better figures.
        """
        model = load_version(path, device)
        logger.info(
            "Loaded model %s version %d from %s on %s in %.2f s",
            model.name,
            model.version,
            model.path,
            model.device,
            model.load_seconds,
        )
        largest = settings.batch_size_limit(model.device)
        like = [other for other in serving if other.model.batch_curve and model.runs_like(other.model)]
        previous = max(like, key=lambda other: other.model.version, default=None)
        model.warm_up(list(range(1, largest + 1)), 0 if previous else settings.batch_measure_s)
        previous_tuner = None
        if previous is not None:
            model.batch_curve, model.curve_version = previous.model.batch_curve, previous.model.curve_version
            previous_tuner = previous.batcher.tuner
        classifier = cls(model, settings, decoders, on_batch, previous_tuner)
        batcher = classifier.batcher
        logger.info(
            "Warmed up version %d at batch sizes 1 to %d in %.2f s (first calls %.2f s, timing %.2f s); "
            "batches of up to %d, %s (images/s by batch size, timed by version %s: %s)",
            model.version,
            largest,
            model.warmup_seconds,
            model.first_calls_seconds,
            model.warmup_seconds - model.first_calls_seconds,
            batcher.max_batch_size,
            "waiting BATCH_TIMEOUT_MS for one to fill" if batcher.batch_timeout_s else "never waiting",
            model.curve_version,
            ", ".join(f"{t.batch_size}: {t.images_per_second:.1f}" for t in model.batch_curve) or "not timed",
        )
        return classifier

    async def classify(self, uploads: Sequence[Upload]) -> list[np.ndarray]:
        """`Model.infer`'s record (probabilities and ood_score) for each upload, in order; raises the
        first bad upload's error, in upload order.

        Raises `Overloaded` when the queue has no room, `RequestTimedOut` when an image waited
        too long, and an `InvalidImage` for an upload that cannot be decoded.
        """
        with self.batcher.admit(len(uploads)) as admission:
            return await admission.prepare_and_predict(self._decoders, self._prepare, uploads)

    async def classify_pixels(self, pixels: np.ndarray) -> list[np.ndarray]:
        """`Model.infer`'s record for each image of `pixels`: float32 [images, height, width, 3], RGB in
        0..255, already at the model's input size (the SavedModel's `predict_pixels` input).

        Raises `InvalidInput` for any other shape or a value that is not a finite number, and
        `Overloaded` or `RequestTimedOut` as `classify` does.
        """
        size = self.model.metadata.input
        if pixels.ndim != 4 or pixels.shape[1:] != (size.height, size.width, 3):
            raise InvalidInput(
                f"pixels of shape {list(pixels.shape)}; the model takes "
                f"[images, {size.height}, {size.width}, 3] (height, width, RGB)"
            )
        if not np.isfinite(pixels).all():
            raise InvalidInput("pixels hold NaN or infinite values; the model takes RGB values in 0..255")
        with self.batcher.admit(len(pixels)) as admission:
            return await admission.predict(list(pixels.astype(np.float32, copy=False)))

    def _prepare(self, upload: Upload) -> np.ndarray:
        """Decode and resize one upload (on a decoder thread): the model's input pixels, decoded as the
        version's training decoded them (JPEGs at reduced DCT scale or at full size)."""
        filename, file = upload
        size = self.model.metadata.input.decode_size
        return self.model.resize(decode_image(file, filename, self.settings.max_image_pixels, size))

    def close(self) -> None:
        """Finish the queued images, then stop the inference thread (the decoders are shared)."""
        self.batcher.close()


def tuner_for(model: Model, previous: BatchTuner | None = None) -> BatchTuner | None:
    """The tuner of the batching the model's timed curve asks for, or that `previous` has come to;
    None when the curve was not timed (BATCH_MEASURE_S=0): MAX_BATCH_SIZE and BATCH_TIMEOUT_MS are
    then taken as set, and kept."""
    if not model.batch_curve:
        return None
    curve = {timing.batch_size: timing.images_per_second for timing in model.batch_curve}
    if previous is None:
        return BatchTuner(sorted(curve), choose_batching(curve))
    tuner = BatchTuner(sorted(curve), previous.choice)
    tuner.source, tuner.revised_at = previous.source, previous.revised_at
    return tuner
