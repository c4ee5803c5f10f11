"""Every metric of the catalog (`distcount_metrics._catalog`) comes out of some hook, and every
hook is called by its service.

Each check is a function returning the problems it finds, so the tests below also feed it broken
copies of the catalog and the code, to show that it notices.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from distcount_metrics import (
    CATALOG,
    AggregatorMetrics,
    IngressMetrics,
    Kind,
    Metric,
    RecordingAggregatorMetrics,
    RecordingIngressMetrics,
    Snapshot,
    aggregator_metrics,
    ingress_metrics,
)
from tests.unit.metrics_checks import SERVICES


@dataclass(frozen=True)
class _Options:
    """What `ingress_metrics` and `aggregator_metrics` read of the settings."""

    reporter: str = "console"
    statsd_host: str = "localhost"
    statsd_port: int = 8125
    interval_ms: int = 1000
    sample_rate: float = 1.0  # every per-event observation kept
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class _ConsumerRecord:
    """What `on_fetched` reads of an aiokafka consumer record."""

    offset: int
    timestamp: int | None  # ms


def hook_names(cls: type) -> set[str]:
    return {
        name
        for name in dir(cls)
        if name.startswith(("on_", "watch_")) and callable(getattr(cls, name))
    }


# (hook name, arguments), called in this order
Steps = Sequence[tuple[str, tuple[Any, ...]]]


def _ingress_steps() -> Steps:
    return [
        ("on_request", ("increment", 202, 0.0012)),
        ("on_request", ("counter", 200, 0.0004)),
        ("on_request", ("increment", 503, 0.0021)),
        ("on_request", ("unmatched", 404, None)),
        ("on_produced", ("single", 0.0035)),
        ("on_produced", ("batch", 0.0061)),
        ("on_unavailable", ("kafka",)),
        ("watch_inflight_sends", (lambda: 4,)),
    ]


def _aggregator_steps() -> Steps:
    now_ms = time.time_ns() // 1_000_000
    records = [_ConsumerRecord(offset, now_ms - 250 + offset) for offset in range(20)]
    # a failed flush, then its retry that commits, then a fenced one: failures, retries, rows,
    # delay and fenced all appear
    return [
        ("watch_live_entries", (lambda: 120,)),
        ("watch_lag", (lambda: {0: 15, 1: 0},)),
        ("watch_stalled", (lambda: 1,)),
        ("on_fetched", (0, records)),
        ("on_fetched", (1, [*records[:5], _ConsumerRecord(5, None)])),
        ("on_dead_letter", ()),
        ("on_flush", (0, "tick", "failed", 20, 0.040)),
        ("on_flush", (0, "tick", "committed", 20, 0.012)),
        ("on_flush", (1, "memory", "fenced", 6, 0.003)),
        ("on_repeated", (3, 1)),
        ("on_dropped", ([1],)),
    ]


def _run(hooks: IngressMetrics | AggregatorMetrics, steps: Steps) -> set[str]:
    for name, arguments in steps:
        getattr(hooks, name)(*arguments)
    return {name for name, _ in steps}


def snapshot_metrics(snapshot: Snapshot) -> list[tuple[Metric, tuple[str | int, ...]]]:
    return [
        *((metric, tags) for metric, tags, _ in snapshot.counters),
        *((metric, tags) for metric, tags, _, _ in snapshot.timers),
        *((metric, tags) for metric, tags, _ in snapshot.gauges),
    ]


def emission_problems(
    emitted: Iterable[tuple[Metric, tuple[str | int, ...]]], catalog: Sequence[Metric]
) -> list[str]:
    """Catalog metrics no hook emitted, metrics emitted outside the catalog, and tag values that
    do not match the metric's tags."""
    observed = list(emitted)
    names = {metric.full_name for metric, _ in observed}
    problems = [f"{m.full_name} is emitted by no hook" for m in catalog if m.full_name not in names]
    problems += [
        f"{metric.full_name} is emitted but not in the catalog"
        for metric, _ in observed
        if metric not in catalog
    ]
    problems += [
        f"{metric.full_name} emitted with tag values {tags} for tags {metric.tags}"
        for metric, tags in observed
        if len(tags) != len(metric.tags)
    ]
    return sorted(set(problems))


