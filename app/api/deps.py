"""Shared route dependencies, as `Annotated` aliases that every route uses instead of `app.state`."""

from typing import Annotated

from fastapi import Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from app.errors import ModelNotReady
from app.runtime.classifier import Classifier
from app.runtime.server import ModelServer

VERSION_HEADER = "X-Model-Version"


async def get_models(request: Request) -> ModelServer:
    """The model server (async: FastAPI would run a plain function on a worker thread)."""
    models: ModelServer | None = request.app.state.models
    if models is None:
        raise ModelNotReady("The model is not loaded")
    return models


ModelsDep = Annotated[ModelServer, Depends(get_models)]


async def get_classifier(
    models: ModelsDep,
    response: Response,
    version: Annotated[
        int | None, Query(ge=1, description="Use this model version. Default: the highest available.")
    ] = None,
    label: Annotated[
        str | None,
        Query(min_length=1, description="Use the version this label (`stable`, `canary`) points to."),
    ] = None,
) -> Classifier:
    """The version a request asked for (`?version=` or `?label=`), named in the `X-Model-Version` header.

    The request holds the classifier until it is done, so it finishes on that version even if the
    version is unloaded meanwhile.
    """
    if version is not None and label is not None:
        raise RequestValidationError(
            [{"loc": ("query", "label"), "msg": "Give a version or a label, not both", "type": "value_error"}]
        )
    classifier = models.get(version, label)
    response.headers[VERSION_HEADER] = str(classifier.model.version)
    return classifier


ClassifierDep = Annotated[Classifier, Depends(get_classifier)]
