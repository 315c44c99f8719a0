"""The `metadata.json` that the exporter writes beside each SavedModel version."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class InputSpec(BaseModel):
    """The size the model's own preprocessing produces, how JPEGs are decoded before it, and how it
    crops and resizes (the SavedModel's `resize_image` does both; a client sending pixels must too)."""

    height: int = Field(ge=1, examples=[128])
    width: int = Field(ge=1, examples=[128])
    jpeg_scaling: Literal["full", "dct"] = Field(
        "full",
        description=(
            "dct: a JPEG is decoded at the greatest DCT reduction (1/1, 1/2, 1/4 or 1/8) that keeps it "
            "at least height x width, as the model was trained; full: at full size, as versions "
            "exported before DCT scaling were trained (their metadata.json has no jpeg_scaling)."
        ),
        examples=["dct"],
    )

    central_crop: float | None = Field(
        None,
        gt=0,
        le=1,
        description=(
            "The fraction of each side kept around the centre before the resize (TF-slim's evaluation "
            "crop is 0.875), or null: the whole image is resized."
        ),
        examples=[None],
    )
    resize: Literal["bilinear", "bilinear_tf1"] = Field(
        "bilinear",
        description=(
            "bilinear: TensorFlow 2's tf.image.resize (half-pixel centres), as training resizes; "
            "bilinear_tf1: TensorFlow 1's resize_bilinear(align_corners=False), as TF-slim's "
            "preprocessing resizes (an imported checkpoint)."
        ),
        examples=["bilinear"],
    )

    @property
    def decode_size(self) -> tuple[int, int] | None:
        """The size to give `imaging.decode` so it decodes as training did (None: full size)."""
        return (self.height, self.width) if self.jpeg_scaling == "dct" else None


class LayerSummary(BaseModel):
    """One Keras layer."""

    name: str = Field(examples=["Mixed_3b"])
    type: str = Field(examples=["Concatenate"])
    output_shape: list[int | None] = Field(examples=[[28, 28, 256]])
    params: int = Field(ge=0, examples=[0])


class Architecture(BaseModel):
    """The network: its input, classes, parameter counts and layers."""

    name: str = Field(examples=["inception_v2"])
    input_shape: list[int] = Field(examples=[[128, 128, 3]])
    num_classes: int = Field(ge=1, examples=[5])
    total_params: int = Field(ge=0, examples=[10_200_000])
    trainable_params: int = Field(ge=0, examples=[10_180_000])
    layers: list[LayerSummary]


FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")]


class ReportFigure(BaseModel):
    """One plot of the training report and what it shows."""

    file: FileName
    caption: str


class ReportManifest(BaseModel):
    """The training report the exporter wrote into the version: a folder, its page, its files."""

    folder: FileName
    page: FileName
    files: list[FileName]
    figures: list[ReportFigure] = Field(
        [], description="The plots among `files`, with captions; versions exported before have none."
    )


class Calibration(BaseModel):
    """How the probabilities were calibrated at export, and the expected calibration error it left."""

    method: str = Field(examples=["temperature scaling"])
    fitted_on: str = Field(examples=["the 500 validation images"])
    bins: int = Field(ge=1, examples=[15])
    ece_before: float = Field(ge=0, le=1, examples=[0.041])
    ece_after: float = Field(ge=0, le=1, examples=[0.012])


class OutOfDistribution(BaseModel):
    """The score that tells images unlike the training data, and the threshold chosen at export."""

    method: str = Field(examples=["mahalanobis"])
    score: str = Field(description="What `ood_score` measures.")
    threshold: float = Field(examples=[412.5])
    threshold_rule: str = Field(
        examples=[
            "keeps at least 95% of images like the 500 validation images, with 95% confidence "
            "(their score ranked 484, lowest first)"
        ]
    )


class ConfidenceSpec(BaseModel):
    """metadata.json's `confidence`: written by exporters since calibrated probabilities and
    `ood_score` were added to the signatures."""

    temperature: float = Field(gt=0, examples=[1.31])
    calibration: Calibration
    ood: OutOfDistribution


class ModelMetadata(BaseModel):
    """What the service needs from `metadata.json`; other keys are kept and ignored."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: int
    created_at: datetime
    labels: list[str] = Field(min_length=1)
    input: InputSpec
    architecture: Architecture
    signatures: dict[str, Any]
    training: dict[str, Any] = {}
    report: ReportManifest | None = None
    confidence: ConfidenceSpec | None = None

    @model_validator(mode="after")
    def _one_label_per_class(self) -> "ModelMetadata":
        if len(self.labels) != self.architecture.num_classes:
            raise ValueError(
                f"{len(self.labels)} labels for {self.architecture.num_classes} classes "
                "(architecture.num_classes)"
            )
        return self
