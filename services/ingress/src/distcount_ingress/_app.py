"""The HTTP application: routes, and the answer each request gets.

`create_app` takes what the process built once (a publisher, a reader of totals) so tests can
build the same app around fakes or around their own producers and pools.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Final, Protocol

import orjson
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Lifespan, Scope

from distcount_codec import (
    InvalidIncrement,
    batch_records,
    encode_record,
    idempotency_key_errors,
    validate_increment,
)
from distcount_config import Settings
from distcount_ingress import _tokens
from distcount_ingress._auth import AccessControl
from distcount_ingress._errors import Unavailable
from distcount_ingress._flushed import FlushWatcher
from distcount_ingress._http import (
    JSONResponse,
    Rejected,
    error_response,
    json_response,
    read_json,
    unavailable_response,
)
from distcount_ingress._openapi import openapi_document
from distcount_ingress._page import page
from distcount_ingress._reading import READ_TIMEOUT_S, Reader, ReadRoutes
from distcount_metrics import IngressMetrics
from distcount_store import Flushed

MAX_BATCH_ITEMS: Final = 10_000
HEALTH_TIMEOUT_S: Final = 2.0
IDEMPOTENCY_KEY: Final = "Idempotency-Key"
_IDEMPOTENCY_KEY_RAW: Final = IDEMPOTENCY_KEY.lower().encode()  # as the server hands it over


class _AnyText(Convertor[str]):
    """The rest of the path, whatever it holds. Starlette's `path` convertor (`.*`) stops at a
    newline, so a key holding one answered 404, or, at its end, matched the key without it."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# Starlette has one registry of convertors; the name is ours alone
register_url_convertor("distcount_any_text", _AnyText())


class Publisher(Protocol):
    """Where increments go: see `KafkaPublisher`; every method raises `Unavailable` on failure."""

    async def publish(self, key: bytes, value: bytes) -> tuple[int, int]:
        """(partition, offset) of the record, once acknowledged."""
        ...

    async def publish_batch(self, records: Sequence[tuple[bytes, bytes]]) -> dict[int, int]:
        """partition -> the highest offset written there, once committed."""
        ...

    async def partition_count(self) -> int | None:
        """How many partitions the topic has (None while Kafka cannot say)."""
        ...

    async def check(self, timeout_s: float) -> None: ...


class CounterReader(Reader, Protocol):
    """Where totals come from: see `PostgresTotals`; raises `StoreError` on failure."""

    async def flushed(self, timeout_s: float) -> Flushed:
        """What the aggregators have flushed, per partition."""
        ...

    async def check(self, timeout_s: float) -> None: ...

    async def stalls(self, timeout_s: float) -> list[str]:
        """What stops counting: the stalled partitions, described; raises on failure."""
        ...


def create_app(
    settings: Settings,
    publisher: Publisher,
    counters: CounterReader,
    *,
    metrics: IngressMetrics | None = None,
    lifespan: Lifespan[Starlette] | None = None,
) -> Starlette:
    """The ingress app; `counters` is usually a `PostgresTotals` over the store's Database."""
    metrics = metrics or IngressMetrics()
    handlers = _Handlers(settings, publisher, counters, metrics)
    watcher = FlushWatcher(lambda: counters.flushed(READ_TIMEOUT_S), publisher.partition_count)
    reads = ReadRoutes(settings, counters, watcher, metrics, handlers.answered)
    routes = [
        Route("/", handlers.page, methods=["GET"]),
        Route("/increment", handlers.increment, methods=["POST"]),
        Route("/increments", handlers.increments, methods=["POST"]),
        Route("/counters", reads.listing, methods=["GET"]),
        # before the counter's own route: a counter named "top" is read through the listing
        Route("/counters/top", reads.top, methods=["GET"]),
        Route("/counters/{key:distcount_any_text}/history", reads.history, methods=["GET"]),
        # any text: a key may hold "/" (sent as %2F, which the server decodes before routing),
        # and control characters, which the handler refuses as a write would
        Route("/counters/{key:distcount_any_text}", reads.counter, methods=["GET"]),
        Route("/writes/{token}", reads.writes, methods=["GET"]),
        Route("/health/live", handlers.live, methods=["GET"]),
        Route("/health/ready", handlers.ready, methods=["GET"]),
        Route("/openapi.json", handlers.openapi, methods=["GET"]),
    ]
    # the route names metrics are tagged with
    names: dict[object, str] = {route.endpoint: route.endpoint.__name__ for route in routes}

    async def http_error(request: Request, exc: Exception) -> Response:
        response = await _http_error(request, exc)
        # 404 and 405 come from the router, before any route's handler
        metrics.on_request("unmatched", response.status_code, None)
        return response

    async def server_error(request: Request, exc: Exception) -> Response:
        # a handler that raised: a bug, logged by Starlette's ServerErrorMiddleware
        metrics.on_request(names.get(request.scope.get("endpoint"), "unmatched"), 500, None)
        return error_response(500, {"server": ["internal error"]})

    def refused(scope: Scope, status: int) -> None:
        # a 401 or 403 answered before routing: tagged as the route would have been
        route = next((r for r in routes if r.matches(scope)[0] is Match.FULL), None)
        metrics.on_request("unmatched" if route is None else names[route.endpoint], status, None)

    # decided here, once: without tokens configured, no request passes through any check
    middleware = []
    if settings.access_control:
        middleware.append(
            Middleware(
                AccessControl,
                write_hashes=settings.write_token_hashes,
                read_hashes=settings.read_token_hashes,
                refused=refused,
            )
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )


