"""Every error mapped to its status here, once, and rendered in the shape its protocol expects.

The service's own API answers RFC 9457 problem-details bodies; the standard protocols (TF Serving's
REST API under /v1, the Open Inference Protocol under /v2) answer `{"error": "..."}`, as TF Serving
and Triton do, and clients of theirs read.
"""

import functools
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from app import errors

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:inception-v2-service:problem:"

CLIENT_CLOSED_REQUEST = 499  # nginx's code, not in HTTPStatus: nobody reads it, but logs and metrics count it

STATUS: dict[type[errors.ServiceError], int] = {
    errors.VersionNotFound: HTTPStatus.NOT_FOUND,
    errors.Unauthorized: HTTPStatus.UNAUTHORIZED,
    errors.BodyTimedOut: HTTPStatus.REQUEST_TIMEOUT,
    errors.PayloadTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    errors.UnsupportedImage: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    errors.ImageTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    errors.InvalidImage: HTTPStatus.UNPROCESSABLE_ENTITY,
    errors.TooManyFiles: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    errors.ReportNotFound: HTTPStatus.NOT_FOUND,
    errors.Overloaded: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.RequestTimedOut: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.ModelNotReady: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.RequestAbandoned: CLIENT_CLOSED_REQUEST,
    errors.InferenceFailed: HTTPStatus.INTERNAL_SERVER_ERROR,
    errors.ModelNotFound: HTTPStatus.NOT_FOUND,
    errors.InvalidInput: HTTPStatus.BAD_REQUEST,
}

# TF Serving and Triton answer 400 to any request they cannot use (an invalid argument), whatever
# was wrong with it; their clients expect that rather than the finer 413/415/422 of our own API.
STANDARD_PROTOCOL_STATUS: dict[type[errors.ServiceError], int] = {
    errors.InvalidImage: HTTPStatus.BAD_REQUEST,
    errors.TooManyFiles: HTTPStatus.BAD_REQUEST,
}


class FieldError(BaseModel):
    """One invalid part of a request."""

    loc: list[str | int] = Field(examples=[["query", "top_k"]])
    msg: str = Field(examples=["Input should be greater than or equal to 1"])
    type: str = Field(examples=["greater_than_equal"])


class Problem(BaseModel):
    """An RFC 9457 problem: every error answer has this shape, as `application/problem+json`."""

    type: str = Field(
        description="A stable identifier of the kind of problem, or about:blank for plain HTTP errors.",
        examples=[TYPE_PREFIX + "unsupported-image"],
    )
    title: str = Field(examples=["Unsupported image format"])
    status: int = Field(examples=[415])
    detail: str = Field(examples=["'notes.txt': not a JPEG, PNG, GIF, BMP or WebP image"])
    filename: str | None = Field(None, description="The upload at fault, for image errors.")
    errors: list[FieldError] | None = Field(
        None, description="Each invalid field, for 422 validation errors."
    )


def speaks_standard_protocol(path: str) -> bool:
    """Whether `path` belongs to TF Serving's REST API (/v1/...) or the Open Inference Protocol (/v2...)."""
    return path.startswith("/v1/") or path == "/v2" or path.startswith("/v2/")


def error_response(
    request: Request, status: int, detail: str, *, headers: dict[str, str] | None = None, **problem: Any
) -> JSONResponse:
    """An error in the shape of the request's protocol: `{"error": detail}`, or a problem (`problem`)."""
    if speaks_standard_protocol(request.scope["path"]):  # the URL would be parsed for the same path
        return JSONResponse({"error": detail}, status_code=status, headers=headers)
    return problem_response(status, detail, headers=headers, **problem)


def status_of(error: errors.ServiceError, standard_protocol: bool) -> int:
    """The status of `error`'s class, or of its nearest base class listed (standard protocols first)."""
    tables = (STANDARD_PROTOCOL_STATUS, STATUS) if standard_protocol else (STATUS,)
    return next(table[cls] for table in tables for cls in type(error).__mro__ if cls in table)


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": type_, "title": title or HTTPStatus(status).phrase, "status": status, "detail": detail}
    body.update({key: value for key, value in extra.items() if value is not None})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


@functools.cache
def problem_type(error_class: type[errors.ServiceError]) -> str:
    """`UnsupportedImage` -> `urn:inception-v2-service:problem:unsupported-image`."""
    return TYPE_PREFIX + re.sub(r"(?<!^)(?=[A-Z])", "-", error_class.__name__).lower()


async def service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.ServiceError)
    return service_error_response(request, exc)


def service_error_response(request: Request, exc: errors.ServiceError) -> JSONResponse:
    """The answer to a service error, in the request's protocol's shape (also used outside handlers)."""
    error_class = next(cls for cls in type(exc).__mro__ if cls in STATUS)
    headers = {}
    if retry_after := getattr(exc, "retry_after_s", None):
        headers["Retry-After"] = str(retry_after)
    if challenge := getattr(exc, "challenge", None):
        headers["WWW-Authenticate"] = challenge
    return error_response(
        request,
        status_of(exc, speaks_standard_protocol(request.scope["path"])),
        str(exc),
        title=exc.title,
        type_=problem_type(error_class),
        headers=headers or None,
        filename=getattr(exc, "filename", None),
    )


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(str(part) for part in f['loc'])}: {f['msg']}" for f in fields)
    return error_response(
        request,
        HTTPStatus.UNPROCESSABLE_ENTITY,
        detail,
        title="Invalid request",
        type_=TYPE_PREFIX + "invalid-request",
        errors=fields,
    )


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == HTTPStatus.NOT_FOUND:
        detail = f"Nothing at {request.url.path}; see /docs for the endpoints"
    elif exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        detail = f"{request.method} is not allowed on {request.url.path}"
    elif exc.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:  # only the request body limit raises it
        detail = (
            f"The request body is over MAX_UPLOAD_BYTES ({request.app.state.settings.max_upload_bytes} bytes)"
        )
    else:
        detail = str(exc.detail)
    return error_response(request, exc.status_code, detail, headers=exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(
        request,
        HTTPStatus.INTERNAL_SERVER_ERROR,
        "The server failed on this request; its log has the details",
    )


def register_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": description}
    for status, description in {
        400: "A malformed multipart body",
        408: "A body that took over BODY_TIMEOUT_S to arrive",
        404: "A version or version label that is not served (unknown, still loading, or failed to load)",
        413: "Body over MAX_UPLOAD_BYTES, an image over MAX_IMAGE_PIXELS, or more than MAX_FILES files",
        415: "A file that is not a JPEG, PNG, GIF, BMP or WebP image",
        422: "A truncated or corrupt image, no file, or an invalid parameter",
        503: "Queue full, an image that waited past REQUEST_TIMEOUT_MS, or the model not ready (Retry-After)",
    }.items()
}


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI schema say what the handlers send: errors as `application/problem+json`.

    FastAPI documents every response model as `application/json`, and the 422 of a route with
    parameters as its own validation error, which the handler above replaces with a problem. The
    standard protocols' errors are `{"error": ...}` in `application/json`, as documented.
    """
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = default_openapi()
        for path, operations in schema["paths"].items():
            if speaks_standard_protocol(path):
                continue
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if status == "422":
                        content["application/json"] = {"schema": {"$ref": "#/components/schemas/Problem"}}
                    if status[0] in "45" and "application/json" in content:
                        content[PROBLEM_JSON] = content.pop("application/json")
        return schema

    app.openapi = openapi