def _emitted() -> tuple[Snapshot, Snapshot]:
    ingress = ingress_metrics(_Options())
    aggregator = aggregator_metrics(_Options())
    assert isinstance(ingress, RecordingIngressMetrics)
    assert isinstance(aggregator, RecordingAggregatorMetrics)
    assert _run(ingress, _ingress_steps()) == hook_names(IngressMetrics)
    assert _run(aggregator, _aggregator_steps()) == hook_names(AggregatorMetrics)
    return ingress._recorder.collect(1.0), aggregator._recorder.collect(1.0)


def test_every_catalog_metric_is_emitted_by_a_hook() -> None:
    ingress, aggregator = _emitted()
    emitted = [*snapshot_metrics(ingress), *snapshot_metrics(aggregator)]
    assert emission_problems(emitted, CATALOG) == []
    assert {metric for metric, _ in emitted} == set(CATALOG)


def test_each_service_emits_its_own_metrics() -> None:
    ingress, aggregator = _emitted()
    for snapshot, service in ((ingress, "ingress"), (aggregator, "aggregator")):
        for metric, tags in snapshot_metrics(snapshot):
            assert metric.name.split(".")[0] in (service, "process"), metric
            if metric.name.startswith("process."):
                assert tags == (service,)


def test_a_metric_no_hook_emits_is_found() -> None:
    ingress, aggregator = _emitted()
    emitted = [*snapshot_metrics(ingress), *snapshot_metrics(aggregator)]
    unused = Metric("aggregator.never_emitted", Kind.COUNTER, (), "records", "nothing emits")
    known = emission_problems(emitted, CATALOG)
    assert [p for p in emission_problems(emitted, [*CATALOG, unused]) if p not in known] == [
        "distcount.aggregator.never_emitted is emitted by no hook"
    ]
    dropped = emitted[0][0]
    fewer = [metric for metric in CATALOG if metric != dropped]
    assert [p for p in emission_problems(emitted, fewer) if p not in known] == [
        f"{dropped.full_name} is emitted but not in the catalog"
    ]
    metric, tags = next((metric, tags) for metric, tags in emitted if metric.tags)
    assert [
        p for p in emission_problems([*emitted, (metric, tags[1:])], CATALOG) if p not in known
    ] == [f"{metric.full_name} emitted with tag values {tags[1:]} for tags {metric.tags}"]


def test_recording_hooks_are_the_base_hooks() -> None:
    # a hook only the recording class has would be missing when metrics are off
    for base, recording in (
        (IngressMetrics, RecordingIngressMetrics),
        (AggregatorMetrics, RecordingAggregatorMetrics),
    ):
        assert hook_names(recording) == hook_names(base)


def called_names(sources: Iterable[str]) -> set[str]:
    """Names of methods called as `x.name(...)`, or bound as `f = x.name` to be called later."""
    names = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute):
                names.add(node.value.attr)
    return names


def _sources(service: str) -> list[str]:
    paths = sorted((SERVICES / service / "src").rglob("*.py"))
    assert paths, f"no sources for {service}"
    return [path.read_text() for path in paths]


@pytest.mark.parametrize(
    ("hooks", "service"),
    [(IngressMetrics, "ingress"), (AggregatorMetrics, "aggregator")],
)
def test_every_hook_is_called_by_its_service(hooks: type, service: str) -> None:
    uncalled = hook_names(hooks) - called_names(_sources(service))
    assert not uncalled, f"hooks nothing in services/{service}/src calls: {sorted(uncalled)}"


def test_a_hook_nothing_calls_is_found() -> None:
    source = (
        "def serve(metrics):\n"
        "    on_request = metrics.on_request\n"
        "    on_request('increment', 202, 0.001)\n"
        "    metrics.on_unavailable('kafka')\n"
        "    metrics.watch_inflight_sends(lambda: 0)\n"
        "    metrics.on_produced\n"  # read, never called
    )
    assert hook_names(IngressMetrics) - called_names([source]) == {"on_produced"}
