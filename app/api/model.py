"""GET /model: what a served model version is, how it was trained, how it runs here, and every version."""

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import ClassifierDep, DataPlaneDep
from app.api.problems import PROBLEM_RESPONSES
from app.api.report import report_url
from app.runtime.batcher import Batcher
from app.runtime.metadata import Architecture, Calibration, InputSpec
from app.runtime.model import Model

router = APIRouter(tags=["model"])


class BatchTimingInfo(BaseModel):
    """The model's median time for one call at one batch size, timed at warm-up on this machine."""

    batch_size: int = Field(examples=[8])
    ms_per_call: float = Field(examples=[31.5])
    images_per_second: float = Field(examples=[254.0])
    calls: int = Field(description="Timed calls the median is of.", examples=[5])


class LiveTimingInfo(BaseModel):
    """The model's images per second at one batch size, from live batches."""

    batch_size: int = Field(description="Batches of this size up to the next size timed.", examples=[8])
    images_per_second: float = Field(
        description="Exponentially weighted over its recent batches.", examples=[251.0]
    )
    batches: int = Field(description="Live batches counted at this size.", examples=[812])


class BatchingInfo(BaseModel):
    """The batching in force for this version: chosen from its timed curve at warm-up, revised from
    live batches since (as set when the curve was not timed)."""

    max_batch_size: int = Field(
        description="The largest batch formed: the size beyond which the curve gains under 5 %, "
        "at most MAX_BATCH_SIZE.",
        examples=[16],
    )
    batch_timeout_ms: float = Field(
        description="How long an image waits for a batch to fill: BATCH_TIMEOUT_MS, or 0 when no "
        "batch is faster per image than one image alone.",
        examples=[5],
    )
    source: Literal["settings", "warm-up", "live"] = Field(
        description="Where the choice in force came from: settings (BATCH_MEASURE_S=0), the curve "
        "timed at warm-up, or live batches.",
        examples=["warm-up"],
    )
    revised_at: datetime | None = Field(
        description="When live batches last revised the choice; null if never.", examples=[None]
    )
    revisions: int = Field(description="How often live batches have revised the choice.", examples=[0])
    curve: list[BatchTimingInfo] = Field(description="Empty when not timed (BATCH_MEASURE_S=0).")
    curve_version: int | None = Field(
        description="The version whose warm-up timed the curve: this one, or the served version it "
        "runs like (the same network, retrained) when it was loaded while that one served; the "
        "choice then started from that version's. Null when not timed.",
        examples=[3],
    )
    live_curve: list[LiveTimingInfo] = Field(
        description="Images per second by batch size from live batches; empty before any, and when "
        "the curve was not timed (the choice is then not revised)."
    )


class RuntimeInfo(BaseModel):
    """Where and how the model runs in this process."""

    device: str = Field(examples=["/CPU:0"])
    load_seconds: float = Field(examples=[0.8])
    warmup_seconds: float = Field(examples=[1.9])
    warmup_batch_sizes: list[int] = Field(examples=[[1, 2, 3, 4]])
    first_calls_seconds: float = Field(
        description="The part of warm-up spent on each batch size's first call; the rest timed the curve.",
        examples=[1.2],
    )
    batching: BatchingInfo
    max_batch_size: int = Field(examples=[32])
    batch_timeout_ms: float = Field(examples=[5])
    max_queue_size: int = Field(examples=[256])
    request_timeout_ms: float = Field(examples=[10000])
    batch_measure_s: float = Field(examples=[2])
    decode_threads: int = Field(examples=[2])
    intra_op_threads: int = Field(description="0: TensorFlow's choice.", examples=[0])
    inter_op_threads: int = Field(description="0: TensorFlow's choice.", examples=[0])


class VersionInfo(BaseModel):
    """One version of the model known to the service, and where it is in its lifecycle."""

    version: int = Field(examples=[3])
    state: Literal["LOADING", "AVAILABLE", "UNLOADING", "END"] = Field(
        description="END: unloaded, or failed to load (then `error` says why).", examples=["AVAILABLE"]
    )
    version_labels: list[str] = Field(
        description="The labels pointing to this version.", examples=[["stable"]]
    )
    error: str | None = Field(
        None,
        description="Why the version could not be loaded: the path and the problem.",
        examples=[None],
    )


class Plot(BaseModel):
    """A plot of the version's training report."""

    url: str = Field(examples=["/model/report/3/calibration.png"])
    caption: str = Field(examples=["Calibration: reliability diagram"])


NO_THRESHOLD = (
    "none: this version was exported before confidence scores; its probabilities are not calibrated "
    "and its answers say nothing of how sure it is (confident: null). Retrain it to get them."
)


class ConfidenceInfo(BaseModel):
    """How far to trust the version's answers: the threshold on `ood_score` and how it was chosen,
    and how the probabilities were calibrated."""

    threshold: float | None = Field(
        description='An answer whose ood_score is above it is not confident ("not sure"); null for '
        "a version exported before confidence scores (every answer's `confident` is then null).",
        examples=[412.5],
    )
    threshold_source: Literal["export", "setting"] | None = Field(
        description="export: chosen when the version was exported; setting: OOD_THRESHOLD.",
        examples=["export"],
    )
    threshold_rule: str = Field(
        description="How the threshold was chosen.",
        examples=[
            "keeps at least 95% of images like the 500 validation images, with 95% confidence "
            "(their score ranked 484, lowest first)"
        ],
    )
    method: str | None = Field(description="What `ood_score` is computed by.", examples=["mahalanobis"])
    score: str | None = Field(description="What `ood_score` measures, in words.")
    temperature: float | None = Field(
        description="The temperature the logits are divided by before the softmax.", examples=[1.31]
    )
    calibration: Calibration | None


