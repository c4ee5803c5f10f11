"""Progress lines on standard output, stamped with the seconds since the script started."""

from __future__ import annotations

import datetime as dt
import time

_STARTED = time.monotonic()


def say(line: str) -> None:
    """One progress line."""
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {line}", flush=True)


def describe(exc: BaseException) -> str:
    """An error in one line, for a report: its type and the first line of its message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class Progress:
    """`label: done/total unit` at most every `every_s` seconds, so that long work (a pre-fill,
    a wait for a flush) shows it is moving without flooding the terminal."""

    def __init__(self, label: str, total: int, unit: str, every_s: float = 2.0) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.every_s = every_s
        self._next = time.monotonic() + every_s

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now >= self._next:
            say(f"  {self.label}: {done:,}/{self.total:,} {self.unit}")
            self._next = now + self.every_s


def utc_stamp() -> str:
    """The time now, as report files and private names carry it: 20250101T120000Z."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
