"""API keys: with API_KEYS (or API_KEYS_FILE) set, every request but the open ones needs a key.

A pure ASGI middleware, so it covers every route, whoever adds it, and refuses before the body is
read. Open: the health checks (probes carry no keys), the API's documentation, and /metrics unless
METRICS_REQUIRE_KEY. Keys are compared in constant time against every configured key, so the time
taken says nothing about how close a guess was or which key matched; they are never logged.
"""

import hmac
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.problems import service_error
from app.errors import Unauthorized

OPEN_PATHS = {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
OPEN_PREFIXES = ("/v2/health/",)
# How OpenAPI names the two ways to send a key, so /docs's "Authorize" offers both.
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "X-API-Key: <key>"},
}


def presented_key(request: Request) -> str | None:
    """The key a request carries, as `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key")


class KeyRing:
    """The configured keys, and which requests need one: for the middleware and the HTTP protocol."""

    def __init__(self, keys: list[str], metrics_require_key: bool) -> None:
        self.keys = [key.encode() for key in keys]
        self.open_paths = OPEN_PATHS if metrics_require_key else OPEN_PATHS | {"/metrics"}

    def is_open(self, path: str) -> bool:
        return not self.keys or path in self.open_paths or path.startswith(OPEN_PREFIXES)

    def accepts(self, key: str) -> bool:
        presented = key.encode()
        matched = False
        for known in self.keys:  # every key, every time: no early exit to time
            matched |= hmac.compare_digest(presented, known)
        return matched

    def admits(self, scope: Scope) -> bool:
        """True when the request needs no key or carries a valid one."""
        if self.is_open(scope["path"]):
            return True
        key = presented_key(Request(scope))
        return key is not None and self.accepts(key)


class ApiKeys:
    """Answers 401 (problem+json, `WWW-Authenticate: Bearer`) to a request without a valid key."""

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.keys.admits(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if presented_key(request) is None:
            error = Unauthorized(
                "An API key is required: send Authorization: Bearer <key> or X-API-Key: <key>"
            )
        else:
            error = Unauthorized("The API key is not valid")
        response = await service_error(request, error)
        await response(scope, receive, send)


def document_api_keys(app: FastAPI, keys: KeyRing) -> None:
    """With keys configured, say so in the OpenAPI document: every operation needs one (either
    scheme) but the open ones, and /docs's "Authorize" then sends the key it is given."""
    if not keys.keys:
        return
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = default_openapi()
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        schema["security"] = [{name: []} for name in SECURITY_SCHEMES]
        for path, operations in schema["paths"].items():
            if keys.is_open(path):
                for operation in operations.values():
                    operation["security"] = []
        return schema

    app.openapi = openapi
