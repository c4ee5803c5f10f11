"""Build a service's hooks from the settings: a do-nothing object, or a recording one with its
reporter and the process gauges every service has."""

from __future__ import annotations

from typing import Protocol

from distcount_metrics import _catalog as m
from distcount_metrics._console import ConsoleSink
from distcount_metrics._hooks import (
    AggregatorMetrics,
    IngressMetrics,
    RecordingAggregatorMetrics,
    RecordingIngressMetrics,
    ReportingContext,
)
from distcount_metrics._process import LoopLagMonitor, memory_rss_bytes
from distcount_metrics._recorder import Recorder
from distcount_metrics._reporter import Reporter, Sink
from distcount_metrics._statsd import StatsdSink


class Options(Protocol):
    """What the metrics need from the settings (distcount_config's `MetricsSettings`)."""

    @property
    def reporter(self) -> str: ...  # off, statsd, dogstatsd or console
    @property
    def statsd_host(self) -> str: ...
    @property
    def statsd_port(self) -> int: ...
    @property
    def interval_ms(self) -> int: ...
    @property
    def sample_rate(self) -> float: ...
    @property
    def tags(self) -> tuple[str, ...]: ...


def ingress_metrics(options: Options) -> IngressMetrics:
    if options.reporter == "off":
        return IngressMetrics()
    recorder, reporting = _recording(options, "ingress")
    return RecordingIngressMetrics(recorder, reporting)


def aggregator_metrics(options: Options) -> AggregatorMetrics:
    if options.reporter == "off":
        return AggregatorMetrics()
    recorder, reporting = _recording(options, "aggregator")
    return RecordingAggregatorMetrics(recorder, reporting)


def build_sink(options: Options, service: str) -> Sink:
    if options.reporter == "console":
        return ConsoleSink(service)
    if options.reporter not in ("statsd", "dogstatsd"):
        raise ValueError(f"unknown metrics reporter {options.reporter!r}")
    return StatsdSink(
        options.statsd_host,
        options.statsd_port,
        dogstatsd=options.reporter == "dogstatsd",
        constant_tags=options.tags,
    )


def _recording(options: Options, service: str) -> tuple[Recorder, ReportingContext]:
    recorder = Recorder(options.sample_rate)
    loop_lag = LoopLagMonitor()
    recorder.watch(m.MEMORY_RSS, lambda: {(service,): memory_rss_bytes()})
    recorder.watch(m.LOOP_LAG, lambda: {(service,): loop_lag.take_worst_ms()})
    reporter = Reporter(
        recorder, build_sink(options, service), options.interval_ms / 1000, loop_lag
    )
    return recorder, reporter.running
