"""Query parameters of the read side, parsed and checked: durations, times, limits, prefixes.

Each parser raises `BadParameter` naming the parameter, which the routes answer with a 422.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Final

from distcount_codec import key_errors

_DURATION: Final = re.compile(r"([1-9][0-9]{0,11})(ms|s|m|h|d)")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# what PostgreSQL's timestamptz and Python's datetime both hold
_MIN_MS: Final = 0
MAX_TIME_MS: Final = 253_402_300_799_999
_NAIVE_EPOCH: Final = datetime(1970, 1, 1)  # its times are UTC, said by the Z


class BadParameter(ValueError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def duration_ms(name: str, text: str | None, default_ms: int) -> int:
    """`<n><unit>` (ms, s, m, h, d), such as 500ms, 1m, 1h, 7d."""
    if text is None:
        return default_ms
    match = _DURATION.fullmatch(text)
    if match is None:
        raise BadParameter(
            name, "must be a duration such as 30s, 1m, 1h or 1d (units ms, s, m, h, d)"
        )
    return int(match[1]) * _UNIT_MS[match[2]]


def format_duration(ms: int) -> str:
    for unit in ("d", "h", "m", "s"):
        if ms % _UNIT_MS[unit] == 0:
            return f"{ms // _UNIT_MS[unit]}{unit}"
    return f"{ms}ms"


def time_ms(name: str, text: str | None, default_ms: int) -> int:
    """ISO 8601 with a time zone (`2026-11-30T12:00:00Z`, `…+01:00`) or epoch milliseconds."""
    if text is None:
        return default_ms
    # isascii: str.isdigit also takes other scripts' digits and superscripts, which int refuses
    if text.isascii() and (text.isdigit() or (text.startswith("-") and text[1:].isdigit())):
        ms = int(text) if len(text) <= 16 else MAX_TIME_MS + 1
    else:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise BadParameter(
                name,
                "must be an ISO 8601 time with a zone, such as 2026-11-30T12:00:00Z, "
                "or epoch milliseconds",
            ) from None
        if when.tzinfo is None:
            raise BadParameter(name, "must say its time zone (Z or +hh:mm)")
        ms = int(when.timestamp() * 1000)
    if not _MIN_MS <= ms <= MAX_TIME_MS:
        raise BadParameter(name, "must be between 1970 and the year 9999")
    return ms


def iso(ms: int) -> str:
    """`2026-11-30T12:00:00.000Z`."""
    # exact (no float on the way) and quick: a history answer formats up to 10,000 of these
    return (_NAIVE_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds") + "Z"


def iso_time(when: datetime | None) -> str | None:
    return None if when is None else iso(int(when.timestamp() * 1000))


def limit(name: str, text: str | None, default: int, maximum: int) -> int:
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text[:7]) <= maximum:
        raise BadParameter(name, f"must be an integer from 1 to {maximum}")
    return int(text)


def prefix(text: str | None) -> str:
    """A key prefix: like a key, but it may be empty."""
    if not text:
        return ""
    problems = key_errors(text)
    if problems:
        raise BadParameter("prefix", problems[0])
    return text
