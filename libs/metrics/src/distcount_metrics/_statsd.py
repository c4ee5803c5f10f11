"""The StatsD sink: a tick's snapshot goes out as one pipeline of the `statsd` package, which
packs the lines into UDP packets of at most `max_packet_bytes`.

Plain StatsD has no tags, so a tag's value becomes a segment of the name, in the catalog's order
(`distcount.ingress.requests.increment.202`). DogStatsD gets the bare name and `|#tag:value`, plus
the constant tags of the configuration.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

from statsd import StatsClient  # untyped: see the mypy override in pyproject.toml
from statsd.client.udp import Pipeline

from distcount_metrics._catalog import Kind, Metric
from distcount_metrics._recorder import Snapshot, TagValues

log = logging.getLogger("distcount.metrics")

# what fits a UDP datagram on an Ethernet path without fragmenting (the Datadog agent's default)
MAX_PACKET_BYTES: Final = 1432
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class _SampledPipeline(Pipeline):  # type: ignore[misc] # untyped base class
    """A pipeline whose lines are already sampled (drawn when observed, not when sent) and may
    carry DogStatsD tags, passed after `|#` in the stat name."""

    def _prepare(self, stat: str, value: str, rate: float) -> str:
        name, _, tags = stat.partition("|#")
        line = f"{name}:{value}"
        if rate < 1:
            line += "|@" + format_rate(rate)
        if tags:
            line += "|#" + tags
        return line


def format_rate(rate: float) -> str:
    # never an exponent: daemons read the rate with a plain decimal pattern
    return f"{rate:.6f}".rstrip("0")


class StatsdSink:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        dogstatsd: bool,
        constant_tags: tuple[str, ...] = (),
        max_packet_bytes: int = MAX_PACKET_BYTES,
    ) -> None:
        self._host = host
        self._port = port
        self._dogstatsd = dogstatsd
        self._constant_tags = constant_tags
        self._max_packet_bytes = max_packet_bytes
        self._client: Any = None
        self._unresolved = False

    def stat(self, metric: Metric, tags: TagValues) -> str:
        """The name a line is sent under (with `|#tags` for DogStatsD)."""
        if not self._dogstatsd:
            return ".".join([metric.full_name, *(_UNSAFE.sub("_", str(v)) for v in tags)])
        pairs = [f"{k}:{v}" for k, v in zip(metric.tags, tags, strict=True)]
        pairs.extend(self._constant_tags)
        return f"{metric.full_name}|#{','.join(pairs)}" if pairs else metric.full_name

    def send(self, snapshot: Snapshot) -> None:
        client = self._connect()
        if client is None:
            return
        pipe = _SampledPipeline(client)
        for metric, tags, count in snapshot.counters:
            pipe.incr(self.stat(metric, tags), count)
        for metric, tags, rate, values in snapshot.timers:
            stat = self.stat(metric, tags)
            for value in values:
                pipe.timing(stat, value, rate)
        for metric, tags, value in snapshot.gauges:
            assert metric.kind is Kind.GAUGE
            pipe.gauge(self.stat(metric, tags), value if value >= 0 else 0)
        pipe.send()

    def _connect(self) -> Any:
        # resolved on first use and again after a failure: a StatsD host that is not up yet
        # (a container starting) costs a tick's metrics, never the service
        if self._client is None:
            try:
                self._client = StatsClient(
                    self._host, self._port, maxudpsize=self._max_packet_bytes
                )
            except OSError as exc:
                if not self._unresolved:
                    log.warning(
                        "metrics: cannot reach StatsD at %s:%d (%s); trying again every tick",
                        self._host,
                        self._port,
                        exc,
                    )
                self._unresolved = True
                return None
            if self._unresolved:
                log.info("metrics: StatsD at %s:%d resolved", self._host, self._port)
                self._unresolved = False
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
