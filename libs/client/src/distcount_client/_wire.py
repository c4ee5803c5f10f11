"""The HTTP contract's shapes, without I/O: arguments written as path segments and query
parameters, and `{"data": ...}` bodies read into the client's values.

A body that is not as the contract says raises `Malformed` naming where; `_calls` turns it into
an `UnexpectedAnswer` naming the request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar
from urllib.parse import quote

from distcount_client._exceptions import refused
from distcount_client._models import Counted, Counter, Entry, History, Page, Point, Top, Written

T = TypeVar("T")

_UNIT_MS: Final = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000))
_ONE_MS: Final = timedelta(milliseconds=1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class Malformed(ValueError):
    """A body that breaks the contract; the message says where and what was expected."""


# -- arguments -------------------------------------------------------------------------------


def segment(text: str) -> str:
    """`text` as one path segment. "/" is escaped (the ingress decodes it before routing), and
    so are "." and "..", which a URL parser would otherwise fold away as dot-segments."""
    quoted = quote(text, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def time_param(name: str, when: datetime | int) -> str:
    """An aware datetime or epoch milliseconds, as epoch milliseconds."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise refused(name, "must say its time zone (a naive datetime is ambiguous)")
        return str((when - _EPOCH) // _ONE_MS)  # exact, where timestamp() is a float
    if isinstance(when, bool) or not isinstance(when, int):
        raise refused(name, "must be a datetime or an integer of epoch milliseconds")
    return str(when)


def duration_param(name: str, duration: str | timedelta) -> str:
    """A timedelta as the ingress's `<n><unit>`; text is sent as it is (the ingress checks it)."""
    if isinstance(duration, str):
        return duration
    ms, rest = divmod(duration, _ONE_MS)
    if rest or ms <= 0:
        raise refused(name, "must be a positive whole number of milliseconds")
    for unit, unit_ms in _UNIT_MS:
        if ms % unit_ms == 0:
            return f"{ms // unit_ms}{unit}"
    return f"{ms}ms"


def increments(pairs: Mapping[str, int] | Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    try:
        return [{"key": key, "value": value} for key, value in items]
    except (TypeError, ValueError):
        raise refused("increments", "must be a mapping or (key, value) pairs") from None


# -- bodies ----------------------------------------------------------------------------------


class JSONObject:
    """A JSON object of a body, read member by member, each checked for its type."""

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, dict):
            raise Malformed(f"{where}: expected an object")
        self._members: dict[str, object] = value
        self._where = where

    def has(self, name: str) -> bool:
        return name in self._members

    def _get(self, name: str) -> object:
        if name not in self._members:
            raise Malformed(f"{self._where}.{name}: missing")
        return self._members[name]

    def _typed(self, name: str, cls: type[T], what: str) -> T:
        value = self._get(name)
        # JSON's true and false are Python ints too
        if not isinstance(value, cls) or (isinstance(value, bool) and cls is not bool):
            raise Malformed(f"{self._where}.{name}: expected {what}")
        return value

    def integer(self, name: str) -> int:
        return self._typed(name, int, "an integer")

    def text(self, name: str) -> str:
        return self._typed(name, str, "a string")

    def flag(self, name: str, default: bool | None = None) -> bool:
        if default is not None and name not in self._members:
            return default
        return self._typed(name, bool, "true or false")

    def time(self, name: str) -> datetime:
        try:
            when = datetime.fromisoformat(self.text(name))
        except ValueError:
            raise Malformed(f"{self._where}.{name}: expected an ISO 8601 time") from None
        if when.tzinfo is None:
            raise Malformed(f"{self._where}.{name}: expected a time with its zone")
        return when

    def time_or_none(self, name: str) -> datetime | None:
        return None if self._get(name) is None else self.time(name)

    def text_or_none(self, name: str) -> str | None:
        """A string, or None when the member is null or missing."""
        return None if self._members.get(name) is None else self.text(name)

    def objects(self, name: str) -> list[JSONObject]:
        items = self._typed(name, list, "an array")
        return [JSONObject(item, f"{self._where}.{name}[{i}]") for i, item in enumerate(items)]


def data(body: object) -> JSONObject:
    if not isinstance(body, dict) or "data" not in body:
        raise Malformed('the body: expected {"data": ...}')
    return JSONObject(body["data"], "data")


def counter(d: JSONObject) -> Counter:
    complete = d.flag("complete", default=True)
    return Counter(d.text("key"), d.integer("value"), d.time_or_none("as_of"), complete)


def written(d: JSONObject) -> Written:
    # a single increment's answer is the increment; a batch's lists what it sent
    if d.has("increments"):
        sent = {e.key: e.value for e in entries(d, "increments")}
    else:
        sent = {d.text("key"): d.integer("value")}
    return Written(d.text_or_none("token"), sent)


def write_status(d: JSONObject) -> tuple[Counted, bool]:
    """The write's state, and whether it is counted (`complete`)."""
    return Counted(d.text("token"), d.time_or_none("as_of")), d.flag("complete")


def history(d: JSONObject) -> History:
    return History(
        key=d.text("key"),
        start=d.time("from"),
        end=d.time("to"),
        step_ms=d.integer("step_ms"),
        points=[Point(p.time("start"), p.integer("value")) for p in d.objects("points")],
        as_of=d.time_or_none("as_of"),
    )


def page(d: JSONObject) -> Page:
    return Page(entries(d, "counters"), d.text_or_none("next_cursor"))


def top(d: JSONObject) -> Top:
    return Top(d.integer("window_ms"), entries(d, "counters"), d.time_or_none("as_of"))


def entries(d: JSONObject, name: str) -> list[Entry]:
    return [Entry(e.text("key"), e.integer("value")) for e in d.objects(name)]
