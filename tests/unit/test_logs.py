"""The log formats of `distcount_cli._logs`: one JSON object per line, or text with the same
fields; whatever a log call passes, a record is never lost and never spills a second line of
JSON."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from distcount_cli._logs import CONTEXT_FIELDS, JsonFormatter, TextFormatter, configure

CONTEXT = {
    "topic": "distcount.increments",
    "partition": 3,
    "offset": 1200,
    "group": "distcount-aggregator",
    "key": "c 1",
    "reason": 'breaks the record contract: key: "must not be repeated"',
    "error": "ConnectionRefusedError: [Errno 111]",
}


def _record(
    msg: str = "flushed %d rows",
    args: tuple[object, ...] = (42,),
    level: int = logging.WARNING,
    extra: dict[str, object] | None = None,
    exc: bool = False,
) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.getLogger("distcount.aggregator").makeRecord(
        "distcount.aggregator", level, __file__, 1, msg, args, exc_info, extra=extra
    )


def _json(record: logging.LogRecord) -> dict[str, object]:
    line = JsonFormatter("aggregator").format(record)
    assert "\n" not in line
    parsed = orjson.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def test_a_json_record_has_the_fields_an_operator_filters_on() -> None:
    record = _record(extra={**CONTEXT, "unlisted": "left out"})
    fields = _json(record)
    assert fields == {
        "time": fields["time"],
        "level": "warning",
        "logger": "distcount.aggregator",
        "message": "flushed 42 rows",
        "service": "aggregator",
        "pid": os.getpid(),
        **CONTEXT,
    }
    assert list(fields)[:6] == ["time", "level", "logger", "message", "service", "pid"]
    time = str(fields["time"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", time)
    when = datetime.fromisoformat(time.replace("Z", "+00:00"))
    assert when.tzinfo == UTC
    assert abs(when.timestamp() - record.created) < 0.001


def test_the_context_fields_include_those_the_services_need() -> None:
    assert set(CONTEXT) == set(CONTEXT_FIELDS)


def test_an_exception_is_a_field_on_the_same_line() -> None:
    fields = _json(_record(level=logging.ERROR, exc=True))
    exception = str(fields["exception"])
    assert exception.startswith("Traceback (most recent call last):")
    assert exception.endswith("ValueError: boom")
    assert fields["level"] == "error"


@pytest.mark.parametrize(
    ("msg", "args", "extra"),
    [
        ("two\nlines", (), {}),  # a newline in the message
        ("%d", ("not a number",), {}),  # arguments that do not fit the message
        ("lone \ud800 surrogate", (), {}),  # not encodable as UTF-8
        ("sum", (), {"key": 2**70}),  # an integer beyond 64 bits
        ("path", (), {"error": Path("/tmp/x"), "reason": ValueError("bad")}),  # not JSON types
    ],
)
def test_any_record_becomes_one_line_of_json(
    msg: str, args: tuple[object, ...], extra: dict[str, object]
) -> None:
    fields = _json(_record(msg, args, extra=extra))
    assert fields["service"] == "aggregator"
    assert str(fields["message"]).startswith(msg[:3])
    for name, value in extra.items():
        assert fields[name] == str(value)


def test_text_has_the_same_fields() -> None:
    record = _record(extra=CONTEXT, exc=True)
    fields = _json(record)
    text = TextFormatter("aggregator").format(record)
    first, *trace = text.splitlines()
    assert first == (
        f"{fields['time']} WARNING aggregator[{os.getpid()}] distcount.aggregator: "
        "flushed 42 rows topic=distcount.increments partition=3 offset=1200 "
        'group=distcount-aggregator key="c 1" '
        'reason="breaks the record contract: key: \\"must not be repeated\\"" '
        'error="ConnectionRefusedError: [Errno 111]"'
    )
    assert "\n".join(trace) == fields["exception"]


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, hook = root.handlers[:], sys.excepthook
    yield
    root.handlers[:] = handlers
    sys.excepthook = hook


@pytest.mark.usefixtures("root_logging")
def test_configure_sends_every_record_and_uncaught_exception_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("ingress", "json")
    logging.getLogger("aiokafka").warning("a library's record")
    try:
        raise RuntimeError("nobody caught this")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    lines = capsys.readouterr().err.splitlines()
    library, uncaught = (orjson.loads(line) for line in lines)
    assert (library["logger"], library["service"]) == ("aiokafka", "ingress")
    assert uncaught["level"] == "critical"
    assert "RuntimeError: nobody caught this" in uncaught["exception"]


@pytest.mark.usefixtures("root_logging")
def test_configure_writes_text_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    configure("cli", "text")
    logging.getLogger("distcount").warning("careful")
    (line,) = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"\S+Z WARNING cli\[\d+\] distcount: careful", line)
