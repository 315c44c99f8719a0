"""Shared route dependencies, as `Annotated` aliases that every route uses instead of `app.state`."""

from typing import Annotated

from fastapi import Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from app.api.dataplane import DataPlane
from app.runtime.classifier import Classifier

VERSION_HEADER = "X-Model-Version"


async def get_dataplane(request: Request) -> DataPlane:
    """The data plane (async: FastAPI would run a plain function on a worker thread)."""
    return request.app.state.dataplane


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]


async def get_classifier(
    dataplane: DataPlaneDep,
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
    classifier = dataplane.model(version=version, label=label)
    response.headers[VERSION_HEADER] = str(classifier.model.version)
    return classifier


ClassifierDep = Annotated[Classifier, Depends(get_classifier)]
