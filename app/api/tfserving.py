"""TF Serving's REST API (/v1): model status, model metadata and `:predict`, over the service's runtime.

Paths, answer shapes and error codes are those of TF Serving's `http_rest_api_handler.cc`, so a TF
Serving client works with only the host and port changed. Only parsing and shaping live here;
model lookup, limits, batching and errors are the data plane's (`dataplane.py`), shared by every face.
"""

import base64
import io
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from starlette.convertors import Convertor, register_url_convertor

from app.api.dataplane import DataPlane, Inference
from app.api.deps import VERSION_HEADER, DataPlaneDep
from app.api.protocols import DataPlaneRoute, ModelRoutes, answers, parse_json_object
from app.errors import InvalidInput, ModelNotFound, VersionNotFound
from app.runtime.classifier import Classifier, Upload
from app.runtime.repository import VersionStatus
from app.runtime.signatures import signature_defs

router = APIRouter(tags=["TF Serving REST API (/v1)"])

# The signatures `:predict` runs, each with its one input: encoded images, or pixels at the input size.
IMAGES, PIXELS = "serving_default", "predict_pixels"
SIGNATURE_INPUT = {IMAGES: "image_bytes", PIXELS: "pixels"}


class _PathPart(Convertor[str]):
    """A model name or version label as TF Serving's path regex takes it: no '/' and no ':'."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class _Method(_PathPart):
    regex = "classify|regress|predict"


register_url_convertor("tfs_part", _PathPart())
register_url_convertor("tfs_method", _Method())

MODEL = "/v1/models/{name:tfs_part}"
VERSIONS = ("", "/versions/{version:int}", "/labels/{label:tfs_part}")  # TF Serving's optional suffixes
PART = {"type": "string"}  # without '/' or ':' (a pattern saying so made fuzzing it take minutes)
model_route = ModelRoutes(
    router,
    MODEL,
    VERSIONS,
    {
        "name": {"schema": PART, "description": "The model's name (MODEL_NAME)."},
        "version": {"schema": {"type": "integer", "minimum": 0}, "description": "A version of the model."},
        "label": {"schema": PART, "description": "A version label, such as `stable` or `canary`."},
        "method": {
            "schema": {"type": "string", "enum": ["predict", "classify", "regress"]},
            "description": "`predict`: the model's signatures are predict signatures.",
        },
    },
)

# The OpenAPI description of the answers and of :predict's body; TF Serving's documentation has more.
MODEL_STATUS = {
    "type": "object",
    "required": ["model_version_status"],
    "properties": {
        "model_version_status": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["version", "state", "status"],
                "properties": {
                    "version": {"type": "string", "examples": ["1"]},
                    "state": {"type": "string", "enum": ["LOADING", "AVAILABLE", "UNLOADING", "END"]},
                    "status": {
                        "type": "object",
                        "properties": {"error_code": {"type": "string"}, "error_message": {"type": "string"}},
                    },
                },
            },
        }
    },
}
MODEL_METADATA = {
    "type": "object",
    "required": ["model_spec", "metadata"],
    "properties": {
        "model_spec": {"type": "object"},
        "metadata": {"type": "object", "description": "Each SignatureDef, as TF Serving prints it."},
    },
}
STATUS_EXAMPLE = {
    "model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
}
METADATA_EXAMPLE = {
    "model_spec": {"name": "inception_v2", "signature_name": "", "version": "1"},
    "metadata": {
        "signature_def": {"signature_def": {"serving_default": {"method_name": "tensorflow/serving/predict"}}}
    },
}
PROBABILITIES = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
PREDICTION = {
    "type": "object",
    "description": "One row of class probabilities per image: `predictions` answers `instances`, "
    "`outputs` answers `inputs`.",
    "properties": {"predictions": PROBABILITIES, "outputs": PROBABILITIES},
}
PREDICT_REQUEST = {
    "type": "object",
    "description": "The images in row format (`instances`, one value per image) or columnar format "
    '(`inputs`): encoded images as `{"b64": "<base64 of the file>"}` for `serving_default`, pixels as '
    "nested lists [height][width][3] for `predict_pixels`; a value may also be an object naming the "
    'input (`{"image_bytes": ...}`, `{"pixels": ...}`).',
    "properties": {
        "signature_name": {"type": "string", "enum": [IMAGES, PIXELS], "default": IMAGES},
        "instances": {"type": "array", "items": {}},
        "inputs": {},
    },
    "example": {"instances": [{"b64": "iVBORw0KGgo="}]},
}


def model_spec(request: Request) -> tuple[str, int | None, str | None]:
    """The model name, version and version label the path names."""
    params = request.path_params
    return params["name"], params.get("version"), params.get("label")


def servable(dataplane: DataPlane, name: str, version: int | None, label: str | None) -> Classifier:
    """The classifier of the named version (or label, or the latest); unknown models in TF Serving's words."""
    try:
        return dataplane.model(name, version, label)
    except ModelNotFound:
        wanted = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
        raise ModelNotFound(f"Servable not found for request: {wanted}") from None


