"""The HTTP application: routes, and the answer each request gets.

`create_app` takes what the process built once (a publisher, a reader of totals) so tests can
build the same app around fakes or around their own producers and pools.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Lifespan

from distcount_codec import (
    InvalidIncrement,
    encode_record,
    sum_by_key,
    validate_batch,
    validate_increment,
)
from distcount_config import Settings
from distcount_ingress._errors import Unavailable
from distcount_ingress._http import (
    JSONResponse,
    Rejected,
    counter_body,
    error_response,
    json_response,
    read_json,
    unavailable_response,
)
from distcount_ingress._openapi import openapi_document
from distcount_ingress._totals import PostgresTotals
from distcount_metrics import IngressMetrics
from distcount_store import DatabaseUnavailable

MAX_BATCH_ITEMS: Final = 10_000
HEALTH_TIMEOUT_S: Final = 2.0


class Publisher(Protocol):
    """Where increments go: see `KafkaPublisher`; every method raises `Unavailable` on failure."""

    async def publish(self, key: bytes, value: bytes) -> None: ...

    async def publish_batch(self, records: Sequence[tuple[bytes, bytes]]) -> None: ...

    async def check(self, timeout_s: float) -> None: ...


class CounterReader(Protocol):
    """Where totals come from: see `PostgresTotals`; raises `DatabaseUnavailable` on failure."""

    async def read(self, key: str) -> int | None: ...

    async def check(self, timeout_s: float) -> None: ...


def create_app(
    settings: Settings,
    publisher: Publisher,
    counters: CounterReader | asyncpg.Pool,
    *,
    metrics: IngressMetrics | None = None,
    lifespan: Lifespan[Starlette] | None = None,
) -> Starlette:
    """The ingress app; `counters` may be an asyncpg pool, read through `PostgresTotals`."""
    reader = PostgresTotals(counters) if isinstance(counters, asyncpg.Pool) else counters
    metrics = metrics or IngressMetrics()
    handlers = _Handlers(settings, publisher, reader, metrics)

    def route(path: str, name: str, endpoint: Endpoint, method: str) -> Route:
        return Route(path, _measured(name, endpoint, metrics), methods=[method])

    routes = [
        route("/increment", "increment", handlers.increment, "POST"),
        route("/increments", "increments", handlers.increments, "POST"),
        # `path`: a key may hold "/" (sent as %2F, which the server decodes before routing)
        route("/counters/{key:path}", "counter", handlers.counter, "GET"),
        route("/health/live", "live", handlers.live, "GET"),
        route("/health/ready", "ready", handlers.ready, "GET"),
        route("/openapi.json", "openapi", handlers.openapi, "GET"),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        response = await _http_error(request, exc)
        # 404 and 405 come from the router, before any route's own measure
        metrics.on_request("unmatched", response.status_code, None)
        return response

    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: _server_error},
        lifespan=lifespan,
    )


Endpoint = Callable[[Request], Awaitable[Response]]


def _measured(route: str, endpoint: Endpoint, metrics: IngressMetrics) -> Endpoint:
    if not metrics.recording:
        return endpoint
    on_request = metrics.on_request
    clock = time.perf_counter

    async def measured(request: Request) -> Response:
        start = clock()
        try:
            response = await endpoint(request)
        except Exception:
            on_request(route, 500, clock() - start)
            raise
        on_request(route, response.status_code, clock() - start)
        return response

    return measured


class _Handlers:
    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        counters: CounterReader,
        metrics: IngressMetrics,
    ) -> None:
        self._max_body_bytes = settings.max_body_bytes
        self._publisher = publisher
        self._counters = counters
        self._metrics = metrics
        self._openapi = orjson.dumps(openapi_document(settings, MAX_BATCH_ITEMS))

    async def increment(self, request: Request) -> Response:
        try:
            increment = validate_increment(await read_json(request, self._max_body_bytes))
        except Rejected as exc:
            return exc.response()
        except InvalidIncrement as exc:
            return error_response(422, exc.errors)
        key, value = encode_record(increment)
        start = time.perf_counter()
        try:
            await self._publisher.publish(key, value)
        except Unavailable as exc:
            self._metrics.on_unavailable(exc.cause)
            return unavailable_response("kafka", str(exc), exc.retry_after_s)
        self._metrics.on_produced("single", time.perf_counter() - start)
        # the record's value is the increment's JSON already
        return JSONResponse(b'{"data":' + value + b"}", 202)

    async def increments(self, request: Request) -> Response:
        try:
            batch = validate_batch(await read_json(request, self._max_body_bytes), MAX_BATCH_ITEMS)
        except Rejected as exc:
            return exc.response()
        except InvalidIncrement as exc:
            return error_response(422, exc.errors)
        records = [encode_record(increment) for increment in sum_by_key(batch)]
        start = time.perf_counter()
        try:
            await self._publisher.publish_batch(records)
        except Unavailable as exc:
            self._metrics.on_unavailable(exc.cause)
            return unavailable_response("kafka", str(exc), exc.retry_after_s)
        self._metrics.on_produced("batch", time.perf_counter() - start)
        sent = b",".join(value for _, value in records)
        return JSONResponse(b'{"data":{"increments":[' + sent + b"]}}", 202)

    async def counter(self, request: Request) -> Response:
        key: str = request.path_params["key"]
        if errors := _key_errors(key):
            return error_response(422, {"key": errors})
        try:
            value = await self._counters.read(key)
        except DatabaseUnavailable as exc:
            self._metrics.on_unavailable("postgres")
            return unavailable_response("postgres", str(exc))
        if value is None:
            return error_response(404, {"key": ["not found"]})
        return JSONResponse(counter_body(key, value), 200)

    async def live(self, request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def ready(self, request: Request) -> Response:
        kafka, postgres = await asyncio.gather(
            _probe(self._publisher.check(HEALTH_TIMEOUT_S)),
            _probe(self._counters.check(HEALTH_TIMEOUT_S)),
        )
        checks = {"kafka": kafka, "postgres": postgres}
        if kafka == postgres == "ok":
            return json_response(200, {"status": "ok", "checks": checks})
        return json_response(503, {"status": "unavailable", "checks": checks})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self._openapi, 200)


def _key_errors(key: str) -> list[str]:
    # the codec's key rule, checked with a value that always passes
    try:
        validate_increment({"key": key, "value": 1})
    except InvalidIncrement as exc:
        return exc.errors.get("key", [])
    return []


async def _probe(check: Awaitable[None]) -> str:
    try:
        await check
    except Exception as exc:  # a probe that fails in any way is a failed check, not a 500
        return f"error: {exc}" if str(exc) else f"error: {exc.__class__.__name__}"
    return "ok"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    field = {404: "path", 405: "method"}.get(exc.status_code, "request")
    return error_response(exc.status_code, {field: [exc.detail.lower()]}, exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    # a bug, logged by Starlette's ServerErrorMiddleware; the client still gets JSON
    return error_response(500, {"server": ["internal error"]})
