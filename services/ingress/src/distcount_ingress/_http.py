"""Request bodies (content type, size, JSON) and the JSON answers of the ingress.

Every refusal is a `Rejected` carrying its status and `{"errors": {field: [messages]}}`, so the
handlers stay a straight line and no input can reach a 5xx.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import orjson
from starlette.requests import Request
from starlette.responses import Response

from distcount_codec import InvalidJSON, parse_json

JSON: Final = "application/json"
_RETRY_AFTER_S = 1
_CLOSE: Final = {"Connection": "close"}


class Rejected(Exception):
    """A request refused before it reached Kafka or PostgreSQL."""

    def __init__(self, status_code: int, errors: dict[str, list[str]]) -> None:
        super().__init__(status_code, errors)
        self.status_code = status_code
        self.errors = errors

    def response(self) -> Response:
        if self.status_code == 413:
            # The body may still be on its way: the connection is closed after the answer (and
            # the server discards the rest meanwhile, see `_protocol`), rather than kept for a
            # next request behind an unread body.
            return error_response(413, self.errors, _CLOSE)
        return error_response(self.status_code, self.errors)


class JSONResponse(Response):
    media_type = JSON


def json_response(
    status_code: int, payload: object, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(orjson.dumps(payload), status_code, headers)


def error_response(
    status_code: int, errors: dict[str, list[str]], headers: Mapping[str, str] | None = None
) -> Response:
    return json_response(status_code, {"errors": errors}, headers)


def unavailable_response(field: str, message: str, retry_after_s: int = _RETRY_AFTER_S) -> Response:
    return error_response(503, {field: [message]}, {"Retry-After": str(retry_after_s)})


def counter_body(key: str, value: int) -> bytes:
    """`{"data": {"key", "value"}}` with `value` exact at any size.

    Totals may pass 64 bits (they are PostgreSQL numerics), where orjson stops; Python's own
    decimal form of an int is a valid JSON integer of any length.
    """
    return b'{"data":{"key":' + orjson.dumps(key) + b',"value":' + str(value).encode() + b"}}"


async def read_json(request: Request, max_body_bytes: int) -> object:
    """The parsed JSON body, after the content type and the size are checked.

    Raises Rejected, or InvalidIncrement for an object that names a member twice: JSON, yet
    against the rules (a 422, as the handlers answer any InvalidIncrement).
    """
    content_type: bytes | None = None
    content_length: bytes | None = None
    for name, value in request.scope["headers"]:
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            content_length = value
    if content_type is None or not _is_json(content_type):
        raise Rejected(
            415, {"content-type": ["must be application/json (or application/*+json), UTF-8"]}
        )
    if content_length is not None:
        _check_length(content_length, max_body_bytes)
    body = await _read_body(request, max_body_bytes)
    try:
        return parse_json(body)
    except InvalidJSON as exc:
        raise Rejected(400, exc.errors) from None


def _is_json(content_type: bytes) -> bool:
    if content_type == b"application/json":  # the common case, without parsing
        return True
    media_type, *parameters = content_type.decode("latin-1").split(";")
    media_type = media_type.strip().lower()
    if media_type != JSON and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False  # JSON is UTF-8 (RFC 8259); a body announced otherwise is not read
    return True


def _check_length(content_length: bytes, max_body_bytes: int) -> None:
    if not content_length.isdigit():
        raise Rejected(400, {"content-length": ["must be a non-negative integer"]})
    if int(content_length) > max_body_bytes:
        raise Rejected(413, {"body": [f"must be at most {max_body_bytes} bytes"]})


async def _read_body(request: Request, max_body_bytes: int) -> bytes:
    # Straight from `receive`, like Request.stream() but counting as it goes, so a chunked body
    # without Content-Length is cut off at the limit instead of being held whole in memory.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":  # http.disconnect: nobody reads the answer
            raise Rejected(400, {"body": ["the client went away before sending it all"]})
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body_bytes:
            raise Rejected(413, {"body": [f"must be at most {max_body_bytes} bytes"]})
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
