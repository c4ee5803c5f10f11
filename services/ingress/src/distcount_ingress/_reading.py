"""The read side's routes: a counter (with its as_of, and read-your-writes), a write's token,
history per step, listing in key order, and the busiest counters of a recent window.

Answers are built with the standard library's json, which writes integers of any size exactly
(totals may pass 64 bits); orjson stops there.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from starlette.requests import Request
from starlette.responses import Response

from distcount_codec import key_errors
from distcount_config import Settings
from distcount_ingress import _params, _tokens
from distcount_ingress._flushed import FlushWatcher
from distcount_ingress._http import JSONResponse, error_response, unavailable_response
from distcount_ingress._params import BadParameter, format_duration, iso, iso_time
from distcount_metrics import IngressMetrics
from distcount_store import Flushed, HistoryQuery, StoreError

MAX_POINTS: Final = 10_000
MAX_LIST_LIMIT: Final = 1000
MAX_TOP_LIMIT: Final = 100
# the busiest counters sum every row of the window: an hour keeps that query cheap
MAX_TOP_WINDOW_MS: Final = 3_600_000
READ_TIMEOUT_S: Final = 5.0
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

Answered = Callable[[str, Response, float | None], Response]


class Reader(Protocol):
    """What the read side reads: see `PostgresTotals`; every failure is a `StoreError`."""

    async def read(self, key: str) -> int | None: ...

    async def history(self, query: HistoryQuery, timeout_s: float) -> dict[int, int]: ...

    async def listing(self, prefix: str, after: str, limit: int) -> list[tuple[str, int]]: ...

    async def top(self, since: datetime, until: datetime, limit: int) -> list[tuple[str, int]]: ...


class ReadRoutes:
    def __init__(
        self,
        settings: Settings,
        reader: Reader,
        watcher: FlushWatcher,
        metrics: IngressMetrics,
        answered: Answered,
    ) -> None:
        self._settings = settings
        self._reader = reader
        self._watcher = watcher
        self._metrics = metrics
        self._answered = answered
        self._wait_s = settings.read_after_timeout_ms / 1000

    async def counter(self, request: Request) -> Response:
        return await self._answer("counter", self._counter, request)

    async def writes(self, request: Request) -> Response:
        return await self._answer("writes", self._writes, request)

    async def history(self, request: Request) -> Response:
        return await self._answer("history", self._history, request)

    async def listing(self, request: Request) -> Response:
        return await self._answer("listing", self._listing, request)

    async def top(self, request: Request) -> Response:
        return await self._answer("top", self._top, request)

    async def _answer(
        self, route: str, handle: Callable[[Request], Any], request: Request
    ) -> Response:
        """The route's answer; the refusals and failures every read route shares."""
        started = self._metrics.start_timer()
        try:
            response: Response = await handle(request)
        except BadParameter as exc:
            response = error_response(422, {exc.name: [exc.message]})
        except StoreError as exc:
            if not exc.retriable:
                raise  # PostgreSQL refused the query itself: a fault of the setup, a 500
            self._metrics.on_unavailable("postgres")
            response = unavailable_response("postgres", str(exc))
        return self._answered(route, response, started)

    async def _counter(self, request: Request) -> Response:
        key = _key(request)
        token = request.query_params.get("after")
        complete: bool | None = None
        if token is None:
            flushed = await self._watcher.current()
        else:
            waited = await self._watcher.wait(_offsets(token, "after"), self._wait_s)
            complete = waited is not None
            flushed = waited or await self._watcher.current()
        value = await self._reader.read(key)
        if value is None and complete is not False:
            return error_response(404, {"key": ["not found"]})
        data: dict[str, Any] = {
            "key": key,
            "value": value or 0,
            "as_of": await self._as_of(flushed),
        }
        if complete is not None:
            data["complete"] = complete
        return _json(200 if complete is not False else 202, data)

    async def _writes(self, request: Request) -> Response:
        token = request.path_params["token"]
        flushed = await self._watcher.wait(_offsets(token, "token"), self._wait_s)
        complete = flushed is not None
        flushed = flushed or await self._watcher.current()
        data = {"token": token, "complete": complete, "as_of": await self._as_of(flushed)}
        return _json(200 if complete else 202, data)

    async def _history(self, request: Request) -> Response:
        key = _key(request)
        query = self._history_query(key, request.query_params)
        flushed = await self._watcher.current()
        if await self._reader.read(key) is None:
            return error_response(404, {"key": ["not found"]})
        sums = await self._reader.history(query, READ_TIMEOUT_S)
        steps = (int(query.end.timestamp() * 1000) - query.start_ms) // query.step_ms
        points = [
            {"start": iso(query.start_ms + i * query.step_ms), "value": sums.get(i, 0)}
            for i in range(steps)
        ]
        data = {
            "key": key,
            "from": iso(query.start_ms),
            "to": iso(query.start_ms + steps * query.step_ms),
            "step_ms": query.step_ms,
            "points": points,
            "as_of": await self._as_of(flushed),
        }
        return _json(200, data)

    def _history_query(self, key: str, params: Any) -> HistoryQuery:
        bucket_ms = self._settings.bucket_ms
        # a minute, or the first whole number of buckets past it
        step_ms = _params.duration_ms(
            "step", params.get("step"), -(-60_000 // bucket_ms) * bucket_ms
        )
        if step_ms % bucket_ms:
            raise BadParameter(
                "step", f"must be a multiple of the bucket width, {format_duration(bucket_ms)}"
            )
        now_ms = _now_ms()
        to_ms = _params.time_ms("to", params.get("to"), now_ms)
        from_ms = _params.time_ms("from", params.get("from"), max(0, to_ms - 3_600_000))
        if from_ms >= to_ms:
            raise BadParameter("from", "must be before to")
        start_ms = from_ms - from_ms % step_ms
        end_ms = -(-to_ms // step_ms) * step_ms
        if end_ms > _params.MAX_TIME_MS:
            raise BadParameter("to", "rounded up to a whole step, must stay within the year 9999")
        if (end_ms - start_ms) // step_ms > MAX_POINTS:
            raise BadParameter(
                "step", f"gives more than {MAX_POINTS} points: use a larger step or a shorter range"
            )
        for tier in self._settings.rollup:
            # what compaction may have merged: buckets of the tier's width wholly past its age
            cutoff_ms = now_ms - tier.age_ms
            cutoff_ms -= cutoff_ms % tier.width_ms
            if start_ms < cutoff_ms and step_ms % tier.width_ms:
                raise BadParameter(
                    "step",
                    f"data older than {format_duration(tier.age_ms)} is kept per "
                    f"{format_duration(tier.width_ms)}: before {iso(cutoff_ms)}, "
                    f"the step must be a multiple of {format_duration(tier.width_ms)}",
                )
        return HistoryQuery(key, _time(start_ms), _time(end_ms), start_ms, step_ms)

    async def _listing(self, request: Request) -> Response:
        params = request.query_params
        prefix = _params.prefix(params.get("prefix"))
        limit = _params.limit("limit", params.get("limit"), 100, MAX_LIST_LIMIT)
        after = _cursor_key(params.get("cursor"))
        rows = await self._reader.listing(prefix, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        data = {
            "counters": [{"key": key, "value": value} for key, value in rows],
            "next_cursor": _cursor(rows[-1][0]) if more and rows else None,
        }
        return _json(200, data)

    async def _top(self, request: Request) -> Response:
        params = request.query_params
        bucket_ms = self._settings.bucket_ms
        window_ms = _params.duration_ms("window", params.get("window"), 300_000)
        if not bucket_ms <= window_ms <= MAX_TOP_WINDOW_MS:
            raise BadParameter(
                "window",
                f"must be from {format_duration(bucket_ms)} (the bucket width) to "
                f"{format_duration(MAX_TOP_WINDOW_MS)}",
            )
        limit = _params.limit("limit", params.get("limit"), 10, MAX_TOP_LIMIT)
        flushed = await self._watcher.current()
        now_ms = _now_ms()
        since_ms = now_ms - window_ms
        since_ms -= since_ms % bucket_ms
        rows = await self._reader.top(_time(since_ms), _time(now_ms + 1), limit)
        data = {
            "window_ms": window_ms,
            "counters": [{"key": key, "value": value} for key, value in rows],
            "as_of": await self._as_of(flushed),
        }
        return _json(200, data)

    async def _as_of(self, flushed: Flushed) -> str | None:
        return iso_time(await self._watcher.as_of(flushed))


def _key(request: Request) -> str:
    key: str = request.path_params["key"]
    if problems := key_errors(key):
        raise BadParameter("key", problems[0])
    return key


def _offsets(token: str, name: str) -> dict[int, int]:
    try:
        return _tokens.decode(token)
    except _tokens.InvalidToken:
        raise BadParameter(name, "is not a token of this service") from None


def _cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).rstrip(b"=").decode()


def _cursor_key(cursor: str | None) -> str:
    if not cursor:
        return ""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        return raw.decode()
    except (binascii.Error, ValueError):
        raise BadParameter("cursor", "is not a cursor of this service") from None


def _json(status: int, data: dict[str, Any]) -> Response:
    body = json.dumps({"data": data}, ensure_ascii=False, separators=(",", ":"))
    return JSONResponse(body.encode(), status)


def _time(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)  # exact: a float loses milliseconds near 9999


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