def version_status(status: VersionStatus) -> dict[str, Any]:
    """One version's state as TF Serving's `ModelVersionStatus` in JSON (int64 as a string)."""
    return {
        "version": str(status.version),
        "state": status.state,
        "status": {
            "error_code": "UNKNOWN" if status.error else "OK",
            "error_message": status.error or "",
        },
    }


def model_status_body(name: str, statuses: list[VersionStatus], version: int | None) -> dict[str, Any]:
    """`GetModelStatusResponse`: every version newest first, or the one asked for."""
    if version is not None:
        statuses = [status for status in statuses if status.version == version]
        if not statuses:
            raise VersionNotFound(f"Could not find version {version} of model {name}")
    if not statuses:
        raise ModelNotFound(f"Could not find any versions of model {name}")
    ordered = sorted(statuses, key=lambda status: status.version, reverse=True)
    return {"model_version_status": [version_status(status) for status in ordered]}


def metadata_body(name: str, version: int, signatures: dict[str, Any]) -> dict[str, Any]:
    """`GetModelMetadataResponse` as TF Serving prints it: proto field names, every field present."""
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    key: json_format.MessageToDict(
                        signature, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
                    )
                    for key, signature in signatures.items()
                }
            }
        },
    }


def signature_of(payload: dict[str, Any], signatures: dict[str, Any]) -> str:
    """The signature the request names (`signature_name`, default `serving_default`) if `:predict` runs it."""
    name = payload.get("signature_name") or IMAGES
    if not isinstance(name, str) or name not in signatures:
        raise InvalidInput(f'Serving signature name: "{name}" not found in signature def')
    if name not in SIGNATURE_INPUT:
        raise InvalidInput(
            f'Serving signature name: "{name}" is not served by :predict; use "{IMAGES}" (encoded images '
            f'as {{"b64": ...}}) or "{PIXELS}" (pixels as nested lists)'
        )
    return name


