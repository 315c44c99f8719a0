"""What the two standard protocols' faces (TF Serving's /v1, the Open Inference Protocol's /v2) share:
routes under a model's path, their errors in the OpenAPI document, JSON bodies, whole numbers as text."""

import json
import re
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from app.api.deps import get_dataplane
from app.errors import InvalidInput

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
PATH_PARAMETER = re.compile(r"{(\w+)(?::\w+)?}")


class ProtocolError(BaseModel):
    """An error of TF Serving's REST API or the Open Inference Protocol, as their clients read it."""

    error: str = Field(examples=["Servable not found for request: Latest(resnet)"])


ERRORS = {
    400: "A request the model cannot take: malformed JSON, an unknown signature, input or path, a bad image, "
    "more images than MAX_FILES",
    404: "A model or version that is not served",
    413: "A body over MAX_UPLOAD_BYTES",
    503: "Queue full, an image that waited past REQUEST_TIMEOUT_MS, or no version ready (Retry-After)",
}


BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def answers(
    schema: dict[str, Any], example: Any, *errors: int, binary: bool = False
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI responses of an endpoint: its answer's `schema` and an `example` of it (or binary
    tensor data), and these error statuses in the protocols' `{"error": ...}` shape."""
    content = {"application/json": {"schema": schema, "example": example}} | (BINARY if binary else {})
    ok = {"description": "Successful Response", "content": content}
    return {200: ok} | {status: {"model": ProtocolError, "description": ERRORS[status]} for status in errors}


class ModelRoutes:
    """Registers an endpoint under a model's path and each of its protocol's optional version parts
    (`/versions/{version}`, and TF Serving's `/labels/{label}`), with the OpenAPI schema of each path
    parameter (the endpoints read them from the path, as each of their paths has its own)."""

    def __init__(
        self, router: APIRouter, model: str, versions: Iterable[str], parameters: dict[str, dict[str, Any]]
    ) -> None:
        self.router = router
        self.paths = [model + version_part for version_part in versions]
        self.parameters = parameters

    def __call__(self, method: str, suffix: str = "", **options: Any) -> Callable[[Endpoint], Endpoint]:
        def register(endpoint: Endpoint) -> Endpoint:
            for path in self.paths:
                documented = [
                    {"name": name, "in": "path", "required": True} | self.parameters[name]
                    for name in PATH_PARAMETER.findall(path + suffix)
                ]
                extra = options.get("openapi_extra", {})
                extra = extra | {"parameters": extra.get("parameters", []) + documented}
                route_options = options | {"openapi_extra": extra}
                self.router.add_api_route(path + suffix, endpoint, methods=[method], **route_options)
            return endpoint

        return register


class DataPlaneRoute(APIRoute):
    """The route of an endpoint that takes only the request and the data plane and returns its own
    `Response` (TF Serving's :predict, the Open Inference Protocol's infer). FastAPI documents it as
    any route, but a request goes straight to the endpoint: FastAPI's dependency solving could refuse
    nothing there (the data plane's dependency reads only `app.state`) and a `Response` is not
    validated, so skipping both changes no answer and saves the event loop their work per request.
    What it skips includes dependencies given to `include_router` and `app.dependency_overrides`:
    include its router without them, as `create_app` does."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        dependant = self.dependant
        declared = [
            getattr(dependant, kind + "_params") for kind in ("path", "query", "header", "cookie", "body")
        ]
        calls = [dependency.call for dependency in dependant.dependencies]
        if any(declared) or calls != [get_dataplane] or dependant.request_param_name is None:
            raise TypeError(
                f"{self.path}: a DataPlaneRoute's endpoint takes only a Request and a DataPlaneDep"
            )
        endpoint, request_name = self.endpoint, dependant.request_param_name
        dataplane = dependant.dependencies[0].name

        async def handler(request: Request) -> Response:
            return await endpoint(**{request_name: request, dataplane: await get_dataplane(request)})

        return handler


def parse_json_object(body: bytes, not_json: str, not_object: str) -> dict[str, Any]:
    """The body as a JSON object (NaN and Infinity accepted, as TF Serving accepts them).

    `not_json` words the error with the `{reason}` the body is not JSON; `not_object` is the error
    for JSON that is not an object.
    """
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidInput(not_json.format(reason=f"{exc.msg} at offset: {exc.pos}")) from None
    except ValueError as exc:  # not UTF-8
        raise InvalidInput(not_json.format(reason=exc)) from None
    except RecursionError:
        raise InvalidInput(not_json.format(reason="nested too deeply")) from None
    if not isinstance(payload, dict):
        raise InvalidInput(not_object)
    return payload


def is_whole_number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit alone takes "²", which int() refuses
