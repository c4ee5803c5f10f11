"""The services' metrics as a real StatsD daemon receives them: Etsy's statsd listens on a free UDP
port, the real ingress and aggregator report to it in plain StatsD and in DogStatsD, and a backend
of ours appends every flush to a file that these tests read.

The daemon, how it is installed and its output are in statsd/daemon.py; the metric names it files
in each dialect are in statsd/dialects.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
import pytest

from distcount_metrics import _catalog as m
from distcount_store import connect
from tests.integration.pipeline import Pipeline
from tests.integration.statsd.daemon import (
    Flushed,
    StatsdDaemon,
    StatsdInstall,
    install_statsd,
    running_daemon,
    tail,
)
from tests.integration.statsd.dialects import DOGSTATSD, STATSD, Dialect, wrong_keys

pytestmark = pytest.mark.integration

COMPONENTS: Final = ("ingress", "aggregator")  # the process gauges' tag values

INCREMENTS: Final = 40
# one key, so some of the pipeline's three partitions stay empty: their lag is reported too
KEYS: Final = ("apples",)
INVALID_BODIES: Final = ({"key": "", "value": 1}, {"key": "apples", "value": 0})


@pytest.fixture(scope="session")
def statsd_install() -> StatsdInstall:
    return install_statsd()


@pytest.fixture
def statsd_daemon(statsd_install: StatsdInstall, tmp_path: Path) -> Iterator[StatsdDaemon]:
    """The daemon on free ports, flushing every DAEMON_FLUSH_MS into statsd/flushes.jsonl."""
    with running_daemon(statsd_install, tmp_path / "statsd") as daemon:
        yield daemon


@dataclass(frozen=True)
class Expected:
    counters: dict[str, int]  # summed over the flushes, exactly
    timer_counts: dict[str, int]  # observations, exactly (the sample rate is 1)
    timers: list[str]  # at least one observation
    gauges: list[str]  # received at least once

    def shortfalls(self, flushed: Flushed) -> list[str]:
        missing = [
            f"counter {key}: {flushed.counters.get(key, 0)} of {n}"
            for key, n in self.counters.items()
            if flushed.counters.get(key, 0) < n
        ]
        missing += [
            f"timer {key}: {flushed.timer_counts.get(key, 0)} observations of {n}"
            for key, n in self.timer_counts.items()
            if round(flushed.timer_counts.get(key, 0), 3) < n
        ]
        missing += [f"timer {key}" for key in self.timers if not flushed.timers.get(key)]
        missing += [f"gauge {key}" for key in self.gauges if key not in flushed.gauges]
        return missing


def expected_metrics(dialect: Dialect, partitions: int) -> Expected:
    key = dialect.key
    return Expected(
        counters={
            key(m.REQUESTS, route="increment", status=202): INCREMENTS,
            key(m.REQUESTS, route="increment", status=422): len(INVALID_BODIES),
            key(m.REQUESTS, route="unmatched", status=404): 1,
            key(m.RECORDS_IN): INCREMENTS + 1,  # the malformed record is fetched too
            key(m.DEAD_LETTERS): 1,
        },
        timer_counts={
            # refused requests are timed too
            key(m.REQUEST_DURATION, route="increment"): INCREMENTS + len(INVALID_BODIES),
            key(m.PRODUCE_DURATION, path="single"): INCREMENTS,
            # one record drawn from each fetch, standing for all of its records: the malformed
            # one too, once its partition's flush commits
            key(m.DELAY): INCREMENTS + 1,
        },
        timers=[key(m.FLUSH_DURATION, reason="tick"), key(m.FLUSH_ROWS)],
        gauges=[
            *(key(m.MEMORY_RSS, component=component) for component in COMPONENTS),
            *(key(m.LOOP_LAG, component=component) for component in COMPONENTS),
            key(m.INFLIGHT_SENDS),
            key(m.LIVE_ENTRIES),
            *(key(m.CONSUMER_LAG, partition=p) for p in range(partitions)),
        ],
    )


async def drive(pipeline: Pipeline, url: str) -> dict[str, int]:
    """Increments, refused ones, an unknown path and a malformed record; the totals expected."""
    totals: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for i in range(INCREMENTS):
            key, value = KEYS[i % len(KEYS)], i % 3 + 1
            response = await client.post("/increment", json={"key": key, "value": value})
            assert response.status_code == 202, response.text
            totals[key] = totals.get(key, 0) + value
        for body in INVALID_BODIES:
            response = await client.post("/increment", json=body)
            assert response.status_code == 422, (body, response.text)
        response = await client.get("/no/such/path")
        assert response.status_code == 404, response.text
    # straight to the topic, past the ingress's validation: the aggregator dead-letters it
    await pipeline.produce([(b"malformed", b"not json")])
    return totals


async def event_rows(pipeline: Pipeline) -> int:
    conn = await connect(pipeline.database_url)
    try:
        rows: int = await conn.fetchval("SELECT count(*) FROM counter_events")
    finally:
        await conn.close()
    return rows


def services_logs(pipeline: Pipeline) -> Callable[[], str]:
    def read() -> str:
        return "".join(
            f"\n--- {name}.log, last lines ---\n{tail(pipeline.log(name))}"
            for name in ("ingress", "aggregator")
        )

    return read


@pytest.mark.parametrize("dialect", [STATSD, DOGSTATSD], ids=lambda d: d.reporter)
async def test_the_services_metrics_reach_a_real_statsd_daemon(
    pipeline: Pipeline, statsd_daemon: StatsdDaemon, dialect: Dialect
) -> None:
    key = dialect.key
    # the names below are built by `key`; one of them spelled out as the README shows it
    assert key(m.REQUESTS, route="increment", status=202) == dialect.readme_example

    settings = dialect.settings(statsd_daemon.port)
    pipeline.start("aggregator", "aggregator", **settings)
    url = await pipeline.start_ingress(**settings)
    totals = await drive(pipeline, url)
    await pipeline.wait_caught_up()
    assert await pipeline.totals() == totals
    # the lag of a partition that never held a record is reported all the same
    ends = await pipeline.end_offsets()
    assert any(ends[p] == 0 for p in range(pipeline.partitions)), f"no partition is empty: {ends}"

    # while the services run, their ticks bring it all
    expected = expected_metrics(dialect, pipeline.partitions)
    logs = services_logs(pipeline)
    await statsd_daemon.wait_for(
        expected.shortfalls, "the services' metrics to reach the daemon", context=logs
    )

    # stopped, each service reports a last time; a probe sent after that marks the end
    await asyncio.to_thread(pipeline.stop_all)
    flushed = await statsd_daemon.everything_received()
    context = flushed.describe() + statsd_daemon.log_section() + logs()

    # counts are exact: nothing lost, nothing counted twice
    assert {k: flushed.counters.get(k) for k in expected.counters} == expected.counters, context
    # a delay drawn from a fetch of n records stands for n of them (rate 1/n, written with six
    # decimals): the daemon's scaled count comes within a hair of the records
    got_counts = {k: round(flushed.timer_counts.get(k, 0), 3) for k in expected.timer_counts}
    assert got_counts == expected.timer_counts, context
    assert flushed.counters.get("statsd.bad_lines_seen") == 0, context
    assert wrong_keys(flushed, dialect) == [], context

    # the rows of every committed flush are the rows written
    assert sum(flushed.timers[key(m.FLUSH_ROWS)]) == await event_rows(pipeline), context
    assert all(delay >= 0 for delay in flushed.timers[key(m.DELAY)]), context

    # gauges: real memory figures, and everything settled once the pipeline stopped
    for component in COMPONENTS:
        assert flushed.gauges[key(m.MEMORY_RSS, component=component)] > 0, context
        assert flushed.gauges[key(m.LOOP_LAG, component=component)] >= 0, context
    settled = [
        key(m.INFLIGHT_SENDS),
        key(m.LIVE_ENTRIES),
        *(key(m.CONSUMER_LAG, partition=p) for p in range(pipeline.partitions)),
    ]
    assert {k: flushed.gauges.get(k) for k in settled} == dict.fromkeys(settled, 0), context

    for name in ("ingress", "aggregator"):
        log = pipeline.log(name)
        assert "metrics were not reported" not in log, tail(log)
        assert "cannot reach StatsD" not in log, tail(log)