def is_binary(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def tensor_values(payload: dict[str, Any], input_name: str) -> tuple[str, list[Any]]:
    """One value per image from the row (`instances`) or columnar (`inputs`) format, and the answer's key.

    Either format names the input (`{"image_bytes": ...}`) or gives its value alone, as TF Serving
    allows for a signature with one input.
    """
    if ("instances" in payload) == ("inputs" in payload):
        if "instances" in payload:
            raise InvalidInput(
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists"
            )
        raise InvalidInput("Missing 'inputs' or 'instances' key")
    if "instances" in payload:
        key, where, values = "predictions", "instances", payload["instances"]
        if not isinstance(values, list):
            raise InvalidInput("Expecting 'instances' to be an list/array")
        values = [_unnamed(value, input_name, f"instances[{i}]") for i, value in enumerate(values)]
    else:
        key, where = "outputs", "inputs"
        values = _unnamed(payload["inputs"], input_name, "inputs")
        if not isinstance(values, list):
            raise InvalidInput(f"'inputs': expected a list holding one {input_name} value per image")
    if not values:
        raise InvalidInput(f"'{where}' is empty: send at least one image")
    return key, values


def _unnamed(value: Any, input_name: str, where: str) -> Any:
    """The input's value, given alone or in an object keyed by the input's name."""
    if isinstance(value, dict) and not is_binary(value):
        if set(value) != {input_name}:
            raise InvalidInput(
                f"{where}: names the input(s) {', '.join(map(repr, sorted(value)))}; "
                f"the signature's one input is {input_name!r}"
            )
        return value[input_name]
    return value


def encoded_image(value: Any, where: str) -> bytes:
    """The bytes of an image sent as `{"b64": "<base64>"}`, TF Serving's encoding of binary strings."""
    if not is_binary(value) or not isinstance(value["b64"], str):
        raise InvalidInput(f'{where}: expected an encoded image as {{"b64": "<base64 of the file>"}}')
    text = "".join(value["b64"].split())  # base64 as `base64` prints it, line breaks and all
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:  # binascii.Error, or a character beyond ASCII
        raise InvalidInput(f"{where}: 'b64' is not valid base64") from None


def pixel_array(values: list[Any], where: str) -> np.ndarray:
    """Nested lists of numbers as float32 [images, height, width, 3]; the runtime checks the shape."""
    try:
        return np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(
            f"'{where}': pixels must be nested lists of numbers, [images][height][width][3]"
        ) from None


@model_route("GET", responses=answers(MODEL_STATUS, STATUS_EXAMPLE, 400, 404, 503))
async def model_status(request: Request, dataplane: DataPlaneDep) -> JSONResponse:
    """TF Serving's model status: the state of every version, or of the one named."""
    name, version, label = model_spec(request)
    models = dataplane.models()
    if label is not None:
        version = models.labels().get(label)
        if version is None:
            raise VersionNotFound(f"Unrecognized servable version label: {label}")
    statuses = models.statuses() if name == models.name else []
    return JSONResponse(model_status_body(name, statuses, version))


@model_route("GET", "/metadata", responses=answers(MODEL_METADATA, METADATA_EXAMPLE, 400, 404, 503))
async def model_metadata(request: Request, dataplane: DataPlaneDep) -> JSONResponse:
    """TF Serving's model metadata: the version's SignatureDefs, read from its saved_model.pb."""
    name, version, label = model_spec(request)
    model = servable(dataplane, name, version, label).model
    return JSONResponse(
        metadata_body(name, model.version, signature_defs(model.path)),
        headers={VERSION_HEADER: str(model.version)},
    )


@model_route(
    "POST",
    ":{method:tfs_method}",
    responses=answers(PREDICTION, {"predictions": [[0.91, 0.06, 0.03]]}, 400, 404, 413, 503),
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": PREDICT_REQUEST}}}
    },
    route_class_override=DataPlaneRoute,  # no dependency solving per request
)
async def predict(request: Request, dataplane: DataPlaneDep) -> JSONResponse:
    """TF Serving's Predict: `instances` or `inputs`, answered as `predictions` or `outputs`."""
    name, version, label = model_spec(request)
    classifier = servable(dataplane, name, version, label)
    method = request.path_params["method"]
    if method != "predict":
        raise InvalidInput(
            f"The model has no {method} signature: its signatures are predict signatures; use :predict"
        )
    payload = parse_json_object(
        await request.body(),
        not_json="JSON Parse error: {reason}",
        not_object="JSON Parse error: the body must be a JSON object with 'instances' or 'inputs'",
    )
    signature = signature_of(payload, signature_defs(classifier.model.path))
    key, values = tensor_values(payload, SIGNATURE_INPUT[signature])
    where = "instances" if key == "predictions" else "inputs"
    dataplane.count_images(len(values))  # before decoding any of them
    if signature == IMAGES:
        inputs: list[Upload] | np.ndarray = [
            (f"{where}[{i}]", io.BytesIO(encoded_image(value, f"{where}[{i}]")))
            for i, value in enumerate(values)
        ]
    else:
        inputs = pixel_array(values, where)
    inference = await dataplane.infer(request, classifier, inputs)
    # TF Serving's body does not name the version
    return JSONResponse(predict_body(key, inference), headers={VERSION_HEADER: str(classifier.model.version)})


def predict_body(key: str, inference: Inference) -> dict[str, Any]:
    """TF Serving's answer: with one output, its values per image (`predictions`, row format) or for
    all (`outputs`, columnar); with several, an object of them per image, or of all of them.

    A version with confidence scores has the SavedModel's two outputs, `probabilities` and
    `ood_score`, and the service adds `confident` (the score within the threshold)."""
    probabilities = [image.probabilities.tolist() for image in inference.images]
    if inference.model.ood_threshold() is None:
        return {key: probabilities}
    outputs = {
        "probabilities": probabilities,
        "ood_score": [image.ood_score for image in inference.images],
        "confident": [image.confident for image in inference.images],
    }
    if key == "outputs":
        return {key: outputs}
    return {key: [dict(zip(outputs, row, strict=True)) for row in zip(*outputs.values(), strict=True)]}


@router.api_route(
    "/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def malformed(request: Request) -> None:
    """Any other /v1 path: TF Serving answers 400, not 404."""
    if request.url.path.rstrip("/") == "/v1/models":
        raise InvalidInput("Missing model name in request.")
    raise InvalidInput(f"Malformed request: {request.method} {request.url.path}")
