"""The console sink for development: every tick, one readable block of what happened."""

from __future__ import annotations

import re
import sys
import time
from typing import Final, TextIO

from distcount_metrics._catalog import Metric
from distcount_metrics._recorder import Snapshot, TagValues

# the first line of a block: "12:00:05 metrics of the ingress, last 5.0 s:"
_HEADER: Final = re.compile(r"^\d\d:\d\d:\d\d metrics of the [a-z]+, last ")


def console_blocks(text: str) -> list[str]:
    """The console blocks found in `text` (a service's output, log lines mixed in), in order."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if _HEADER.match(line):
            current = [line]
            blocks.append(current)
        elif current is not None and line.startswith("  "):
            current.append(line)
        else:
            current = None
    return ["\n".join(block) for block in blocks]


class ConsoleSink:
    def __init__(self, service: str, stream: TextIO | None = None) -> None:
        self._service = service
        self._stream = stream

    def send(self, snapshot: Snapshot) -> None:
        stream = self._stream or sys.stderr
        stamp = time.strftime("%H:%M:%S")
        lines = [f"{stamp} metrics of the {self._service}, last {snapshot.interval_s:.1f} s:"]
        rows: list[tuple[str, str]] = []
        for metric, tags, count in snapshot.counters:
            rate = count / snapshot.interval_s if snapshot.interval_s > 0 else 0.0
            rows.append((_label(metric, tags), f"{count} ({rate:,.1f}/s)"))
        for metric, tags, rate, values in snapshot.timers:
            rows.append((_label(metric, tags), _summary(metric, rate, values)))
        for metric, tags, value in snapshot.gauges:
            rows.append((_label(metric, tags), _gauge(metric, value)))
        if not rows:
            lines.append("  (nothing happened)")
        width = max((len(label) for label, _ in rows), default=0)
        lines.extend(f"  {label:<{width}}  {text}" for label, text in sorted(rows))
        stream.write("\n".join(lines) + "\n")
        stream.flush()

    def close(self) -> None:
        pass


def _gauge(metric: Metric, value: float) -> str:
    if metric.unit == "bytes":
        return f"{value / 1048576:,.1f} MiB"
    if isinstance(value, int) or value.is_integer():
        return f"{value:,.0f} {metric.unit}"
    return f"{value:,.1f} {metric.unit}"


def _label(metric: Metric, tags: TagValues) -> str:
    pairs = ",".join(f"{k}:{v}" for k, v in zip(metric.tags, tags, strict=True))
    return f"{metric.full_name}{{{pairs}}}" if pairs else metric.full_name


def _summary(metric: Metric, rate: float, values: list[float]) -> str:
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))]

    sampled = f", 1 in {round(1 / rate)} sampled" if rate < 1 else ""
    unit = metric.unit
    return (
        f"n={n}{sampled}  p50 {at(0.5):,.1f} {unit}  p99 {at(0.99):,.1f} {unit}  "
        f"max {ordered[-1]:,.1f} {unit}"
    )
