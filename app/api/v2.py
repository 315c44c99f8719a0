"""The Open Inference Protocol (KServe v2, /v2), with Triton's binary tensor data and classification.

The model takes one of two inputs: `image_bytes` (BYTES, one encoded image per element) or
`pixels` (FP32 [images, height, width, 3], RGB in 0..255 at the model's input size), and gives
`probabilities` (FP32 [images, classes]), or with the `classification` parameter the top classes as
BYTES "score:index:label". Versions exported with confidence scores also give `ood_score` (FP32
[images]) and `confident` (BOOL [images]: the score within the threshold); every output unless the
request names some. `tritonclient` sends and asks for binary tensor data by default: the
JSON header, then the tensors' bytes, its length in `Inference-Header-Content-Length`.

Only parsing and shaping live here; model lookup, readiness, limits, batching and errors are the
data plane's (`dataplane.py`), shared by every face.
"""

import base64
import io
import itertools
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from app.api.dataplane import ImageCounter, Inference
from app.api.deps import VERSION_HEADER, DataPlaneDep
from app.api.protocols import BINARY, DataPlaneRoute, ModelRoutes, answers, is_whole_number, parse_json_object
from app.errors import InvalidInput
from app.runtime.classifier import Classifier, Upload

router = APIRouter(tags=["Open Inference Protocol (/v2)"])

EXTENSIONS = ["binary_tensor_data", "classification"]
IMAGES, PIXELS, OUTPUT = "image_bytes", "pixels", "probabilities"
SCORE, CONFIDENT = "ood_score", "confident"
HEADER_LENGTH = "Inference-Header-Content-Length"
ELEMENT_TYPES = {"FP32": "<f4", "BOOL": "u1"}  # binary tensor data, as Triton: a BOOL is a byte
_END = object()
MAX_DIMENSIONS = 64  # numpy's: a shape of more dimensions cannot be an array
MODEL = "/v2/models/{name}"
VERSIONS = ("", "/versions/{version}")
model_route = ModelRoutes(
    router,
    MODEL,
    VERSIONS,
    {
        "name": {"schema": {"type": "string"}, "description": "The model's name (MODEL_NAME)."},
        "version": {
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
            "description": "A version of the model.",
        },
    },
)

# The OpenAPI description of the answers and of an inference request; the protocol's has more.
TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {
            "type": "array",
            "items": {"type": "integer", "minimum": -1},
            "description": "-1: any size.",
        },
        "data": {"type": "array", "description": "The elements in row-major order, flat or nested."},
        "parameters": {
            "type": "object",
            "description": "`binary_data_size`: its data is binary, after the JSON.",
        },
    },
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "description": f"One input: `{IMAGES}` (BYTES, one encoded image per element, base64 in JSON) or "
    f"`{PIXELS}` (FP32 [images, height, width, 3], RGB in 0..255 at the model's input size). With binary "
    f"tensor data the JSON is followed by the tensors' bytes and its length is in `{HEADER_LENGTH}`.",
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "items": TENSOR, "minItems": 1, "maxItems": 1},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "enum": [OUTPUT]},
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "binary_data": {"type": "boolean"},
                            "classification": {"type": "integer", "minimum": 1},
                        },
                    },
                },
            },
        },
    },
    "example": {"inputs": [{"name": IMAGES, "datatype": "BYTES", "shape": [1], "data": ["iVBORw0KGgo="]}]},
}
INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "model_version", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": TENSOR},
    },
}
INFER_EXAMPLE = {
    "model_name": "inception_v2",
    "model_version": "1",
    "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [1, 3], "data": [0.91, 0.06, 0.03]}],
}
MODEL_METADATA = {
    "type": "object",
    "required": ["name", "versions", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": TENSOR},
        "outputs": {"type": "array", "items": TENSOR},
    },
}


