"""/predict's answers, byte for byte: status, headers (but Date) and body for a broad set of good and
bad requests, and its part of the OpenAPI document, as recorded from the service before its route bypassed
FastAPI's dependency solving and response validation (issue 24).

The record is `predict_answers.json` beside this file; `RECORD_ANSWERS=1` rewrites it from the code
under test (only for a change meant to alter an answer: say so in the commit). Scores are those of
the session's seeded model (tests/support/models.py) where the record was made: another device's
kernels (a GPU, AVX-512) differ in the last bits, so numbers in a body are compared to 1e-5 and the
Content-Length to the body's own length; everything else byte for byte.
"""

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.support.http import files
from tests.support.images import jpeg, png, solid_png

RECORD = Path(__file__).with_name("predict_answers.json")
KEY = "k-1234"
BOUNDARY = "multipart/form-data; boundary=x"


def raw_part(name: str, filename: str | None, data: bytes) -> bytes:
    disposition = f"form-data; name={name}" + (f"; filename={filename}" if filename else "")
    return f"--x\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


ONE = files(("cat.jpg", jpeg()))
REQUESTS: dict[str, dict] = {
    # Good requests
    "jpeg": {"files": ONE},
    "png": {"files": files(("shape.png", png(seed=1)))},
    "three files": {
        "files": files(("a.jpg", jpeg(seed=2)), ("b.png", png(64, 48, seed=3)), ("c.jpg", jpeg()))
    },
    "a filename not in ASCII": {"files": files(("chat noir é.jpg", jpeg(seed=4)))},
    "top_k=1": {"files": ONE, "params": {"top_k": "1"}},
    "top_k=3, every class": {"files": ONE, "params": {"top_k": "3"}},
    "top_k=02": {"files": ONE, "params": {"top_k": "02"}},
    "top_k given twice": {"files": ONE, "params": [("top_k", "1"), ("top_k", "2")]},
    "version=1": {"files": ONE, "params": {"version": "1"}},
    "version=1 and top_k=2": {"files": ONE, "params": {"version": "1", "top_k": "2"}},
    "a query parameter not ours": {"files": ONE, "params": {"colour": "red"}},
    "an empty top_k": {"files": ONE, "params": {"top_k": ""}},
    "a text field beside the file": {"files": ONE, "data": {"note": "hello"}},
    # Bad query parameters
    "top_k=0": {"files": ONE, "params": {"top_k": "0"}},
    "top_k=4, over the classes": {"files": ONE, "params": {"top_k": "4"}},
    "top_k=abc": {"files": ONE, "params": {"top_k": "abc"}},
    "top_k=2.5": {"files": ONE, "params": {"top_k": "2.5"}},
    "top_k=-1": {"files": ONE, "params": {"top_k": "-1"}},
    "top_k with 30 digits": {"files": ONE, "params": {"top_k": "9" * 30}},
    "version=2, not served": {"files": ONE, "params": {"version": "2"}},
    "version=0": {"files": ONE, "params": {"version": "0"}},
    "version=abc": {"files": ONE, "params": {"version": "abc"}},
    "label=stable, no labels": {"files": ONE, "params": {"label": "stable"}},
    "an empty label": {"files": ONE, "params": {"label": ""}},
    "version=2 and top_k=4": {"files": ONE, "params": {"version": "2", "top_k": "4"}},
    "version=2 and top_k=0": {"files": ONE, "params": {"version": "2", "top_k": "0"}},
    "version and label": {"files": ONE, "params": {"version": "1", "label": "stable"}},
    # Bad bodies
    "no body": {},
    "no file": {"content": b"--x--\r\n", "headers": {"content-type": BOUNDARY}},
    "the file under another name": {"files": [("image", ("cat.jpg", jpeg()))]},
    "a text field named file": {"data": {"file": "cat.jpg"}},
    "JSON, not multipart": {"json": {"file": "cat.jpg"}},
    "no boundary": {"content": b"xx", "headers": {"content-type": "multipart/form-data"}},
    "a part without a name": {
        "content": raw_part("", "a.png", png()).replace(b"; name=", b"") + b"--x--\r\n",
        "headers": {"content-type": BOUNDARY},
    },
    "not an image": {"files": files(("notes.txt", b"hello, world"))},
    "an empty file": {"files": files(("empty.jpg", b""))},
    "a truncated JPEG": {"files": files(("cut.jpg", jpeg()[:200]))},
    "an image over MAX_IMAGE_PIXELS": {"files": files(("big.png", solid_png(128, size=400)))},
    "a body over MAX_UPLOAD_BYTES": {"files": files(("big.bin", b"\0" * 50_001))},
    "more files than MAX_FILES": {"files": files(*[(f"{i}.png", png(8, 8)) for i in range(4)])},
}
KEYED_REQUESTS: dict[str, dict] = {
    "keys set, no key": {"files": ONE},
    "keys set, a wrong key": {"files": ONE, "headers": {"x-api-key": "wrong"}},
    "keys set, the key": {"files": ONE, "headers": {"x-api-key": KEY}},
    "keys set, the key as a bearer token": {"files": ONE, "headers": {"authorization": f"Bearer {KEY}"}},
}


