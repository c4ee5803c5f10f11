"""Observations kept in the process between two ticks: counters summed, timer samples listed,
gauges read only when the tick collects them. Nothing here touches a socket."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from distcount_metrics._catalog import Kind, Metric

log = logging.getLogger("distcount.metrics")

TagValues = tuple[str | int, ...]  # in the order of the metric's tags
# timer samples kept per metric and tag values in one tick; past it a tick's samples are dropped
MAX_SAMPLES_PER_TICK: Final = 100_000


@dataclass(frozen=True)
class Snapshot:
    """What one tick reports: the deltas since the previous tick, and the gauges now."""

    interval_s: float
    counters: list[tuple[Metric, TagValues, int]] = field(default_factory=list)
    # (metric, tag values, sample rate, observations)
    timers: list[tuple[Metric, TagValues, float, list[float]]] = field(default_factory=list)
    gauges: list[tuple[Metric, TagValues, float]] = field(default_factory=list)


GaugeReader = Callable[[], Mapping[TagValues, float]]


class Recorder:
    def __init__(self, sample_rate: float) -> None:
        self.sample_rate = sample_rate
        self._counts: dict[tuple[Metric, TagValues], int] = {}
        self._samples: dict[tuple[Metric, TagValues], list[float]] = {}
        self._gauges: list[tuple[Metric, GaugeReader]] = []

    def count(self, metric: Metric, tags: TagValues = (), n: int = 1) -> None:
        key = (metric, tags)
        self._counts[key] = self._counts.get(key, 0) + n

    def time(self, metric: Metric, tags: TagValues, value: float) -> None:
        """One observation; a per-event metric's caller has already drawn it at `sample_rate`."""
        samples = self._samples.get((metric, tags))
        if samples is None:
            self._samples[(metric, tags)] = [value]
        elif len(samples) < MAX_SAMPLES_PER_TICK:
            samples.append(value)

    def watch(self, metric: Metric, read: GaugeReader) -> None:
        """Report `read()` (tag values -> value) every tick."""
        assert metric.kind is Kind.GAUGE, metric
        self._gauges.append((metric, read))

    def collect(self, interval_s: float) -> Snapshot:
        """Everything since the last call, and the gauges' current values."""
        counts, self._counts = self._counts, {}
        samples, self._samples = self._samples, {}
        snapshot = Snapshot(interval_s)
        for (metric, tags), n in counts.items():
            snapshot.counters.append((metric, tags, n))
        for (metric, tags), values in samples.items():
            rate = self.sample_rate if metric.per_event else 1.0
            snapshot.timers.append((metric, tags, rate, values))
        for metric, read in self._gauges:
            try:
                readings = read()
            except Exception as exc:  # a gauge that cannot be read now is left out of this tick
                log.debug("gauge %s not read: %r", metric.full_name, exc)
                continue
            for tags, value in readings.items():
                snapshot.gauges.append((metric, tags, value))
        return snapshot
