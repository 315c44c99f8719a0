"""/predict's multipart body read into its uploaded files, with python-multipart's parser directly.

Starlette's form parser, which FastAPI's `File()` parameters use, gives every file a spooled
temporary file and an `UploadFile`, and FastAPI then validates the list. On the event loop, where
every request's parsing runs, that cost 90 µs per small JPEG, against 22 µs for the parser alone:
here the loop only feeds chunks to the parser and keeps the files' bytes, and the body's size is
already capped by MAX_UPLOAD_BYTES (`body_limit.py`).

What the client gets is Starlette's behaviour: 400 for a malformed body (no boundary, a part
without a name), 422 naming `body.file` when there is no file part, parts that are not files ignored
unless they use the file field's name.
"""

import codecs
import io
from http import HTTPStatus
from typing import Any

import python_multipart
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.exceptions import HTTPException

from app.api.dataplane import ImageCounter
from app.runtime.classifier import Upload

MAX_FIELDS = 1000  # parts that are not files (ignored), as Starlette's default limit


def upload_body(field: str, description: str) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a route that reads its files with `read_uploads`."""
    schema = {
        "type": "object",
        "required": [field],
        "properties": {
            field: {
                "type": "array",
                "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                "title": field.title(),
                "description": description,
            }
        },
    }
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


async def read_uploads(request: Request, field: str, count_files: ImageCounter) -> list[Upload]:
    """The files of the multipart parts named `field`, in upload order, with their filenames.

    Raises `HTTPException` 400 for a malformed body, and `RequestValidationError` when no part named
    `field` holds a file or one holds a text field. Each file is counted by `count_files` as its part
    begins, so a request over MAX_FILES is refused before the rest of its body is parsed.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise _missing(field)
    if b"boundary" not in options:
        raise HTTPException(HTTPStatus.BAD_REQUEST, "Missing boundary in multipart.")
    parts = _Parts(field, _charset(options), count_files)
    parser = python_multipart.MultipartParser(options[b"boundary"], parts.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError as error:
        raise HTTPException(HTTPStatus.BAD_REQUEST, "Invalid multipart data.") from error
    if parts.not_files:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", field, index),
                    "msg": "Expected a file (a part with a filename), received a text field",
                    "type": "value_error",
                }
                for index in parts.not_files
            ]
        )
    if not parts.files:
        raise _missing(field)
    return [(filename, io.BytesIO(b"".join(chunks))) for filename, chunks in parts.files]


def _missing(field: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": "Field required", "type": "missing"}])


def _charset(options: dict[bytes, bytes]) -> str:
    try:
        return codecs.lookup(options.get(b"charset", b"utf-8").decode("latin-1")).name
    except LookupError:
        return "latin-1"


def _decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset)
    except UnicodeDecodeError:
        return data.decode("latin-1")


class _Parts:
    """python-multipart's callbacks, collecting the files of the parts named `field`."""

    def __init__(self, field: str, charset: str, count_files: ImageCounter) -> None:
        self.field = field
        self.charset = charset
        self.count_files = count_files
        self.files: list[tuple[str, list[bytes]]] = []
        self.not_files: list[int] = []  # positions among the `field` parts of those without a filename
        self._fields = 0
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._chunks: list[bytes] | None = None  # the current part's data, when it is one of our files
        self._filename = ""
        self._ours = 0  # parts named `field` so far

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""
        self._chunks = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise HTTPException(
                HTTPStatus.BAD_REQUEST, 'The Content-Disposition header field "name" must be provided.'
            )
        is_file = b"filename" in options
        if _decode(options[b"name"], self.charset) != self.field:
            self._fields += not is_file
            if self._fields > MAX_FIELDS:
                raise HTTPException(
                    HTTPStatus.BAD_REQUEST, f"Too many fields. Maximum number of fields is {MAX_FIELDS}."
                )
            return
        self._ours += 1
        if not is_file:
            self.not_files.append(self._ours - 1)
            return
        self.count_files(len(self.files) + 1, more_to_come=True)
        self._chunks = []
        self._filename = _decode(options[b"filename"], self.charset)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._chunks is not None:
            self._chunks.append(data[start:end])

    def _part_end(self) -> None:
        if self._chunks is not None:
            self.files.append((self._filename, self._chunks))
            self._chunks = None
