"""distcount_client's pure rules, without a transport: which failures are sent again and after
how long, Retry-After, the table of httpx's errors, and the exception tree."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import formatdate

import httpx
import pytest

from distcount_client import (
    ClientError,
    InvalidInput,
    NotCountedYet,
    NotFound,
    Retry,
    TransportError,
    Unavailable,
    UnexpectedAnswer,
)
from distcount_client._exceptions import mapped, retry_after
from distcount_core import Backoff, DistcountError

CONNECTION_LOST = TransportError("lost", retriable=True, request_sent=True)
NEVER_CONNECTED = TransportError("refused", retriable=True, request_sent=False)
TIMED_OUT = TransportError("slow", retriable=False, request_sent=True)
BAD_URL = TransportError("no scheme", retriable=False, request_sent=False)


def _delay(error: ClientError, *, idempotent: bool, attempt: int = 1) -> float | None:
    backoff = Backoff(0.1, 2.0, jitter=0.0)
    return Retry().delay_s(error, idempotent=idempotent, attempt=attempt, backoff=backoff)


@pytest.mark.parametrize(
    ("error", "read", "write"),
    [
        (CONNECTION_LOST, 0.1, None),
        (NEVER_CONNECTED, 0.1, 0.1),
        (TIMED_OUT, None, None),
        (BAD_URL, None, None),
        (Unavailable("busy", retry_after_s=1.0), 1.0, None),
        (Unavailable("busy", retry_after_s=0.0), 0.1, None),
        (Unavailable("busy", retry_after_s=None), None, None),
        (Unavailable("busy", retry_after_s=11.0), None, None),
        (NotFound("c1"), None, None),
        (InvalidInput("no", {"key": ["no"]}, status_code=422), None, None),
        (UnexpectedAnswer("500", status_code=500), None, None),
    ],
)
def test_what_is_sent_again_and_after_how_long(
    error: ClientError, read: float | None, write: float | None
) -> None:
    assert _delay(error, idempotent=True) == read
    assert _delay(error, idempotent=False) == write


def test_nothing_is_sent_again_past_the_attempts() -> None:
    assert _delay(CONNECTION_LOST, idempotent=True, attempt=2) == 0.1
    assert _delay(CONNECTION_LOST, idempotent=True, attempt=3) is None


def test_a_retry_that_cannot_be_is_refused() -> None:
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)
    with pytest.raises(ValueError, match="first_s"):
        Retry(first_s=3.0, max_s=1.0)


def test_each_request_gets_a_schedule_of_its_own() -> None:
    retry = Retry()
    first, second = retry.backoff(), retry.backoff()
    first.next_s()
    assert (first.attempts, second.attempts) == (1, 0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("3", 3.0), ("0", 0.0), (" 12 ", 12.0), ("soon", None), ("-1", None)],
)
def test_retry_after_in_seconds(header: str | None, expected: float | None) -> None:
    assert retry_after(header) == expected


def test_retry_after_as_an_http_date() -> None:
    in_ten_s = retry_after(formatdate(time.time() + 10, usegmt=True))
    assert in_ten_s is not None
    assert 8 < in_ten_s <= 10
    assert retry_after(formatdate(time.time() - 100, usegmt=True)) == 0.0
    assert retry_after("Mon, 30 Nov 2026 12:00:00 -0000") is not None


@pytest.mark.parametrize(
    ("failure", "says", "retriable", "sent"),
    [
        (httpx.ConnectError("refused"), "cannot connect to", True, False),
        (httpx.ConnectTimeout("slow"), "no connection in time to", True, False),
        (httpx.PoolTimeout("busy"), "no free connection in time to", True, False),
        (httpx.UnsupportedProtocol("ftp"), "cannot send to", False, False),
        (httpx.ReadTimeout("slow"), "no answer in time from", False, True),
        (httpx.WriteTimeout("slow"), "no answer in time from", False, True),
        (httpx.RemoteProtocolError("closed"), "the connection broke off with", True, True),
        (httpx.ReadError("reset"), "the connection failed with", True, True),
        (httpx.ProxyError("proxy"), "cannot talk to", False, True),
        (httpx.DecodingError("gzip"), "cannot talk to", False, True),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_every_httpx_error_is_the_clients_own(
    failure: httpx.HTTPError, says: str, retriable: bool, sent: bool
) -> None:
    with pytest.raises(TransportError) as caught, mapped("GET", "http://x/counters/c1"):
        raise failure
    assert str(caught.value).startswith(f"{says} the ingress: GET http://x/counters/c1: ")
    assert (caught.value.retriable, caught.value.request_sent) == (retriable, sent)
    assert caught.value.__cause__ is failure
    assert caught.value.status_code is None


def test_a_url_httpx_cannot_parse_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="url"), mapped("GET", "http://[x"):
        raise httpx.InvalidURL("bad")


def test_the_tree_hangs_from_distcount_error() -> None:
    for cls in (TransportError, InvalidInput, NotFound, Unavailable, NotCountedYet):
        assert issubclass(cls, ClientError)
    assert issubclass(ClientError, DistcountError)


def test_not_counted_yet_says_how_far_the_totals_got() -> None:
    error = NotCountedYet("t", 2.5, datetime(2026, 11, 30, 12, tzinfo=UTC))
    assert str(error) == (
        "the write was not counted within 2.5 s "
        "(the totals hold what was accepted before 2026-11-30T12:00:00Z)"
    )
    assert str(NotCountedYet("t", 30)) == "the write was not counted within 30 s"
