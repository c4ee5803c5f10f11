"""Each operation of the HTTP contract as a `Call`: the request, how its answer is read, and
whether it may be sent twice. `Client` and `AsyncClient` only send calls, so everything here is
the same for both, and is tested without a network.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Generic, TypeVar

import httpx

from distcount_client import _wire
from distcount_client._exceptions import NotFound, UnexpectedAnswer, error_for, refused
from distcount_client._models import Counted, Counter, History, Page, Top, Written
from distcount_client._wire import JSONObject, Malformed, segment

# RFC 6750's b64token, as the ingress reads it
_BEARER_TOKEN: Final = re.compile(r"[A-Za-z0-9._~+/-]+=*")
# what the ingress takes as an Idempotency-Key: visible ASCII, no space, 255 at most
_IDEMPOTENCY_KEY: Final = re.compile(r"[!-~]{1,255}")
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"

T = TypeVar("T")

# How much longer than its timeout a read that waits for a write (`after=`) is given: the
# ingress holds it up to DISTCOUNT_READ_AFTER_TIMEOUT_MS (10 s by default), then answers 202.
AFTER_WAIT_S: Final = 30.0


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str  # below the base URL, its segments escaped
    read: Callable[[JSONObject], T]  # the `data` of a 2xx answer, as the result
    params: dict[str, str] = field(default_factory=dict)
    json: object = None
    key: str | None = None  # the counter the request names: a 404 is then NotFound
    # how long the answer may take when the ingress holds it on purpose; None: the timeout
    read_timeout_s: float | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def idempotent(self) -> bool:
        """Whether sending it twice does what sending it once does: reads, and writes that carry
        an Idempotency-Key (the ingress counts one of them once, however often it arrives)."""
        return self.method == "GET" or IDEMPOTENCY_HEADER in self.headers

    def timeout(self, timeout_s: float) -> httpx.Timeout:
        return httpx.Timeout(
            timeout_s, read=timeout_s if self.read_timeout_s is None else self.read_timeout_s
        )

    def answer(self, response: httpx.Response) -> T:
        """The result the answer carries, or the client's exception for it."""
        if not response.is_success:
            raise error_for(response, self.key)
        try:
            return self.read(_wire.data(response.json()))
        except ValueError as exc:  # not JSON, not UTF-8, or Malformed
            what = exc if isinstance(exc, Malformed) else "not JSON"
            raise UnexpectedAnswer(
                f"the ingress answered {self.method} {response.request.url} "
                f"({response.status_code}) with a body this client cannot read: {what}",
                status_code=response.status_code,
            ) from None


def authorization(token: str | None) -> dict[str, str] | None:
    """The header that carries a bearer token; refused here if it could not be sent as one."""
    if token is None:
        return None
    if not token or not _BEARER_TOKEN.fullmatch(token):
        # the token itself stays out of the message: it is a secret
        raise refused("token", "must be a bearer token: letters, digits and -._~+/ (then =)")
    return {"Authorization": f"Bearer {token}"}


def shadowed(key: str) -> bool:
    """Whether another route answers `GET /counters/{key}`: `/counters/top` (the busiest
    counters) or, for a key ending in "/history", the history of the key before it (the ingress
    decodes %2F before routing). Such a counter is read through the listing."""
    return key == "top" or key.endswith("/history")


def counter(key: str, after: str | None, timeout_s: float) -> Call[Counter]:
    if after is None:
        return Call("GET", f"/counters/{segment(key)}", _wire.counter, key=key)
    return Call(
        "GET",
        f"/counters/{segment(key)}",
        _wire.counter,
        {"after": after},
        key=key,
        read_timeout_s=timeout_s + AFTER_WAIT_S,
    )


def idempotency_key(given: str | None) -> str:
    """The write's Idempotency-Key: `given`, checked, or a fresh random UUID."""
    if given is None:
        return str(uuid.uuid4())
    if not isinstance(given, str) or not _IDEMPOTENCY_KEY.fullmatch(given):
        raise refused("idempotency_key", "must be 1 to 255 visible ASCII characters (no spaces)")
    return given


def increment(key: str, value: int, ident: str) -> Call[Written]:
    return Call(
        "POST",
        "/increment",
        _wire.written,
        json={"key": key, "value": value},
        headers={IDEMPOTENCY_HEADER: ident},
    )


def increments(pairs: Mapping[str, int] | Iterable[tuple[str, int]], ident: str) -> Call[Written]:
    return Call(
        "POST",
        "/increments",
        _wire.written,
        json={"increments": _wire.increments(pairs)},
        headers={IDEMPOTENCY_HEADER: ident},
    )


def token_of(write: str | Written) -> str:
    if isinstance(write, str):
        return write
    if write.token is None:
        raise refused("token", "the ingress gave this write none: it is older than tokens")
    return write.token


def write_status(token: str, read_timeout_s: float) -> Call[tuple[Counted, bool]]:
    return Call(
        "GET", f"/writes/{segment(token)}", _wire.write_status, read_timeout_s=read_timeout_s
    )


def history(
    key: str,
    start: datetime | int | None,
    end: datetime | int | None,
    step: str | timedelta | None,
) -> Call[History]:
    params = {}
    if start is not None:
        params["from"] = _wire.time_param("from", start)
    if end is not None:
        params["to"] = _wire.time_param("to", end)
    if step is not None:
        params["step"] = _wire.duration_param("step", step)
    return Call("GET", f"/counters/{segment(key)}/history", _wire.history, params, key=key)


def listing(prefix: str, limit: int | None, cursor: str | None) -> Call[Page]:
    params = {"prefix": prefix} if prefix else {}
    if limit is not None:
        params["limit"] = str(limit)
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/counters", _wire.page, params)


def top(window: str | timedelta | None, limit: int | None) -> Call[Top]:
    params = {}
    if window is not None:
        params["window"] = _wire.duration_param("window", window)
    if limit is not None:
        params["limit"] = str(limit)
    return Call("GET", "/counters/top", _wire.top, params)


def shadowed_counter(key: str, page: Page, waited: tuple[Counted, bool] | None) -> Counter:
    """A `shadowed` counter, from the listing's first page at its key (and, if the read
    waited for a write, that wait's answer). The listing says no `as_of`."""
    complete = waited is None or waited[1]
    as_of = waited[0].as_of if waited is not None else None
    found = [entry for entry in page.counters if entry.key == key]
    if found:
        return Counter(key, found[0].value, as_of, complete)
    if complete:
        raise NotFound(key)
    return Counter(key, 0, as_of, complete=False)  # as the ingress answers an unknown key
