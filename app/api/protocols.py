"""What the two standard protocols' faces (TF Serving's /v1, the Open Inference Protocol's /v2) share
in parsing: routes under a model's path, JSON bodies, and whole numbers as text."""

import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fastapi import APIRouter

from app.errors import InvalidInput

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


class ModelRoutes:
    """Registers an endpoint under a model's path and each of its protocol's optional version parts
    (`/versions/{version}`, and TF Serving's `/labels/{label}`)."""

    def __init__(self, router: APIRouter, model: str, versions: Iterable[str]) -> None:
        self.router = router
        self.paths = [model + version_part for version_part in versions]

    def __call__(self, method: str, suffix: str = "", **options: Any) -> Callable[[Endpoint], Endpoint]:
        def register(endpoint: Endpoint) -> Endpoint:
            for path in self.paths:
                self.router.add_api_route(path + suffix, endpoint, methods=[method], **options)
            return endpoint

        return register


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