METADATA_EXAMPLE = {
    "name": "inception_v2",
    "versions": ["1"],
    "platform": "tensorflow_savedmodel",
    "inputs": [
        {"name": IMAGES, "datatype": "BYTES", "shape": [-1]},
        {"name": PIXELS, "datatype": "FP32", "shape": [-1, 224, 224, 3]},
    ],
    "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, 3]}],
}


@dataclass
class RequestedOutput:
    """An output asked for, and how the answer should carry it."""

    binary: bool
    classification: int = 0  # top classes as "score:index:label" strings; 0: the raw probabilities
    name: str = OUTPUT


def output_names(classifier: Classifier) -> list[str]:
    """The outputs of the version: the probabilities, and the score and its verdict when it has them."""
    has_score = classifier.model.ood_threshold() is not None
    return [OUTPUT, SCORE, CONFIDENT] if has_score else [OUTPUT]


def _outputs_in_words(names: list[str]) -> str:
    if len(names) == 1:
        return f"the model's one output is {names[0]}"
    return f"the model's outputs are {', '.join(names[:-1])} and {names[-1]}"


@dataclass
class InferRequest:
    """An inference request: encoded images or pixels, and the outputs asked for."""

    id: str | None
    images: list[bytes] | None
    pixels: np.ndarray | None
    outputs: list[RequestedOutput]


def model_path(request: Request) -> tuple[str, int | None]:
    """The model name and version the path names."""
    name, version = request.path_params["name"], request.path_params.get("version")
    if version is None:
        return name, None
    if not is_whole_number(version):
        raise InvalidInput(f"Model version {version!r}: versions are whole numbers")
    return name, int(version)