class ModelInfo(BaseModel):
    """A served model version: identity, labels, architecture, signatures, training, runtime; all versions."""

    name: str = Field(examples=["inception_v2"])
    version: int = Field(examples=[3])
    created_at: datetime
    labels: list[str] = Field(examples=[["circle", "cross", "square", "star", "triangle"]])
    input: InputSpec
    architecture: Architecture
    signatures: dict[str, Any] = Field(description="Each SavedModel signature's inputs and outputs.")
    training: dict[str, Any] = Field(description="Training parameters, data and final metrics, as exported.")
    report: str | None = Field(
        description="The training report's URL; null when the version has none.", examples=["/model/report"]
    )
    plots: list[Plot] = Field(description="The training report's plots; empty when the version has none.")
    confidence: ConfidenceInfo
    runtime: RuntimeInfo
    versions: list[VersionInfo] = Field(description="Every version known: loading, available, or ended.")


@router.get(
    "/model",
    summary="Describe the model",
    responses={status: PROBLEM_RESPONSES[status] for status in (404, 503)},
)
async def model_info(classifier: ClassifierDep, dataplane: DataPlaneDep) -> ModelInfo:
    """Describe a served version (`?version=`, `?label=`; default the highest available): labels,
    architecture with every layer, training summary, runtime; and the state of every version.
    """
    model, settings, models = classifier.model, classifier.settings, dataplane.models()
    labels = models.labels()
    return ModelInfo(
        name=model.name,
        version=model.version,
        created_at=model.metadata.created_at,
        labels=model.labels,
        input=model.metadata.input,
        architecture=model.metadata.architecture,
        signatures=model.metadata.signatures,
        training=model.metadata.training,
        report=report_url(model),
        plots=plots(model),
        confidence=confidence_info(model, settings.ood_threshold),
        runtime=RuntimeInfo(
            device=model.device,
            load_seconds=model.load_seconds,
            warmup_seconds=model.warmup_seconds,
            warmup_batch_sizes=model.warmup_batch_sizes,
            first_calls_seconds=model.first_calls_seconds,
            batching=batching_info(classifier.batcher, model),
            max_batch_size=classifier.max_batch_size,
            **settings.model_dump(
                include={
                    "batch_timeout_ms",
                    "max_queue_size",
                    "request_timeout_ms",
                    "batch_measure_s",
                    "decode_threads",
                    "intra_op_threads",
                    "inter_op_threads",
                }
            ),
        ),
        versions=[
            VersionInfo(
                version=status.version,
                state=status.state,
                version_labels=[label for label, version in labels.items() if version == status.version],
                error=status.error,
            )
            for status in models.statuses()
        ],
    )


def batching_info(batcher: Batcher, model: Model) -> BatchingInfo:
    tuner = batcher.tuner
    return BatchingInfo(
        max_batch_size=batcher.max_batch_size,
        batch_timeout_ms=batcher.batch_timeout_s * 1000,
        source="settings" if tuner is None else tuner.source,
        revised_at=None
        if tuner is None or tuner.revised_at is None
        else datetime.fromtimestamp(tuner.revised_at, UTC),
        revisions=0 if tuner is None else tuner.revisions,
        curve=[
            BatchTimingInfo(
                batch_size=timing.batch_size,
                ms_per_call=timing.seconds * 1000,
                images_per_second=timing.images_per_second,
                calls=timing.calls,
            )
            for timing in model.batch_curve
        ],
        curve_version=model.curve_version,
        live_curve=[]
        if tuner is None
        else [
            LiveTimingInfo(batch_size=size, images_per_second=rate, batches=batches)
            for size, rate, batches in tuner.live_curve()
        ],
    )


def plots(model: Model) -> list[Plot]:
    """The report's plots with their captions (from the file names for versions that list none)."""
    report, url = model.metadata.report, report_url(model)
    if report is None or url is None:
        return []
    if report.figures:
        return [Plot(url=url + figure.file, caption=figure.caption) for figure in report.figures]
    return [
        Plot(url=url + name, caption=name.removesuffix(".png").replace("_", " ").capitalize())
        for name in report.files
        if name.endswith(".png")
    ]


def confidence_info(model: Model, override: float | None) -> ConfidenceInfo:
    spec = model.metadata.confidence
    if spec is None:
        return ConfidenceInfo(
            threshold=None,
            threshold_source=None,
            threshold_rule=NO_THRESHOLD,
            method=None,
            score=None,
            temperature=None,
            calibration=None,
        )
    return ConfidenceInfo(
        threshold=model.ood_threshold(override),
        threshold_source="export" if override is None else "setting",
        threshold_rule=spec.ood.threshold_rule if override is None else "set by OOD_THRESHOLD",
        method=spec.ood.method,
        score=spec.ood.score,
        temperature=spec.temperature,
        calibration=spec.calibration,
    )
