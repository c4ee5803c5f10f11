"""`AsyncClient`: the HTTP API from asyncio code, the twin of `_sync`'s `Client` line for line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import TypeVar

import httpx

from distcount_client import _calls
from distcount_client._calls import Call
from distcount_client._exceptions import ClientError, NotCountedYet, mapped, refused
from distcount_client._models import Counted, Counter, Entry, History, Page, Top, Written
from distcount_client._retry import Retry
from distcount_client._sync import DEFAULT_BASE_URL, DEFAULT_TIMEOUT_S, DEFAULT_WAIT_S
from distcount_core import Backoff

T = TypeVar("T")

# module attributes, so that tests can stand in for them with a fake clock
_sleep = asyncio.sleep
_clock = time.monotonic


class AsyncClient:
    """A client of distcount's ingress, for asyncio. Use it as an async context manager, or
    `aclose()` it.

    Reads are retried on connection failures and on a 503 with Retry-After (see `Retry`), and
    so are writes: each carries an Idempotency-Key (a fresh UUID unless the caller gives one),
    and the ingress counts a write sent again under its key once. A write that still fails
    raises; to retry it later yourself, pass the same `idempotency_key` with the same body
    (`Written.idempotency_key` tells a successful write's). The ingress remembers a key for
    DISTCOUNT_IDEMPOTENCY_WINDOW_S (a day by default).

    `token`: a bearer token, sent with every request, for an ingress with access control (its
    scopes decide which calls it may make: `write` for the increments, `read` for the rest).

    `http`: an httpx.AsyncClient of the caller's (transports, proxies, TLS), which the caller
    closes; by default the client makes and closes its own.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: Retry | None = None,
        token: str | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry = retry or Retry()
        self._headers = _calls.authorization(token)
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # -- writes ----------------------------------------------------------------------------

    async def incr(
        self, key: str, value: int = 1, *, idempotency_key: str | None = None
    ) -> Written:
        """`POST /increment`: once it returns, Kafka holds the increment and it will be
        counted exactly once. It carries an Idempotency-Key (`idempotency_key`, else a fresh
        UUID), so it is retried as a read is: a retry is counted once with the first."""
        ident = _calls.idempotency_key(idempotency_key)
        written = await self._send(_calls.increment(key, value, ident))
        return replace(written, idempotency_key=ident)

    async def incr_many(
        self,
        increments: Mapping[str, int] | Iterable[tuple[str, int]],
        *,
        idempotency_key: str | None = None,
    ) -> Written:
        """`POST /increments`: summed per key, counted all together or not at all; retried
        under its Idempotency-Key as `incr` is."""
        ident = _calls.idempotency_key(idempotency_key)
        written = await self._send(_calls.increments(increments, ident))
        return replace(written, idempotency_key=ident)

    async def wait_for(self, token: str | Written, timeout_s: float = DEFAULT_WAIT_S) -> Counted:
        """Until the write that returned `token` (or the `Written` itself) is in the totals;
        `NotCountedYet` if it is not within `timeout_s`."""
        token = _calls.token_of(token)
        if not timeout_s > 0:
            raise refused("timeout_s", "must be above 0")
        deadline = _clock() + timeout_s
        pause = Backoff(0.05, 1.0)
        as_of: datetime | None = None
        while (left_s := deadline - _clock()) > 0:
            try:
                counted, complete = await self._send(_calls.write_status(token, left_s))
            except ClientError as exc:
                if _clock() < deadline:
                    raise
                raise NotCountedYet(token, timeout_s, as_of) from exc
            if complete:
                return counted
            as_of = counted.as_of
            await _sleep(min(pause.next_s(), max(0.0, deadline - _clock())))
        raise NotCountedYet(token, timeout_s, as_of)

    # -- reads -----------------------------------------------------------------------------

    async def get_counter_value(self, key: str, *, after: str | None = None) -> Counter:
        """`GET /counters/{key}`. With `after` (a write's token), once that write is counted,
        or, if the ingress stops waiting first, the value then with `complete=False`."""
        if _calls.shadowed(key):
            waited = None
            if after is not None:
                read_timeout_s = self.timeout_s + _calls.AFTER_WAIT_S
                waited = await self._send(_calls.write_status(after, read_timeout_s))
            page = await self._send(_calls.listing(key, 1, None))
            return _calls.shadowed_counter(key, page, waited)
        return await self._send(_calls.counter(key, after, self.timeout_s))

    async def history(
        self,
        key: str,
        *,
        start: datetime | int | None = None,
        end: datetime | int | None = None,
        step: str | timedelta | None = None,
    ) -> History:
        """Sums per step (`"1m"`, or a timedelta) over [start, end) (aware datetimes or epoch
        milliseconds); the ingress's defaults: the last hour, per minute."""
        return await self._send(_calls.history(key, start, end, step))

    async def list(
        self, prefix: str = "", *, limit: int | None = None, cursor: str | None = None
    ) -> Page:
        """One page of counters whose key starts with `prefix`, in byte order of the keys."""
        return await self._send(_calls.listing(prefix, limit, cursor))

    async def iter_counters(
        self, prefix: str = "", *, page_size: int | None = None
    ) -> AsyncIterator[Entry]:
        """Every counter whose key starts with `prefix`, page after page."""
        cursor: str | None = None
        while True:
            page = await self.list(prefix, limit=page_size, cursor=cursor)
            for entry in page.counters:
                yield entry
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def top(self, window: str | timedelta | None = None, *, limit: int | None = None) -> Top:
        """The counters with the largest sums over the last `window` (the ingress's default,
        5m), largest first."""
        return await self._send(_calls.top(window, limit))

    # --------------------------------------------------------------------------------------

    async def _send(self, call: Call[T]) -> T:
        url = self.base_url + call.path
        backoff = self.retry.backoff()
        attempt = 0
        while True:
            attempt += 1
            try:
                with mapped(call.method, url):
                    response = await self._http.request(
                        call.method,
                        url,
                        params=call.params,
                        json=call.json,
                        headers={**(self._headers or {}), **call.headers},
                        timeout=call.timeout(self.timeout_s),
                    )
                return call.answer(response)
            except ClientError as exc:
                delay_s = self.retry.delay_s(
                    exc, idempotent=call.idempotent, attempt=attempt, backoff=backoff
                )
                if delay_s is None:
                    raise
            await _sleep(delay_s)
