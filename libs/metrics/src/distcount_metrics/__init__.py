"""distcount's metrics: hook objects the services call, reported to StatsD, DogStatsD or the
console every tick. `_catalog.py` lists every metric; start reading there, then `_hooks.py`.
"""

from distcount_metrics._build import Options, aggregator_metrics, build_sink, ingress_metrics
from distcount_metrics._catalog import CATALOG, PREFIX, Kind, Metric
from distcount_metrics._console import ConsoleSink, console_blocks
from distcount_metrics._hooks import (
    AggregatorMetrics,
    IngressMetrics,
    RecordingAggregatorMetrics,
    RecordingIngressMetrics,
)
from distcount_metrics._process import LoopLagMonitor, memory_rss_bytes
from distcount_metrics._recorder import Recorder, Snapshot
from distcount_metrics._reporter import Reporter, Sink
from distcount_metrics._statsd import StatsdSink

__all__ = [
    "CATALOG",
    "PREFIX",
    "AggregatorMetrics",
    "ConsoleSink",
    "IngressMetrics",
    "Kind",
    "LoopLagMonitor",
    "Metric",
    "Options",
    "Recorder",
    "RecordingAggregatorMetrics",
    "RecordingIngressMetrics",
    "Reporter",
    "Sink",
    "Snapshot",
    "StatsdSink",
    "aggregator_metrics",
    "build_sink",
    "console_blocks",
    "ingress_metrics",
    "memory_rss_bytes",
]
