"""Observations kept in the process between two ticks: counters summed, timer samples listed,
gauges read only when the tick collects them. Nothing here touches a socket."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from random import sample
from typing import Final

from distcount_metrics._catalog import Kind, Metric

log = logging.getLogger("distcount.metrics")

TagValues = tuple[str | int, ...]  # in the order of the metric's tags
# timer observations sent per metric, tag values and rate for one tick: past it, a uniform sample
# of them is sent and the rate says so, which bounds the report's time (about a microsecond a
# line) at any traffic
MAX_SAMPLES_PER_TICK: Final = 1000
# and kept until the tick, bounding memory; past it they are only counted
MAX_KEPT_PER_TICK: Final = 100_000


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
        self._samples: dict[tuple[Metric, TagValues, float], list[float]] = {}
        # observations past MAX_KEPT_PER_TICK, counted only
        self._unkept: dict[tuple[Metric, TagValues, float], int] = {}
        self._gauges: list[tuple[Metric, GaugeReader]] = []
        self._before_collect: list[Callable[[], None]] = []

    def before_collect(self, hand_over: Callable[[], None]) -> None:
        """Call `hand_over()` first thing in every `collect()`: for counts kept elsewhere."""
        self._before_collect.append(hand_over)

    def count(self, metric: Metric, tags: TagValues = (), n: int = 1) -> None:
        key = (metric, tags)
        self._counts[key] = self._counts.get(key, 0) + n

    def time(self, metric: Metric, tags: TagValues, value: float, rate: float = 1.0) -> None:
        """One observation, drawn by the caller with probability `rate` (1: every one)."""
        key = (metric, tags, rate)
        samples = self._samples.get(key)
        if samples is None:
            self._samples[key] = [value]
        elif len(samples) < MAX_KEPT_PER_TICK:
            samples.append(value)
        else:
            self._unkept[key] = self._unkept.get(key, 0) + 1

    def time_all(self, metric: Metric, tags: TagValues, values: list[float], rate: float) -> None:
        """Observations gathered elsewhere (a hook's own list), all drawn at `rate`."""
        key = (metric, tags, rate)
        samples = self._samples.setdefault(key, [])
        room = max(0, MAX_KEPT_PER_TICK - len(samples))
        samples.extend(values[:room])
        if len(values) > room:
            self._unkept[key] = self._unkept.get(key, 0) + len(values) - room

    def watch(self, metric: Metric, read: GaugeReader) -> None:
        """Report `read()` (tag values -> value) every tick."""
        assert metric.kind is Kind.GAUGE, metric
        self._gauges.append((metric, read))

    def collect(self, interval_s: float) -> Snapshot:
        """Everything since the last call, and the gauges' current values."""
        for hand_over in self._before_collect:
            hand_over()
        counts, self._counts = self._counts, {}
        samples, self._samples = self._samples, {}
        unkept, self._unkept = self._unkept, {}
        snapshot = Snapshot(interval_s)
        for (metric, tags), n in counts.items():
            snapshot.counters.append((metric, tags, n))
        for (metric, tags, rate), kept in samples.items():
            seen = len(kept) + unkept.get((metric, tags, rate), 0)
            # past the limit, a uniform sample of what was kept, each with the same chance
            sent = sample(kept, MAX_SAMPLES_PER_TICK) if len(kept) > MAX_SAMPLES_PER_TICK else kept
            snapshot.timers.append((metric, tags, rate * len(sent) / seen, sent))
        for metric, read in self._gauges:
            try:
                readings = read()
            except Exception as exc:  # a gauge that cannot be read now is left out of this tick
                log.debug("gauge %s not read: %r", metric.full_name, exc)
                continue
            for tags, value in readings.items():
                snapshot.gauges.append((metric, tags, value))
        return snapshot
