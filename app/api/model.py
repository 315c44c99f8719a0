"""GET /model: what the served model is, how it was trained, and how it runs here."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from app.api.predict import get_classifier
from app.api.problems import PROBLEM_RESPONSES
from app.runtime.classifier import Classifier
from app.runtime.metadata import Architecture, InputSpec

router = APIRouter(tags=["model"])


class RuntimeInfo(BaseModel):
    """Where and how the model runs in this process."""

    device: str = Field(examples=["/CPU:0"])
    load_seconds: float = Field(examples=[0.8])
    warmup_seconds: float = Field(examples=[1.9])
    warmup_batch_sizes: list[int] = Field(examples=[[1, 2, 3, 4]])
    max_batch_size: int = Field(examples=[32])
    batch_timeout_ms: float = Field(examples=[5])
    max_queue_size: int = Field(examples=[256])
    request_timeout_ms: float = Field(examples=[10000])
    decode_threads: int = Field(examples=[2])
    intra_op_threads: int = Field(description="0: TensorFlow's choice.", examples=[0])
    inter_op_threads: int = Field(description="0: TensorFlow's choice.", examples=[0])


class ModelInfo(BaseModel):
    """The served model: identity, labels, architecture, signatures, training summary and runtime."""

    name: str = Field(examples=["inception_v2"])
    version: int = Field(examples=[3])
    created_at: datetime
    labels: list[str] = Field(examples=[["circle", "cross", "square", "star", "triangle"]])
    input: InputSpec
    architecture: Architecture
    signatures: dict[str, Any] = Field(description="Each SavedModel signature's inputs and outputs.")
    training: dict[str, Any] = Field(description="Training parameters, data and final metrics, as exported.")
    runtime: RuntimeInfo


@router.get("/model", summary="Describe the model", responses={503: PROBLEM_RESPONSES[503]})
async def model_info(classifier: Annotated[Classifier, Depends(get_classifier)]) -> ModelInfo:
    """Describe the served model: labels, architecture with every layer, training summary, runtime."""
    model, settings = classifier.model, classifier.settings
    return ModelInfo(
        name=model.name,
        version=model.version,
        created_at=model.metadata.created_at,
        labels=model.labels,
        input=model.metadata.input,
        architecture=model.metadata.architecture,
        signatures=model.metadata.signatures,
        training=model.metadata.training,
        runtime=RuntimeInfo(
            device=model.device,
            load_seconds=model.load_seconds,
            warmup_seconds=model.warmup_seconds,
            warmup_batch_sizes=model.warmup_batch_sizes,
            **settings.model_dump(
                include={
                    "max_batch_size",
                    "batch_timeout_ms",
                    "max_queue_size",
                    "request_timeout_ms",
                    "decode_threads",
                    "intra_op_threads",
                    "inter_op_threads",
                }
            ),
        ),
    )
