"""`distcount get`, `history` and `top`: the read side through the ingress's HTTP API (at
DISTCOUNT_INGRESS_URL, with distcount_client), printed for a person or, with `--json`, as one
JSON object for a machine.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from distcount_config import Settings
from distcount_core import DistcountError

if TYPE_CHECKING:
    from distcount_client import AsyncClient, Counter, History, Top

BAR_WIDTH: Final = 40
_EPOCH_MS: Final = re.compile(r"-?[0-9]+")
_UNIT_MS: Final = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000))


class ReadFailed(DistcountError):
    """A read the command cannot answer: the counter does not exist, or no ingress answers."""


def moment(text: str) -> datetime | int:
    """`--from`/`--to`: an ISO 8601 time with its zone, or epoch milliseconds."""
    if _EPOCH_MS.fullmatch(text):
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO 8601 time such as 2026-11-30T12:00:00Z nor epoch "
            "milliseconds"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} must say its time zone (Z or +hh:mm)")
    return when


@asynccontextmanager
async def _ingress(settings: Settings) -> AsyncIterator[AsyncClient]:
    # imported here: the client's HTTP stack takes a quarter of a second to import, which every
    # other command (the services' start-up among them) would pay for nothing
    from distcount_client import (  # noqa: PLC0415
        AccessDenied,
        AsyncClient,
        NotFound,
        TransportError,
    )

    try:
        async with AsyncClient(settings.ingress_url, token=settings.token) as client:
            yield client
    except AccessDenied as exc:
        hint = (
            "is DISTCOUNT_TOKEN a token of the read scope?"
            if settings.token
            else "the ingress asks for a token: set DISTCOUNT_TOKEN"
        )
        raise ReadFailed(f"{exc}; {hint} (see the README's Access control)") from exc
    except TransportError as exc:
        raise ReadFailed(
            f"{exc} (is the ingress running? `distcount dev up` starts the local stack's; "
            "DISTCOUNT_INGRESS_URL names another)"
        ) from exc
    except NotFound as exc:
        raise ReadFailed(f"{exc} (increments show after a flush)") from exc


async def get(settings: Settings, key: str, *, as_json: bool) -> int:
    async with _ingress(settings) as client:
        counter = await client.get_counter_value(key)
    print(_json(_counter_json(counter)) if as_json else counter.value)
    return 0


async def history(
    settings: Settings,
    key: str,
    *,
    start: datetime | int | None,
    end: datetime | int | None,
    step: str | None,
    as_json: bool,
) -> int:
    async with _ingress(settings) as client:
        found = await client.history(key, start=start, end=end, step=step)
    print(_json(_history_json(found)) if as_json else "\n".join(history_lines(found)))
    return 0


async def top(settings: Settings, window: str | None, limit: int | None, *, as_json: bool) -> int:
    async with _ingress(settings) as client:
        found = await client.top(window, limit=limit)
    print(_json(_top_json(found)) if as_json else "\n".join(top_lines(found)))
    return 0


# -- for a person ------------------------------------------------------------------------------


def history_lines(found: History) -> list[str]:
    """A heading, then one aligned row per step: its start, its sum, and a bar as long as the
    sum is against the largest (shaded lighter when negative)."""
    with_ms = found.step_ms % 1000 != 0
    lines = [
        f"{found.key}: per {duration(found.step_ms)} from {_time(found.start, with_ms)} "
        f"to {_time(found.end, with_ms)}, {_as_of(found.as_of)}"
    ]
    values = [point.value for point in found.points]
    peak = max((abs(v) for v in values), default=0)
    width = max((len(str(v)) for v in values), default=1)
    for point in found.points:
        row = f"{_time(point.start, with_ms)}  {point.value:>{width}}  {bar(point.value, peak)}"
        lines.append(row.rstrip())
    return lines


def bar(value: int, peak: int) -> str:
    if value == 0 or peak == 0:
        return ""
    length = max(1, round(abs(value) * BAR_WIDTH / peak))
    return ("█" if value > 0 else "░") * length


def top_lines(found: Top) -> list[str]:
    window = duration(found.window_ms)
    if not found.counters:
        return [f"no counter was incremented in the last {window}, {_as_of(found.as_of)}"]
    lines = [f"the busiest counters of the last {window}, {_as_of(found.as_of)}"]
    rank_width = len(str(len(found.counters)))
    key_width = max(len("KEY"), *(len(entry.key) for entry in found.counters))
    value_width = max(len("SUM"), *(len(str(entry.value)) for entry in found.counters))
    lines.append(f"{'#':>{rank_width}}  {'KEY':<{key_width}}  {'SUM':>{value_width}}")
    for rank, entry in enumerate(found.counters, 1):
        lines.append(
            f"{rank:>{rank_width}}  {entry.key:<{key_width}}  {entry.value:>{value_width}}"
        )
    return lines


def duration(ms: int) -> str:
    for unit, unit_ms in _UNIT_MS:
        if ms % unit_ms == 0:
            return f"{ms // unit_ms}{unit}"
    return f"{ms}ms"


def _time(when: datetime, with_ms: bool = False) -> str:
    text = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return (text[:-3] if with_ms else text[:-7]) + "Z"


def _as_of(as_of: datetime | None) -> str:
    if as_of is None:
        return "no as-of time yet (not every partition has been flushed once)"
    return f"as of {_time(as_of, with_ms=True)}"


# -- for a machine: the API's own shapes ---------------------------------------------------------


def _json(value: object) -> str:
    # the standard library's json writes integers of any size exactly, as totals may need
    return json.dumps(value, ensure_ascii=False)


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _counter_json(counter: Counter) -> dict[str, Any]:
    return {"key": counter.key, "value": counter.value, "as_of": _iso(counter.as_of)}


def _history_json(found: History) -> dict[str, Any]:
    return {
        "key": found.key,
        "from": _iso(found.start),
        "to": _iso(found.end),
        "step_ms": found.step_ms,
        "points": [{"start": _iso(p.start), "value": p.value} for p in found.points],
        "as_of": _iso(found.as_of),
    }


def _top_json(found: Top) -> dict[str, Any]:
    return {
        "window_ms": found.window_ms,
        "counters": [{"key": e.key, "value": e.value} for e in found.counters],
        "as_of": _iso(found.as_of),
    }
