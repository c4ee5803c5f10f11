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


class _LinePipeline(Pipeline):  # type: ignore[misc] # untyped base class
    """The package's UDP pipeline, fed lines formatted here once per tick (where the package
    would format, and draw a sample of, each one as it is added). It packs them into datagrams
    below the size limit and sends them on `send()`."""

    def add_lines(self, lines: list[str]) -> None:
        self._stats.extend(lines)


def format_rate(rate: float) -> str:
    # never an exponent, which daemons reading the rate with a decimal pattern would misread
    return f"{max(rate, 0.000001):.6f}".rstrip("0")


# the delay's rates vary with the size of fetches: the cache of lines' templates stays bounded
_MAX_TEMPLATES: Final = 10_000
_TYPES: Final = {Kind.COUNTER: "c", Kind.GAUGE: "g", Kind.TIMER: "ms"}


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
        # (metric, tag values, rate) -> what comes before and after the value in a line
        self._templates: dict[tuple[Metric, TagValues, float], tuple[str, str]] = {}

    def stat(self, metric: Metric, tags: TagValues) -> str:
        """The name a line is sent under: the tags' values appended, for plain StatsD."""
        if self._dogstatsd:
            return metric.full_name
        return ".".join([metric.full_name, *(_UNSAFE.sub("_", str(v)) for v in tags)])

    def _template(self, metric: Metric, tags: TagValues, rate: float = 1.0) -> tuple[str, str]:
        key = (metric, tags, rate)
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= _MAX_TEMPLATES:
                self._templates.clear()
            suffix = "|" + _TYPES[metric.kind]
            if rate < 1:
                suffix += "|@" + format_rate(rate)
            if self._dogstatsd:
                pairs = [f"{k}:{v}" for k, v in zip(metric.tags, tags, strict=True)]
                pairs.extend(self._constant_tags)
                if pairs:
                    suffix += "|#" + ",".join(pairs)
            template = self._templates[key] = (self.stat(metric, tags) + ":", suffix)
        return template

    def lines(self, snapshot: Snapshot) -> list[str]:
        """The snapshot as StatsD lines, `name:value|type[|@rate][|#tags]`."""
        lines = []
        for metric, tags, count in snapshot.counters:
            head, tail = self._template(metric, tags)
            lines.append(f"{head}{count}{tail}")
        for metric, tags, rate, values in snapshot.timers:
            head, tail = self._template(metric, tags, rate)
            lines.extend([f"{head}{value:.3f}{tail}" for value in values])
        for metric, tags, value in snapshot.gauges:
            head, tail = self._template(metric, tags)
            # a negative gauge would read as a decrement
            lines.append(f"{head}{max(value, 0)}{tail}")
        return lines

    def send(self, snapshot: Snapshot) -> None:
        client = self._connect()
        if client is None:
            return
        lines = self.lines(snapshot)
        if lines:
            pipe = _LinePipeline(client)
            pipe.add_lines(lines)
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
