"""The pure parts of the ingress's guards: the canned answers and the open-files limit."""

from __future__ import annotations

import resource

import orjson
import pytest

from distcount_config import ConfigError
from distcount_ingress import _serve
from distcount_ingress._protocol import (
    REQUEST_TIMEOUT,
    TOO_MANY_CONNECTIONS,
    GuardedProtocol,
    guarded_protocol,
)


@pytest.mark.parametrize(
    ("answer", "status"),
    [(REQUEST_TIMEOUT, b"408 Request Timeout"), (TOO_MANY_CONNECTIONS, b"503 Service Unavailable")],
)
def test_a_canned_answer_is_whole_http_that_closes(answer: bytes, status: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    assert status_line == b"HTTP/1.1 " + status
    headers = dict(line.split(b": ", 1) for line in lines)
    assert headers[b"connection"] == b"close"
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body)
    assert set(orjson.loads(body)) == {"errors"}


def test_each_guarded_protocol_class_carries_its_own_bounds() -> None:
    one = guarded_protocol(1.5, 2.5, 7)
    other = guarded_protocol(10, 30, 2048)
    assert issubclass(one, GuardedProtocol)
    assert (one.header_timeout_s, one.body_timeout_s, one.max_connections) == (1.5, 2.5, 7)
    assert other.max_connections == 2048


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """RLIMIT_NOFILE as (soft, hard), first the one getrlimit reports, then each one set."""
    state = [(1024, 4096)]
    monkeypatch.setattr(resource, "getrlimit", lambda _: state[-1])
    monkeypatch.setattr(resource, "setrlimit", lambda _, value: state.append(value))
    return state


def test_the_soft_open_files_limit_is_raised_to_what_the_cap_needs(
    limits: list[tuple[int, int]],
) -> None:
    _serve.allow_open_files(2304)
    assert limits[-1] == (2304, 4096)


def test_a_soft_limit_high_enough_is_left_alone(limits: list[tuple[int, int]]) -> None:
    _serve.allow_open_files(1000)
    assert limits == [(1024, 4096)]


def test_a_hard_limit_too_low_is_a_startup_error_naming_the_setting(
    limits: list[tuple[int, int]],
) -> None:
    with pytest.raises(ConfigError, match=r"DISTCOUNT_HTTP_MAX_CONNECTIONS=.*at most 4096"):
        _serve.allow_open_files(5000)
    assert limits == [(1024, 4096)]
