"""POST /predict: classify uploaded images."""

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from app.api.deps import ClassifierDep, DataPlaneDep
from app.api.problems import PROBLEM_RESPONSES
from app.api.uploads import read_uploads, upload_body

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


def top_predictions(probabilities: np.ndarray, labels: list[str], k: int) -> list[Prediction]:
    """The `k` highest probabilities, highest first; ties in class order."""
    scores = probabilities.tolist()  # Python floats: indexing a NumPy array per class costs more
    best = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:k]  # stable: ties in order
    return [Prediction(label=labels[i], index=i, score=scores[i]) for i in best]


@router.post(
    "/predict",
    summary="Classify images",
    responses=PROBLEM_RESPONSES,
    openapi_extra=upload_body(
        "file", "One or more images (JPEG, PNG, GIF, BMP or WebP), each a part named `file`."
    ),
)
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
) -> PredictResponse:
    """Classify each uploaded image: its most likely labels with their probabilities, highest first.

    Try it: `curl -F file=@cat.jpg -F file=@dog.png 'http://127.0.0.1:8000/predict?top_k=3'`
    """
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
    return PredictResponse(
        model=ModelRef(name=inference.model.name, version=inference.model.version),
        results=[
            FileResult(
                filename=filename,
                predictions=top_predictions(image.probabilities, labels, k),
                confident=image.confident,
                ood_score=image.ood_score,
            )
            for (filename, _), image in zip(uploads, inference.images, strict=True)
        ],
    )
