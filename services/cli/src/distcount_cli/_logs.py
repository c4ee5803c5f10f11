"""How a distcount process writes its log: one record per line on standard error, as readable
text (the default) or as one JSON object (DISTCOUNT_LOG_FORMAT=json), with the same fields.

The fields: `time` (ISO 8601, UTC, milliseconds), `level`, `logger`, `message`, `service`
(ingress, aggregator or cli), `pid`, those of `CONTEXT_FIELDS` a log call passes with `extra=`,
and `exception` (the traceback) when the record carries one. Other `extra=` names are left out,
so that what an operator filters on stays a fixed set.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Final

import orjson

from distcount_config import given_secrets

CONTEXT_FIELDS: Final = ("topic", "partition", "offset", "group", "key", "reason", "error")
# the integers orjson writes (a signed 64-bit low end, an unsigned 64-bit high end); past them a
# value is written as its text
ORJSON_INT_MIN: Final = -(2**63)
ORJSON_INT_MAX: Final = 2**64 - 1


@dataclass(frozen=True)
class Entry:
    """One log record as an operator reads it, whatever the format."""

    time: str
    level: str
    logger: str
    message: str
    service: str
    pid: int
    context: dict[str, object] = field(default_factory=dict)
    exception: str | None = None

    def as_dict(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "time": self.time,
            "level": self.level,
            "logger": self.logger,
            "message": self.message,
            "service": self.service,
            "pid": self.pid,
            **self.context,
        }
        if self.exception is not None:
            fields["exception"] = self.exception
        return fields


class _Formatter(logging.Formatter):
    def __init__(self, service: str, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self.service = service
        # longest first: a secret that holds another is hidden whole
        self.secrets = sorted(secrets, key=len, reverse=True)

    def hide(self, text: str) -> str:
        """`text` with every secret of the settings in it replaced by ***: a driver may put
        a password in a message (a URL it could not reach, a rejected login) that no code of
        distcount wrote, so the last place every line passes is where it is hidden."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def entry(self, record: logging.LogRecord) -> Entry:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        context = {
            name: self.hide(value) if isinstance(value, str) else value
            for name in CONTEXT_FIELDS
            if (value := record.__dict__.get(name)) is not None
        }
        trace = [self.formatException(record.exc_info)] if record.exc_info else []
        if record.stack_info:
            trace.append(self.formatStack(record.stack_info))
        return Entry(
            time=stamp.replace("+00:00", "Z"),
            level=record.levelname.lower(),
            logger=record.name,
            message=self.hide(_message(record)),
            service=self.service,
            pid=record.process if record.process is not None else os.getpid(),
            context=context,
            exception=self.hide("\n".join(trace)) or None,
        )


class JsonFormatter(_Formatter):
    """One JSON object per record, on one line (a newline in a value is escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = self.entry(record).as_dict()
        try:
            # values orjson cannot write natively (a Path, an exception) are written as str()
            return orjson.dumps(fields, default=str).decode()
        except TypeError:
            # an integer beyond 64 bits, a string holding a lone surrogate: written as text
            # rather than lost, and rather than a logging error on standard error
            return orjson.dumps({name: _plain(value) for name, value in fields.items()}).decode()


class TextFormatter(_Formatter):
    """`time LEVEL service[pid] logger: message name=value…`, then the traceback, if any."""

    def format(self, record: logging.LogRecord) -> str:
        e = self.entry(record)
        line = f"{e.time} {e.level.upper()} {e.service}[{e.pid}] {e.logger}: {e.message}"
        line += "".join(f" {name}={_text(value)}" for name, value in e.context.items())
        return line if e.exception is None else f"{line}\n{e.exception}"


def configure(service: str, log_format: str, secrets: Sequence[str] | None = None) -> None:
    """Every record of the process to standard error, in `log_format` (text or json), with
    `secrets` hidden (by default those the environment's settings hold); so is an exception
    nothing caught, which would otherwise print a bare traceback."""
    global _hide  # noqa: PLW0603  # one process, one log: configured once, at its start
    kind = JsonFormatter if log_format == "json" else TextFormatter
    formatter = kind(service, given_secrets() if secrets is None else secrets)
    _hide = formatter.hide
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    logging.getLogger().handlers[:] = [handler]
    sys.excepthook = _log_uncaught


def hide(text: str) -> str:
    """`text` with the secrets given to `configure` hidden, for what a command prints itself."""
    return _hide(text)


def _nothing_hidden(text: str) -> str:
    return text


_hide: Callable[[str], str] = _nothing_hidden


def _log_uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    logging.getLogger("distcount").critical(
        "stopped by an unexpected %s: %s", kind.__name__, value, exc_info=(kind, value, traceback)
    )


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a log call whose arguments do not fit its format: keep what it said
        return f"{record.msg} (arguments that do not fit: {record.args!r})"


def _plain(value: object) -> object:
    """`value` as orjson writes it in any case: small numbers as they are, the rest as text."""
    if isinstance(value, float | bool) or value is None:
        return value
    if isinstance(value, int) and ORJSON_INT_MIN <= value <= ORJSON_INT_MAX:
        return value
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _text(value: object) -> str:
    """A context value in a text line: quoted when it holds blanks, quotes or `=`."""
    text = str(value)
    if text and not any(c.isspace() or c in "\"'=" for c in text):
        return text
    return orjson.dumps(_plain(text)).decode()
