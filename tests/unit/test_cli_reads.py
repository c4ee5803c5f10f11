"""`distcount get`, `history` and `top` through distcount_client, against httpx.MockTransport:
what a person reads, what `--json` prints, and the exit status of each failure."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest

import distcount_client
from distcount_cli import _logs, _main, _reads
from distcount_client import AsyncClient, Entry, History, Point, Top

URL = "http://ingress.test:3333"
AS_OF = "2026-11-30T12:00:05.123Z"
AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

Handler = Callable[[httpx.Request], httpx.Response]


def _at(minute: int, second: int = 0) -> datetime:
    return AT.replace(minute=minute, second=second)


class Ingress:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.handler: Handler = lambda request: httpx.Response(500)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


@pytest.fixture
def ingress(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ingress]:
    """The ingress the commands reach, and a process environment of defaults but its URL."""
    fake = Ingress()
    transport = httpx.MockTransport(fake)

    def client(base_url: str, token: str | None = None) -> AsyncClient:
        assert base_url == URL
        return AsyncClient(base_url, token=token, http=httpx.AsyncClient(transport=transport))

    # the commands import the client as they run (see _reads._ingress): patched where they find it
    monkeypatch.setattr(distcount_client, "AsyncClient", client)
    for name in [name for name in os.environ if name.startswith("DISTCOUNT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DISTCOUNT_INGRESS_URL", URL)
    # main() sets the process's logging up; the test runner owns it here
    monkeypatch.setattr(_logs, "configure", lambda service, log_format: None)
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)
    monkeypatch.setattr(logging, "captureWarnings", lambda capture: None)
    loggers = [logging.getLogger(name) for name in ("aiokafka", "distcount")]
    levels = [logger.level for logger in loggers]
    yield fake
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def _run(*argv: str) -> int:
    with pytest.raises(SystemExit) as exited:
        _main.main(list(argv))
    code = exited.value.code
    assert isinstance(code, int)
    return code


def _data(status: int, payload: object, **headers: str) -> Handler:
    return lambda request: httpx.Response(status, json={"data": payload}, headers=headers)


def _errors(status: int, errors: dict[str, list[str]], **headers: str) -> Handler:
    return lambda request: httpx.Response(status, json={"errors": errors}, headers=headers)


# -- get -----------------------------------------------------------------------------------------


def test_get_prints_the_total(ingress: Ingress, capsys: pytest.CaptureFixture[str]) -> None:
    ingress.handler = _data(200, {"key": "c1", "value": 42, "as_of": AS_OF})
    assert _run("get", "c1") == 0
    assert capsys.readouterr().out == "42\n"
    assert str(ingress.requests[0].url) == f"{URL}/counters/c1"


def test_get_json(ingress: Ingress, capsys: pytest.CaptureFixture[str]) -> None:
    ingress.handler = _data(200, {"key": "c1", "value": 10**20, "as_of": None})
    assert _run("get", "c1", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"key": "c1", "value": 10**20, "as_of": None}


def test_get_of_a_counter_never_flushed(
    ingress: Ingress, capsys: pytest.CaptureFixture[str]
) -> None:
    ingress.handler = _errors(404, {"key": ["not found"]})
    assert _run("get", "nope") == 1
    assert capsys.readouterr().err == (
        "distcount: error: no counter 'nope' (increments show after a flush)\n"
    )


def test_the_token_is_sent_as_a_bearer_token(
    ingress: Ingress, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTCOUNT_TOKEN", "t0ken-of_a.reader")
    ingress.handler = _data(200, {"key": "c1", "value": 1, "as_of": AS_OF})
    assert _run("get", "c1") == 0
    assert ingress.requests[0].headers["authorization"] == "Bearer t0ken-of_a.reader"


def test_without_a_token_none_is_sent(ingress: Ingress) -> None:
    ingress.handler = _data(200, {"key": "c1", "value": 1, "as_of": AS_OF})
    assert _run("get", "c1") == 0
    assert "authorization" not in ingress.requests[0].headers


@pytest.mark.parametrize(
    ("token", "status", "hint"),
    [
        (None, 401, "the ingress asks for a token: set DISTCOUNT_TOKEN"),
        ("wrong-token", 403, "is DISTCOUNT_TOKEN a token of the read scope?"),
    ],
)
def test_a_refused_token_exits_1_saying_what_to_set(  # noqa: PLR0917  # fixtures and cases
    ingress: Ingress,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    token: str | None,
    status: int,
    hint: str,
) -> None:
    if token is not None:
        monkeypatch.setenv("DISTCOUNT_TOKEN", token)
    ingress.handler = _errors(status, {"authorization": ["no"]})
    assert _run("top") == 1
    err = capsys.readouterr().err
    assert hint in err
    assert err.count("\n") == 1
    if token is not None:
        assert token not in err


def test_a_refused_argument_exits_2(ingress: Ingress, capsys: pytest.CaptureFixture[str]) -> None:
    ingress.handler = _errors(422, {"key": ["must be at most 256 bytes"]})
    assert _run("get", "k" * 300) == 2
    err = capsys.readouterr().err
    assert err.startswith("distcount: error: the ingress refused GET ")
    assert err.endswith("(422): key: must be at most 256 bytes\n")
    assert err.count("\n") == 1


def test_no_ingress_exits_1_with_one_line_that_says_what_to_do(
    ingress: Ingress, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    monkeypatch.setattr("distcount_client._async._sleep", _no_sleep)
    ingress.handler = refused
    assert _run("top") == 1
    err = capsys.readouterr().err
    assert err.startswith("distcount: error: cannot connect to the ingress: GET ")
    assert "DISTCOUNT_INGRESS_URL names another" in err
    assert err.count("\n") == 1


async def _no_sleep(seconds: float) -> None:
    pass


def test_an_unavailable_ingress_exits_1(
    ingress: Ingress, capsys: pytest.CaptureFixture[str]
) -> None:
    ingress.handler = _errors(503, {"postgres": ["cannot connect"]})
    assert _run("history", "c1") == 1
    assert capsys.readouterr().err == (
        "distcount: error: the ingress is unavailable (503): postgres: cannot connect\n"
    )


# -- history -------------------------------------------------------------------------------------


def _history_answer(values: list[int]) -> Handler:
    return _data(
        200,
        {
            "key": "c1",
            "from": "2026-11-30T12:00:00.000Z",
            "to": f"2026-11-30T12:{len(values):02d}:00.000Z",
            "step_ms": 60000,
            "points": [
                {"start": f"2026-11-30T12:{i:02d}:00.000Z", "value": v}
                for i, v in enumerate(values)
            ],
            "as_of": AS_OF,
        },
    )


def test_history_prints_aligned_rows_with_bars(
    ingress: Ingress, capsys: pytest.CaptureFixture[str]
) -> None:
    ingress.handler = _history_answer([40, 0, 1000, -500])
    assert _run("history", "c1", "--from", "2026-11-30T12:00:00Z", "--to", "1796040240000") == 0
    assert capsys.readouterr().out.splitlines() == [
        "c1: per 1m from 2026-11-30 12:00:00Z to 2026-11-30 12:04:00Z, "
        "as of 2026-11-30 12:00:05.123Z",
        "2026-11-30 12:00:00Z    40  " + "█" * 2,
        "2026-11-30 12:01:00Z     0",
        "2026-11-30 12:02:00Z  1000  " + "█" * 40,
        "2026-11-30 12:03:00Z  -500  " + "░" * 20,
    ]
    assert dict(ingress.requests[0].url.params) == {"from": "1796040000000", "to": "1796040240000"}


def test_history_passes_its_step(ingress: Ingress) -> None:
    ingress.handler = _history_answer([1])
    assert _run("history", "c1", "--step", "1h") == 0
    assert dict(ingress.requests[0].url.params) == {"step": "1h"}


def test_history_json_is_the_apis_shape(
    ingress: Ingress, capsys: pytest.CaptureFixture[str]
) -> None:
    ingress.handler = _history_answer([3, 0])
    assert _run("history", "c1", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "key": "c1",
        "from": "2026-11-30T12:00:00.000Z",
        "to": "2026-11-30T12:02:00.000Z",
        "step_ms": 60000,
        "points": [
            {"start": "2026-11-30T12:00:00.000Z", "value": 3},
            {"start": "2026-11-30T12:01:00.000Z", "value": 0},
        ],
        "as_of": AS_OF,
    }


@pytest.mark.parametrize("moment", ["yesterday", "2026-11-30T12:00:00", "12:00"])
def test_history_refuses_a_time_it_cannot_read(
    ingress: Ingress, capsys: pytest.CaptureFixture[str], moment: str
) -> None:
    assert _run("history", "c1", "--from", moment) == 2
    assert "argument --from:" in capsys.readouterr().err
    assert ingress.requests == []


def test_history_lines_of_steps_under_a_second_show_milliseconds() -> None:
    found = History(
        "k", AT, AT.replace(microsecond=500_000), 250, [Point(AT, 0), Point(AT, 0)], None
    )
    assert _reads.history_lines(found) == [
        "k: per 250ms from 2026-11-30 12:00:00.000Z to 2026-11-30 12:00:00.500Z, "
        "no as-of time yet (not every partition has been flushed once)",
        "2026-11-30 12:00:00.000Z  0",
        "2026-11-30 12:00:00.000Z  0",
    ]


@pytest.mark.parametrize(
    ("value", "peak", "expected"),
    [(0, 0, ""), (0, 10, ""), (10, 10, "█" * 40), (1, 1000, "█"), (-5, 10, "░" * 20)],
)
def test_bars_are_as_long_as_the_value_against_the_largest(
    value: int, peak: int, expected: str
) -> None:
    assert _reads.bar(value, peak) == expected


# -- top -----------------------------------------------------------------------------------------


def test_top_prints_a_table(ingress: Ingress, capsys: pytest.CaptureFixture[str]) -> None:
    counters = [{"key": "page/home", "value": 1200}, {"key": "c1", "value": 7}]
    ingress.handler = _data(200, {"window_ms": 3600000, "counters": counters, "as_of": AS_OF})
    assert _run("top", "--window", "1h", "--limit", "2") == 0
    assert capsys.readouterr().out.splitlines() == [
        "the busiest counters of the last 1h, as of 2026-11-30 12:00:05.123Z",
        "#  KEY         SUM",
        "1  page/home  1200",
        "2  c1            7",
    ]
    assert dict(ingress.requests[0].url.params) == {"window": "1h", "limit": "2"}


def test_top_of_a_quiet_window(ingress: Ingress, capsys: pytest.CaptureFixture[str]) -> None:
    ingress.handler = _data(200, {"window_ms": 300000, "counters": [], "as_of": AS_OF})
    assert _run("top") == 0
    assert capsys.readouterr().out == (
        "no counter was incremented in the last 5m, as of 2026-11-30 12:00:05.123Z\n"
    )
    assert dict(ingress.requests[0].url.params) == {}


def test_top_json(ingress: Ingress, capsys: pytest.CaptureFixture[str]) -> None:
    body = {"window_ms": 300000, "counters": [{"key": "a", "value": 2}], "as_of": None}
    ingress.handler = _data(200, body)
    assert _run("top", "--json") == 0
    assert json.loads(capsys.readouterr().out) == body


def test_top_refusals_exit_2(ingress: Ingress, capsys: pytest.CaptureFixture[str]) -> None:
    ingress.handler = _errors(422, {"limit": ["must be an integer from 1 to 100"]})
    assert _run("top", "--limit", "500") == 2
    assert "limit: must be an integer from 1 to 100" in capsys.readouterr().err


def test_top_lines_widen_to_the_longest_key_and_rank() -> None:
    entries = [Entry(f"k{i}", 100 - i) for i in range(10)]
    lines = _reads.top_lines(Top(90_000, entries, None))
    assert lines[0].startswith("the busiest counters of the last 90s, no as-of time yet")
    assert lines[1] == " #  KEY  SUM"
    assert lines[2] == " 1  k0   100"
    assert lines[-1] == "10  k9    91"


# -- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1796040000000", 1796040000000),
        ("0", 0),
        ("2026-11-30T12:00:00Z", AT),
        ("2026-11-30T13:00:00+01:00", AT),
    ],
)
def test_moments_are_iso_times_with_a_zone_or_epoch_ms(text: str, expected: datetime | int) -> None:
    assert _reads.moment(text) == expected


def test_a_moment_without_a_zone_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="time zone"):
        _reads.moment("2026-11-30T12:00:00")


@pytest.mark.parametrize(
    ("ms", "text"),
    [(1, "1ms"), (1500, "1500ms"), (60_000, "1m"), (90_000, "90s"), (86_400_000, "1d")],
)
def test_durations_read_in_their_largest_whole_unit(ms: int, text: str) -> None:
    assert _reads.duration(ms) == text


def test_the_times_are_shown_in_utc() -> None:
    paris = datetime.fromisoformat("2026-11-30T13:00:00+01:00")
    found = History("k", paris, _at(1), 60_000, [Point(paris, 1)], _at(0, 5))
    assert _reads.history_lines(found)[1] == "2026-11-30 12:00:00Z  1  " + "█" * 40