class _Handlers:
    """One method per route, named as its `route` tag. Each draws whether its request is timed
    first and reports its answer last, inline: a wrapper around every handler would cost the
    hottest route a coroutine more per request."""

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

    def answered(self, route: str, response: Response, started: float | None) -> Response:
        duration_s = None if started is None else time.perf_counter() - started
        self._metrics.on_request(route, response.status_code, duration_s)
        return response

    async def increment(self, request: Request) -> Response:
        started = self._metrics.start_timer()  # None: counted, not timed (sampling)
        try:
            increment = validate_increment(await read_json(request, self._max_body_bytes))
            ident = idempotency_key(request)
        except Rejected as exc:
            return self.answered("increment", exc.response(), started)
        except InvalidIncrement as exc:
            return self.answered("increment", error_response(422, exc.errors), started)
        key, value = encode_record(increment, ident)
        sending = None if started is None else time.perf_counter()
        try:
            partition, offset = await self._publisher.publish(key, value)
        except Unavailable as exc:
            self._metrics.on_unavailable(exc.cause)
            answer = unavailable_response("kafka", str(exc), exc.retry_after_s)
            return self.answered("increment", answer, started)
        if sending is not None:
            self._metrics.on_produced("single", time.perf_counter() - sending)
        # the record's value is the increment's JSON already: the token joins it
        token = _tokens.encode({partition: offset}).encode()
        body = b'{"data":' + value[:-1] + b',"token":"' + token + b'"}}'
        return self.answered("increment", JSONResponse(body, 202), started)

    async def increments(self, request: Request) -> Response:
        started = self._metrics.start_timer()
        try:
            body = await read_json(request, self._max_body_bytes)
            records = batch_records(body, MAX_BATCH_ITEMS, idempotency_key(request))
        except Rejected as exc:
            return self.answered("increments", exc.response(), started)
        except InvalidIncrement as exc:
            return self.answered("increments", error_response(422, exc.errors), started)
        sending = None if started is None else time.perf_counter()
        try:
            written = await self._publisher.publish_batch(records)
        except Unavailable as exc:
            self._metrics.on_unavailable(exc.cause)
            answer = unavailable_response("kafka", str(exc), exc.retry_after_s)
            return self.answered("increments", answer, started)
        if sending is not None:
            self._metrics.on_produced("batch", time.perf_counter() - sending)
        sent = b",".join([value for _, value in records])
        token = _tokens.encode(written).encode()
        body = b'{"data":{"increments":[' + sent + b'],"token":"' + token + b'"}}'
        answer = JSONResponse(body, 202)
        return self.answered("increments", answer, started)

    async def page(self, request: Request) -> Response:
        started = self._metrics.start_timer()
        return self.answered("page", await page(request), started)

    async def live(self, request: Request) -> Response:
        started = self._metrics.start_timer()
        return self.answered("live", json_response(200, {"status": "ok"}), started)

    async def ready(self, request: Request) -> Response:
        started = self._metrics.start_timer()
        kafka, postgres, counting = await asyncio.gather(
            _probe(self._publisher.check(HEALTH_TIMEOUT_S)),
            _probe(self._counters.check(HEALTH_TIMEOUT_S)),
            self._counting(),
        )
        checks = {"kafka": kafka, "postgres": postgres, "counting": counting}
        if kafka == postgres == counting == "ok":
            answer = json_response(200, {"status": "ok", "checks": checks})
        else:
            answer = json_response(503, {"status": "unavailable", "checks": checks})
        return self.answered("ready", answer, started)

    async def _counting(self) -> str:
        """Whether the aggregators count every partition: a stalled one would leave what this
        ingress accepts for it uncounted until an operator acts (see the README)."""
        try:
            stalls = await self._counters.stalls(HEALTH_TIMEOUT_S)
        except Exception:  # a reason PostgreSQL's own check reports
            return "unknown: PostgreSQL does not answer"
        return "ok" if not stalls else "stopped: " + "; ".join(stalls)

    async def openapi(self, request: Request) -> Response:
        started = self._metrics.start_timer()
        return self.answered("openapi", JSONResponse(self._openapi, 200), started)


def idempotency_key(request: Request) -> str | None:
    """The request's `Idempotency-Key`, None without one, or InvalidIncrement naming it. Read
    from the raw headers: a write without one, the usual case, costs one pass over them."""
    found = None
    for name, raw in request.scope["headers"]:
        if name == _IDEMPOTENCY_KEY_RAW:
            if found is not None:
                raise InvalidIncrement({IDEMPOTENCY_KEY: ["must be sent once"]})
            found = raw.decode("latin-1")
    if found is not None and (problems := idempotency_key_errors(found)):
        raise InvalidIncrement({IDEMPOTENCY_KEY: problems})
    return found


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