def answer(response: httpx.Response) -> dict:
    return {
        "status": response.status_code,
        "headers": [[name, value] for name, value in response.headers.multi_items() if name != "date"],
        "body": response.text,
    }


LIMITS = {"max_upload_bytes": 50_000, "max_image_pixels": 100_000, "max_files": 3}


@pytest.fixture(scope="module")
def limited(make_settings) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(**LIMITS))) as client:
        yield client


@pytest.fixture(scope="module")
def keyed(make_settings) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(api_keys=KEY, **LIMITS))) as client:
        yield client


@pytest.fixture(scope="module")
def answers(limited: TestClient, keyed: TestClient) -> dict:
    """Every answer of this module's requests, and the OpenAPI documents with and without API keys."""

    def post(app: TestClient, request: dict) -> httpx.Response:
        return app.post("/predict", **request)

    return {
        "openapi": limited.get("/openapi.json").text,
        "openapi with API keys": keyed.get("/openapi.json").text,
        "answers": {name: answer(post(limited, request)) for name, request in REQUESTS.items()}
        | {name: answer(post(keyed, request)) for name, request in KEYED_REQUESTS.items()},
    }


@pytest.fixture(scope="module")
def recorded(answers: dict) -> dict:
    if os.environ.get("RECORD_ANSWERS"):
        RECORD.write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n")
    return json.loads(RECORD.read_text())


def predict_part(document: str) -> dict:
    """/predict's path item and every schema it refers to, directly or not (other routes may change)."""
    openapi = json.loads(document)
    part = {
        "path": openapi["paths"]["/predict"],
        "schemas": {},
        "security": [openapi.get("security"), openapi["components"].get("securitySchemes")],
    }
    pending = [part["path"]]
    while pending:
        text = json.dumps(pending.pop())
        for name in re.findall(r'"#/components/schemas/([^"]+)"', text):
            if name not in part["schemas"]:
                part["schemas"][name] = openapi["components"]["schemas"][name]
                pending.append(part["schemas"][name])
    return part


@pytest.mark.parametrize("document", ["openapi", "openapi with API keys"])
def test_the_openapi_document_is_as_recorded(answers, recorded, document):
    assert predict_part(answers[document]) == predict_part(recorded[document])


def close(actual: object, expected: object) -> bool:
    """Equal JSON values, but for floats within 1e-5 of each other."""
    if isinstance(expected, float) and isinstance(actual, float):
        return abs(actual - expected) <= 1e-5
    if isinstance(expected, dict) and isinstance(actual, dict):
        return actual.keys() == expected.keys() and all(close(actual[k], expected[k]) for k in expected)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(actual) == len(expected) and all(map(close, actual, expected))
    return type(actual) is type(expected) and actual == expected


@pytest.mark.parametrize("name", [*REQUESTS, *KEYED_REQUESTS])
def test_each_answer_is_as_recorded(answers, recorded, name):
    actual, expected = answers["answers"][name], recorded["answers"][name]
    assert actual["status"] == expected["status"]
    length = str(len(actual["body"].encode()))
    assert [[n, length if n == "content-length" else v] for n, v in expected["headers"]] == actual["headers"]
    if "json" in dict(expected["headers"]).get("content-type", ""):
        assert close(json.loads(actual["body"]), json.loads(expected["body"])), actual["body"]
    else:
        assert actual["body"] == expected["body"]


def test_the_record_covers_each_kind_of_answer(recorded):
    """The record holds the answers this module means to pin, not a service that was down."""
    statuses = {name: entry["status"] for name, entry in recorded["answers"].items()}
    assert statuses["jpeg"] == statuses["three files"] == statuses["keys set, the key"] == 200
    refused = ("top_k=0", "top_k=abc", "no file", "a text field named file")
    assert {statuses[name] for name in refused} == {422}
    assert statuses["version=2, not served"] == 404
    assert statuses["a body over MAX_UPLOAD_BYTES"] == 413
    assert statuses["keys set, no key"] == 401
