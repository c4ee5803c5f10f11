"""The console sink for development: every tick, one readable block of what happened."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from distcount_metrics._catalog import Metric
from distcount_metrics._recorder import Snapshot, TagValues


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
            rows.append((_label(metric, tags), f"{value:,.0f} {metric.unit}"))
        if not rows:
            lines.append("  (nothing happened)")
        width = max((len(label) for label, _ in rows), default=0)
        lines.extend(f"  {label:<{width}}  {text}" for label, text in sorted(rows))
        stream.write("\n".join(lines) + "\n")
        stream.flush()

    def close(self) -> None:
        pass


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