def model_metadata_body(name: str, versions: list[int], classifier: Classifier) -> dict[str, Any]:
    size, classes = classifier.model.metadata.input, len(classifier.model.labels)
    outputs = {
        OUTPUT: {"datatype": "FP32", "shape": [-1, classes]},
        SCORE: {"datatype": "FP32", "shape": [-1]},
        CONFIDENT: {"datatype": "BOOL", "shape": [-1]},
    }
    return {
        "name": name,
        "versions": [str(version) for version in versions],
        "platform": "tensorflow_savedmodel",
        "inputs": [
            {"name": IMAGES, "datatype": "BYTES", "shape": [-1]},
            {"name": PIXELS, "datatype": "FP32", "shape": [-1, size.height, size.width, 3]},
        ],
        "outputs": [{"name": output, **outputs[output]} for output in output_names(classifier)],
    }


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data after it (none without the header-length header)."""
    if header_length is None:
        return body, b""
    if not is_whole_number(header_length) or int(header_length) > len(body):
        raise InvalidInput(
            f"{HEADER_LENGTH}: {header_length!r} is not a length within the body ({len(body)} bytes)"
        )
    return body[: int(header_length)], body[int(header_length) :]


def parse_infer_request(
    body: bytes, header_length: str | None, count_images: ImageCounter, names: list[str]
) -> InferRequest:
    """Parse an inference request, JSON or with binary tensor data (see the module docstring), for a
    version with the outputs `names`.

    A body that is all binary (`Inference-Header-Content-Length: 0`, Triton's raw binary request)
    is one encoded image, answered in binary. Encoded images are counted by `count_images` from the
    input's shape, before any is built.
    """
    header, binary = split_body(body, header_length)
    if not header:
        if not binary:
            raise InvalidInput("Empty request body: expected an inference request")
        return InferRequest(None, [binary], None, [RequestedOutput(binary=True, name=name) for name in names])
    request = parse_json_object(
        header,
        not_json="The inference request is not valid JSON ({reason})",
        not_object="The inference request must be a JSON object",
    )
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidInput(
            f"'inputs' must hold exactly one input: {IMAGES} (BYTES, encoded images) or "
            f"{PIXELS} (FP32 [images, height, width, 3])"
        )
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    images, pixels = read_input(inputs[0], binary, count_images)
    default_binary = _flag(_parameters(request, "the request"), "binary_data_output", "the request")
    outputs = requested_outputs(request.get("outputs"), default_binary, names)
    return InferRequest(request_id, images, pixels, outputs)


def _parameters(spec: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = spec.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    return parameters


def _flag(parameters: dict[str, Any], key: str, where: str, default: bool = False) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: parameter {key!r} must be true or false")
    return value


def _count(parameters: dict[str, Any], key: str, where: str, minimum: int) -> int | None:
    value = parameters.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise InvalidInput(f"{where}: parameter {key!r} must be a whole number of at least {minimum}")
    return value


def read_input(
    spec: dict[str, Any], binary: bytes, count_images: ImageCounter
) -> tuple[list[bytes] | None, np.ndarray | None]:
    """The images or pixels of the one input, from its JSON `data` or the binary tensor data."""
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    expected = {IMAGES: "BYTES", PIXELS: "FP32"}
    if name not in expected:
        raise InvalidInput(f"Unknown input {name!r}: the model takes {IMAGES} (BYTES) or {PIXELS} (FP32)")
    where = f"input {name!r}"
    if datatype != expected[name]:
        raise InvalidInput(f"{where}: datatype {datatype!r}; the model takes {expected[name]}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidInput(f"{where}: 'shape' must be a list of whole numbers")
    size = _count(_parameters(spec, where), "binary_data_size", where, 0)
    if size is not None and size != len(binary):
        raise InvalidInput(f"{where}: binary_data_size is {size}, but {len(binary)} bytes follow the JSON")
    if size is None and binary:
        raise InvalidInput(f"{len(binary)} bytes follow the JSON, but no input has a 'binary_data_size'")
    if size is None and "data" not in spec:
        raise InvalidInput(f"{where}: no 'data', and no 'binary_data_size' for binary data")
    elements = math.prod(shape)
    if not elements:
        raise InvalidInput(f"{where}: shape {shape} holds no images")
    if name == IMAGES:
        count_images(elements)
        images = (
            deserialize_bytes(binary, where, elements)
            if size is not None
            else base64_elements(spec["data"], where, elements)
        )
        if len(images) != elements:
            raise InvalidInput(f"{where}: {len(images)} elements for shape {shape}")
        return images, None
    if size is not None:
        if size != elements * 4:
            raise InvalidInput(f"{where}: {size} bytes of FP32 for shape {shape}: expected {elements * 4}")
        values = np.frombuffer(binary, dtype="<f4")
    else:
        try:
            values = np.asarray(spec["data"], dtype=np.float32).reshape(-1)
        except (ValueError, TypeError, OverflowError):
            raise InvalidInput(f"{where}: 'data' must be a list of numbers") from None
        if values.size != elements:
            raise InvalidInput(f"{where}: {values.size} values for shape {shape}")
    if len(shape) > MAX_DIMENSIONS:
        raise InvalidInput(
            f"{where}: shape {shape} has {len(shape)} dimensions; pixels have 4: [images, height, width, 3]"
        )
    return None, values.astype(np.float32).reshape(shape)


def deserialize_bytes(data: bytes, where: str, most: int) -> list[bytes]:
    """A BYTES tensor in binary form: each element a 4-byte little-endian length, then its bytes.

    Past `most` elements (the shape's), the rest is not read: the count is wrong anyway.
    """
    elements, offset = [], 0
    while offset < len(data) and len(elements) <= most:
        if offset + 4 > len(data):
            raise InvalidInput(f"{where}: the binary BYTES data ends inside an element's length")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidInput(f"{where}: the binary BYTES data ends inside element {len(elements)}")
        elements.append(data[offset : offset + length])
        offset += length
    return elements


def serialize_bytes(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def base64_elements(data: Any, where: str, most: int) -> list[bytes]:
    """BYTES elements given in JSON: base64 strings, as KServe's image examples send them.

    (JSON strings cannot carry arbitrary bytes; for raw bytes, send binary tensor data.) Past `most`
    elements (the shape's), the rest is not decoded: the count is wrong anyway.
    """
    flat = list(itertools.islice(_flatten(data), most + 1))
    images = []
    for i, element in enumerate(flat):
        if not isinstance(element, str):
            raise InvalidInput(f"{where}: element {i} is not a string: in JSON, send each image as base64")
        try:
            images.append(base64.b64decode(element, validate=True))
        except ValueError:  # binascii.Error, or a character beyond ASCII
            raise InvalidInput(
                f"{where}: element {i} is not base64: in JSON, send each image as base64, "
                "or send binary tensor data"
            ) from None
    return images


def _flatten(data: Any) -> Iterator[Any]:
    """The elements of nested lists in row-major order (without recursion: nesting is the client's)."""
    stack = [iter([data])]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            yield item


def requested_outputs(outputs: Any, default_binary: bool, names: list[str]) -> list[RequestedOutput]:
    """The outputs asked for, among the version's `names`; all of them when none is named."""
    if outputs is None:
        return [RequestedOutput(binary=default_binary, name=name) for name in names]
    if not isinstance(outputs, list) or not outputs:
        raise InvalidInput(f"'outputs' must be a list of requested outputs; {_outputs_in_words(names)}")
    requested = []
    for spec in outputs:
        name = spec.get("name") if isinstance(spec, dict) else None
        if name not in names:
            raise InvalidInput(f"Unknown output {name!r}: {_outputs_in_words(names)}")
        if any(output.name == name for output in requested):
            raise InvalidInput(f"{name!r} is requested more than once; request it once")
        where = f"output {name!r}"
        parameters = _parameters(spec, where)
        binary = _flag(parameters, "binary_data", where, default_binary)
        classification = _count(parameters, "classification", where, 1) or 0
        if classification and name != OUTPUT:
            raise InvalidInput(f"{where}: classification applies to {OUTPUT} only")
        requested.append(RequestedOutput(binary, classification, name))
    return requested


def inference_tensor(
    inference: Inference, labels: list[str], requested: RequestedOutput
) -> tuple[str, list[int], np.ndarray | list[bytes]]:
    """The requested output's datatype, shape and data: the probabilities (`output_tensor`), or each
    image's ood_score, or whether it is confident."""
    count = len(inference.images)
    if requested.name == SCORE:
        return "FP32", [count], np.array([image.ood_score for image in inference.images], np.float32)
    if requested.name == CONFIDENT:
        return "BOOL", [count], np.array([image.confident for image in inference.images], bool)
    probabilities = np.stack([image.probabilities for image in inference.images])
    return output_tensor(probabilities, labels, requested)


def output_tensor(
    probabilities: np.ndarray, labels: list[str], requested: RequestedOutput
) -> tuple[str, list[int], np.ndarray | list[bytes]]:
    """The probabilities' datatype, shape and data: the probabilities, or the top classes (Triton's
    classification extension: "score:index:label", highest first, at most the number of classes)."""
    if not requested.classification:
        return "FP32", list(probabilities.shape), probabilities
    k = min(requested.classification, len(labels))
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    classes = [
        f"{np.float32(row[i])}:{i}:{labels[i]}".encode()
        for row, top in zip(probabilities, best, strict=True)
        for i in top
    ]
    return "BYTES", [len(probabilities), k], classes


def infer_response(
    model: str, version: int, request_id: str | None, outputs: list[tuple[RequestedOutput, tuple]]
) -> Response:
    """The inference response: JSON, or with the outputs asked for in binary after the JSON header."""
    body: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"], binary_parts = [], []
    for requested, (datatype, shape, data) in outputs:
        tensor: dict[str, Any] = {"name": requested.name, "datatype": datatype, "shape": shape}
        if requested.binary:
            raw = (
                serialize_bytes(data)
                if datatype == "BYTES"
                else data.astype(ELEMENT_TYPES[datatype]).tobytes()
            )
            tensor["parameters"] = {"binary_data_size": len(raw)}
            binary_parts.append(raw)
        elif datatype != "BYTES":
            tensor["data"] = data.reshape(-1).tolist()
        else:
            tensor["data"] = [element.decode() for element in data]
        body["outputs"].append(tensor)
    header = json.dumps(body, separators=(",", ":")).encode()
    headers = {VERSION_HEADER: str(version)}
    if not binary_parts:
        return Response(header, media_type="application/json", headers=headers)
    return Response(
        header + b"".join(binary_parts),
        media_type="application/octet-stream",
        headers=headers | {HEADER_LENGTH: str(len(header))},
    )


@router.get(
    "/v2",
    response_model=None,
    responses=answers(
        {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        {"name": "inception-v2-service", "version": "0.1.0", "extensions": EXTENSIONS},
    ),
)
async def server_metadata(request: Request) -> dict[str, Any]:
    """The server's name, version and protocol extensions."""
    return {"name": "inception-v2-service", "version": request.app.version, "extensions": EXTENSIONS}


@router.get(
    "/v2/health/live",
    response_model=None,
    responses=answers(
        {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}}, {"live": True}
    ),
)
async def server_live() -> dict[str, bool]:
    """Live while the process answers."""
    return {"live": True}


@router.get(
    "/v2/health/ready",
    response_model=None,
    responses=answers(
        {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
        {"ready": True},
        503,
    ),
)
async def server_ready(dataplane: DataPlaneDep) -> dict[str, bool]:
    """Ready while a version of the model can answer; 503 before, and once shutdown begins."""
    dataplane.ready()
    return {"ready": True}


@model_route("GET", response_model=None, responses=answers(MODEL_METADATA, METADATA_EXAMPLE, 400, 404, 503))
async def model_metadata(request: Request, dataplane: DataPlaneDep) -> dict[str, Any]:
    """The model's inputs and outputs, with their datatypes and shapes."""
    name, version = model_path(request)
    classifier = dataplane.model(name, version)
    versions = [version] if version is not None else sorted(dataplane.models().available())
    return model_metadata_body(name, versions, classifier)


@model_route(
    "GET",
    "/ready",
    response_model=None,
    responses=answers(
        {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        {"name": "inception_v2", "ready": True},
        400,
        404,
        503,
    ),
)
async def model_ready(request: Request, dataplane: DataPlaneDep) -> dict[str, Any]:
    """200 while the model (or the version named) can answer; 503 while it loads, 404 if unknown."""
    name, version = model_path(request)
    dataplane.model_ready(name, version)
    return {"name": name, "ready": True}


@model_route(
    "POST",
    "/infer",
    response_model=None,
    responses=answers(INFER_RESPONSE, INFER_EXAMPLE, 400, 404, 413, 503, binary=True),
    openapi_extra={
        "parameters": [
            {
                "name": HEADER_LENGTH,
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
                "description": "With binary tensor data: the length of the JSON before it.",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": INFER_REQUEST}} | BINARY,
        },
    },
    route_class_override=DataPlaneRoute,  # no dependency solving per request
)
async def infer(request: Request, dataplane: DataPlaneDep) -> Response:
    """Classify the request's images (BYTES) or pixels (FP32)."""
    name, version = model_path(request)
    classifier = dataplane.model(name, version)
    parsed = parse_infer_request(
        await request.body(),
        request.headers.get(HEADER_LENGTH),
        dataplane.count_images,
        output_names(classifier),
    )
    if parsed.images is not None:
        inputs: list[Upload] | np.ndarray = [
            (f"{IMAGES}[{i}]", io.BytesIO(image)) for i, image in enumerate(parsed.images)
        ]
    else:
        assert parsed.pixels is not None
        inputs = parsed.pixels
    inference = await dataplane.infer(request, classifier, inputs)
    labels = classifier.model.labels
    outputs = [(requested, inference_tensor(inference, labels, requested)) for requested in parsed.outputs]
    return infer_response(name, classifier.model.version, parsed.id, outputs)
