"""The client's exceptions, the one table that maps httpx's onto them, and what each error
status of the ingress becomes.

ClientError                  (a DistcountError) every error the client raises
 ├── TransportError          no usable answer: httpx's connection, timeout and protocol errors,
 │                           wrapped (the original is the `__cause__`)
 ├── InvalidInput            the request breaks the rules: 400, 413, 415, 422, or refused by the
 │                           client before anything was sent; `errors` maps each field to why
 ├── NotFound                404: a counter never flushed
 ├── AccessDenied            401: no token, or one the ingress does not know; 403: the token
 │                           lacks the scope (write, read) the call needs
 ├── Unavailable             503: Kafka or PostgreSQL did not answer in time; `retry_after_s`
 ├── NotCountedYet           `wait_for` reached its deadline before the write was counted
 └── UnexpectedAnswer        any other answer: a 5xx, a route the ingress does not serve (one
                             older than the read side), a body that is not as the contract says

`retriable` and `request_sent` are read by `Retry`: whether the same request may succeed if sent
again, and whether any of it may have reached the ingress (if not, even a write may be resent).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Final

import httpx

from distcount_core import DistcountError, describe


class ClientError(DistcountError):
    """Root of every error raised by distcount_client."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code  # the ingress's answer, None when there was none


class TransportError(ClientError):
    def __init__(self, message: str, *, retriable: bool, request_sent: bool) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.request_sent = request_sent


class InvalidInput(ClientError):
    def __init__(
        self,
        message: str,
        errors: Mapping[str, list[str]],
        *,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.errors = dict(errors)


class AccessDenied(ClientError):
    pass


class NotFound(ClientError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no counter {key!r}", status_code=404)
        self.key = key


class Unavailable(ClientError):
    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message, status_code=503)
        self.retry_after_s = retry_after_s  # None: the answer did not say
        # the ingress asks to be asked again: for a read, that is safe
        self.retriable = retry_after_s is not None


class NotCountedYet(ClientError):
    def __init__(self, token: str, timeout_s: float, as_of: datetime | None = None) -> None:
        counted = ""
        if as_of is not None:
            counted = f" (the totals hold what was accepted before {as_of:%Y-%m-%dT%H:%M:%S}Z)"
        super().__init__(f"the write was not counted within {timeout_s:g} s{counted}")
        self.token = token
        self.timeout_s = timeout_s
        self.as_of = as_of  # how far the totals had got when the client gave up


class UnexpectedAnswer(ClientError):
    pass


def refused(field: str, message: str) -> InvalidInput:
    """An argument the client refuses before sending anything."""
    return InvalidInput(f"{field}: {message}", {field: [message]})


# httpx's exceptions, most specific first: what each means, whether any of the request may
# have left (a connection never made sends nothing), and whether asking again may help. A read
# that timed out is not asked again: it would wait as long again.
_TRANSPORT: Final[tuple[tuple[type[httpx.HTTPError], str, bool, bool], ...]] = (
    (httpx.ConnectTimeout, "no connection in time to", False, True),
    (httpx.PoolTimeout, "no free connection in time to", False, True),
    (httpx.ConnectError, "cannot connect to", False, True),
    (httpx.UnsupportedProtocol, "cannot send to", False, False),
    (httpx.TimeoutException, "no answer in time from", True, False),
    (httpx.RemoteProtocolError, "the connection broke off with", True, True),
    (httpx.NetworkError, "the connection failed with", True, True),
    (httpx.HTTPError, "cannot talk to", True, False),
)


@contextmanager
def mapped(method: str, url: str) -> Iterator[None]:
    """Raise the client's own `TransportError` for an httpx failure of `method url`."""
    try:
        yield
    except httpx.InvalidURL as exc:
        raise refused("url", f"{url} is not a URL httpx can send to: {exc}") from exc
    except httpx.HTTPError as exc:
        for cls, what, sent, retriable in _TRANSPORT:  # pragma: no branch (HTTPError is last)
            if isinstance(exc, cls):
                raise TransportError(
                    f"{what} the ingress: {method} {url}: {describe(exc)}",
                    retriable=retriable,
                    request_sent=sent,
                ) from exc


def error_for(response: httpx.Response, key: str | None) -> ClientError:
    """The exception for an answer other than 2xx; `key`: the counter the request named."""
    status = response.status_code
    errors = errors_of(response)
    request = f"{response.request.method} {response.request.url}"
    said = "; ".join(f"{field}: {', '.join(messages)}" for field, messages in errors.items())
    if status in (400, 413, 415, 422):
        return InvalidInput(
            f"the ingress refused {request} ({status}): {said}", errors, status_code=status
        )
    if status in (401, 403):
        return AccessDenied(
            f"the ingress refused {request} ({status}): {said or 'no reason given'}"
            + (" (is the token set?)" if status == 401 else ""),
            status_code=status,
        )
    if status == 404 and "key" in errors and key is not None:
        return NotFound(key)
    if status == 503:
        retry_after_s = retry_after(response.headers.get("retry-after"))
        again = f"; retry after {retry_after_s:g} s" if retry_after_s is not None else ""
        return Unavailable(
            f"the ingress is unavailable ({status}): {said or 'no reason given'}{again}",
            retry_after_s,
        )
    if status == 404:
        return UnexpectedAnswer(
            f"the ingress does not serve {request} (404): is it older than this client?",
            status_code=status,
        )
    return UnexpectedAnswer(
        f"the ingress answered {request} with {status} {response.reason_phrase}"
        + (f": {said}" if said else ""),
        status_code=status,
    )


def errors_of(response: httpx.Response) -> dict[str, list[str]]:
    """`{"errors": {field: [messages]}}` of an error answer, or {} when it is something else."""
    try:
        body = response.json()
    except ValueError:  # not JSON (a proxy's page), or not UTF-8
        return {}
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, dict):
        return {}
    return {
        str(field): [str(m) for m in messages] if isinstance(messages, list) else [str(messages)]
        for field, messages in errors.items()
    }


def retry_after(header: str | None) -> float | None:
    """Retry-After in seconds: a number of seconds, or an HTTP date (RFC 9110); None if absent
    or unreadable."""
    if header is None:
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, of unknown origin
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())
