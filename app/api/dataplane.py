"""The one data plane under the protocol endpoints: limits, batching and errors shared by all of them.

The endpoint modules (`tfserving.py` for /v1, `v2.py` for the Open Inference Protocol) only parse
requests and shape answers; here encoded images go through the same decoding path as /predict's
uploads, and pixels straight into the same batcher.
"""

import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
from fastapi import APIRouter, Request

from app.api.predict import unless_abandoned
from app.runtime.classifier import Classifier

Image = tuple[str, bytes]  # a name for error messages ("instances[0]"), the encoded image
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def route(router: APIRouter, method: str, paths: Iterable[str]) -> Callable[[Endpoint], Endpoint]:
    """Register one endpoint under several paths: a protocol's optional `/versions/{version}` parts."""

    def register(endpoint: Endpoint) -> Endpoint:
        for path in paths:
            router.add_api_route(path, endpoint, methods=[method])
        return endpoint

    return register


async def classify_images(
    request: Request, classifier: Classifier, images: Sequence[Image]
) -> list[np.ndarray]:
    """Probabilities for each encoded image, decoded as /predict decodes its uploads."""
    uploads = [(name, io.BytesIO(data)) for name, data in images]
    return await unless_abandoned(request, classifier.classify(uploads))


async def classify_pixels(request: Request, classifier: Classifier, pixels: np.ndarray) -> list[np.ndarray]:
    """Probabilities for each image of float32 `pixels` [images, height, width, 3]."""
    return await unless_abandoned(request, classifier.classify_pixels(pixels))
