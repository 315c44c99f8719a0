"""The one data plane under the protocol endpoints: limits, batching and errors shared by all of them.

The endpoint modules (`tfserving.py` for /v1, `v2.py` for the Open Inference Protocol) only parse
requests and shape answers; here encoded images go through the same decoding path as /predict's
uploads, and pixels straight into the same batcher.
"""

import io
from collections.abc import Sequence

import numpy as np
from fastapi import Request

from app.api.predict import unless_abandoned
from app.errors import ModelNotFound
from app.runtime.classifier import Classifier

Image = tuple[str, bytes]  # a name for error messages ("instances[0]"), the encoded image


def check_model_name(served: str, requested: str, message: str) -> None:
    """Raise `ModelNotFound` with the protocol's `message` unless `requested` is the served model."""
    if requested != served:
        raise ModelNotFound(message)


async def classify_images(
    request: Request, classifier: Classifier, images: Sequence[Image]
) -> list[np.ndarray]:
    """Probabilities for each encoded image, decoded as /predict decodes its uploads."""
    uploads = [(name, io.BytesIO(data)) for name, data in images]
    return await unless_abandoned(request, classifier.classify(uploads))


async def classify_pixels(request: Request, classifier: Classifier, pixels: np.ndarray) -> list[np.ndarray]:
    """Probabilities for each image of float32 `pixels` [images, height, width, 3]."""
    return await unless_abandoned(request, classifier.classify_pixels(pixels))
