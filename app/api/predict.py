"""POST /predict: classify uploaded images."""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from pydantic_core import to_json

from app.api.dataplane import DataPlane
from app.api.deps import VERSION_HEADER, ClassifierDep, DataPlaneDep, get_dataplane
from app.api.problems import PROBLEM_RESPONSES
from app.api.protocols import is_whole_number
from app.api.uploads import read_uploads, upload_body
from app.runtime.classifier import Classifier

router = APIRouter(tags=["inference"])

DEFAULT_TOP_K = 5


class ModelRef(BaseModel):
    """Which model answered."""

    name: str = Field(examples=["inception_v2"])
    version: int = Field(examples=[3])


class Prediction(BaseModel):
    """One label and its probability."""

    label: str = Field(examples=["circle"])
    index: int = Field(ge=0, description="The class index in the model's output.", examples=[0])
    score: float = Field(ge=0, le=1, description="The model's probability for this label.", examples=[0.93])


class FileResult(BaseModel):
    """The most likely labels for one uploaded file, highest score first, and whether the image is
    like what the model was trained on."""

    filename: str = Field(examples=["cat.jpg"])
    predictions: list[Prediction]
    confident: bool | None = Field(
        description="false: the image is unlike the training data (its ood_score is above the threshold "
        'GET /model gives), so read the predictions as guesses ("not sure"). null: the version was '
        "exported before confidence scores and cannot tell.",
        examples=[True],
    )
    ood_score: float | None = Field(
        description="How far the image is from the training data; higher is further. null as `confident`.",
        examples=[212.4],
    )


class PredictResponse(BaseModel):
    """One result per uploaded file, in upload order."""

    model: ModelRef
    results: list[FileResult]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "model": {"name": "inception_v2", "version": 3},
                    "results": [
                        {
                            "filename": "shape.png",
                            "predictions": [
                                {"label": "circle", "index": 0, "score": 0.93},
                                {"label": "square", "index": 2, "score": 0.05},
                            ],
                            "confident": True,
                            "ood_score": 212.4,
                        }
                    ],
                }
            ]
        }
    }


def top_predictions(probabilities: np.ndarray, labels: list[str], k: int) -> list[dict[str, Any]]:
    """The `k` highest probabilities, highest first, ties in class order, each as a `Prediction`."""
    scores = probabilities.tolist()  # Python floats: indexing a NumPy array per class costs more
    best = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:k]  # stable: ties in order
    return [{"label": labels[i], "index": i, "score": scores[i]} for i in best]


async def classify(
    request: Request, dataplane: DataPlane, classifier: Classifier, top_k: int | None
) -> Response:
    """/predict's work once its query is read: the uploads classified by `classifier`, answered as a
    `PredictResponse` serialized as FastAPI would serialize it (pydantic's JSON), without validating
    what the code below builds, and with the `X-Model-Version` header."""
    labels = classifier.model.labels
    if top_k is not None and top_k > len(labels):
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "top_k"),
                    "msg": f"Input should be less than or equal to {len(labels)}, the number of classes",
                    "type": "less_than_equal",
                }
            ]
        )
    k = top_k or min(DEFAULT_TOP_K, len(labels))
    uploads = await read_uploads(request, "file", dataplane.count_images)
    inference = await dataplane.infer(request, classifier, uploads)
    answer = {
        "model": {"name": inference.model.name, "version": inference.model.version},
        "results": [
            {
                "filename": filename,
                "predictions": top_predictions(image.probabilities, labels, k),
                "confident": image.confident,
                "ood_score": image.ood_score,
            }
            for (filename, _), image in zip(uploads, inference.images, strict=True)
        ],
    }
    response = Response(to_json(answer, inf_nan_mode="null"), media_type="application/json")
    response.headers[VERSION_HEADER] = str(classifier.model.version)
    return response


PLAIN_NUMBER_DIGITS = 9  # longer numbers go FastAPI's way: pydantic reads a number of any size


def plain_query(request: Request) -> tuple[int | None, int | None, str | None] | None:
    """`top_k`, `version` and `label` when the query holds nothing FastAPI would refuse (each number
    whole and at least 1, a label not empty, not both a version and a label), else None."""
    if not request.scope["query_string"]:
        return None, None, None
    query = request.query_params
    numbers = []
    for name in ("top_k", "version"):
        text = query.get(name)
        if text is None:
            numbers.append(None)
            continue
        if not (is_whole_number(text) and len(text) <= PLAIN_NUMBER_DIGITS and int(text) >= 1):
            return None
        numbers.append(int(text))
    top_k, version = numbers
    label = query.get("label")
    if label == "" or (label is not None and version is not None):
        return None
    return top_k, version, label


class PredictRoute(APIRoute):
    """/predict's route. FastAPI documents it from `predict`'s signature and `PredictResponse`, but
    answers a request whose query is plain (`plain_query`) without solving `predict`'s dependencies
    and without validating the answer against `PredictResponse`: with the annotation checks they run,
    over a third of the event loop's CPU per one-image request (docs/performance.md, "The serving
    tax"). A query FastAPI would refuse goes FastAPI's way, so that each such error reads as FastAPI
    words it. As with `DataPlaneRoute`, dependencies given to `include_router` and
    `app.dependency_overrides` would be skipped on the plain way: `create_app` uses neither."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        documented = super().get_route_handler()

        async def handler(request: Request) -> Response:
            query = plain_query(request)
            if query is None:
                return await documented(request)
            top_k, version, label = query
            dataplane = await get_dataplane(request)
            return await classify(request, dataplane, dataplane.model(version=version, label=label), top_k)

        return handler


async def predict(
    request: Request,
    dataplane: DataPlaneDep,
    classifier: ClassifierDep,
    top_k: Annotated[
        int | None,
        Query(
            ge=1, description=f"Labels per image, at most the number of classes. Default: {DEFAULT_TOP_K}."
        ),
    ] = None,
) -> Response:
    """Classify each uploaded image: its most likely labels with their probabilities, highest first.

    Try it: `curl -F file=@cat.jpg -F file=@dog.png 'http://127.0.0.1:8000/predict?top_k=3'`
    """
    return await classify(request, dataplane, classifier, top_k)


router.add_api_route(
    "/predict",
    predict,
    methods=["POST"],
    response_model=PredictResponse,
    summary="Classify images",
    responses=PROBLEM_RESPONSES,
    openapi_extra=upload_body(
        "file", "One or more images (JPEG, PNG, GIF, BMP or WebP), each a part named `file`."
    ),
    route_class_override=PredictRoute,
)
