"""The metrics as they leave the process: StatsD and DogStatsD lines read off a real UDP socket
(names, types, tags, sampling, packet sizes), and the console reporter's block."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from distcount_metrics import (
    CATALOG,
    ConsoleSink,
    IngressMetrics,
    Kind,
    Recorder,
    StatsdSink,
    aggregator_metrics,
    ingress_metrics,
)
from distcount_metrics import _catalog as m
from distcount_metrics._recorder import MAX_SAMPLES_PER_TICK
from distcount_metrics._statsd import MAX_PACKET_BYTES, format_rate

# name:value|type[|@rate][|#tags]
LINE = re.compile(
    r"^(?P<name>[A-Za-z0-9_.-]+):(?P<value>-?[0-9.]+)\|(?P<type>c|g|ms)"
    r"(?:\|@(?P<rate>[0-9.]+))?(?:\|#(?P<tags>[^|]+))?$"
)


@dataclass(frozen=True)
class Options:
    reporter: str = "dogstatsd"
    statsd_host: str = "127.0.0.1"
    statsd_port: int = 0
    interval_ms: int = 50
    sample_rate: float = 1.0
    tags: tuple[str, ...] = ()


class Daemon:
    """A UDP socket standing in for the StatsD daemon: every datagram, kept whole."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.packets: list[bytes] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.packets.append(self.sock.recv(65535))
            except BlockingIOError:
                break
        return self.lines()

    def lines(self) -> list[str]:
        return [line for packet in self.packets for line in packet.decode("ascii").split("\n")]

    def parsed(self) -> list[dict[str, str | None]]:
        parsed = []
        for line in self.drain():
            match = LINE.match(line)
            assert match, f"not a StatsD line: {line!r}"
            parsed.append(match.groupdict())
        return parsed


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon()
    yield d
    d.sock.close()


def _sum(lines: list[dict[str, str | None]], name: str, tags: str | None = None) -> float:
    return sum(
        float(line["value"] or 0)
        for line in lines
        if line["name"] == name and (tags is None or line["tags"] == tags)
    )


async def test_dogstatsd_lines_carry_names_types_and_tags(daemon: Daemon) -> None:
    metrics = ingress_metrics(Options(statsd_port=daemon.port, tags=("env:test", "team:a")))
    metrics.watch_inflight_sends(lambda: 7)
    async with metrics.reporting():
        for _ in range(30):
            metrics.on_request("increment", 202, 0.002)
        metrics.on_request("counter", 404, 0.001)
        metrics.on_unavailable("overloaded")
        metrics.on_produced("batch", 0.004)
    lines = daemon.parsed()

    assert _sum(lines, m.REQUESTS.full_name, "route:increment,status:202,env:test,team:a") == 30
    assert _sum(lines, m.REQUESTS.full_name, "route:counter,status:404,env:test,team:a") == 1
    # counted in the process: one line per tick, not one per request
    assert len([x for x in lines if x["name"] == m.REQUESTS.full_name]) <= 2
    assert _sum(lines, m.UNAVAILABLE.full_name, "cause:overloaded,env:test,team:a") == 1
    durations = [x for x in lines if x["name"] == m.REQUEST_DURATION.full_name]
    assert len(durations) == 31
    assert {x["type"] for x in durations} == {"ms"}
    assert {float(x["value"] or 0) for x in durations} == {2.0, 1.0}
    produce = [x for x in lines if x["name"] == m.PRODUCE_DURATION.full_name]
    assert [(x["value"], x["tags"]) for x in produce] == [("4.000", "path:batch,env:test,team:a")]
    inflight = [x for x in lines if x["name"] == m.INFLIGHT_SENDS.full_name]
    assert inflight
    assert all(x["type"] == "g" and x["value"] == "7" for x in inflight)
    assert inflight[0]["tags"] == "env:test,team:a"
    rss = [x for x in lines if x["name"] == m.MEMORY_RSS.full_name]
    assert rss
    assert float(rss[0]["value"] or 0) > 1_000_000
    assert rss[0]["tags"] == "component:ingress,env:test,team:a"
    assert any(x["name"] == m.LOOP_LAG.full_name for x in lines)


async def test_plain_statsd_puts_tag_values_in_the_name(daemon: Daemon) -> None:
    metrics = aggregator_metrics(
        Options(reporter="statsd", statsd_port=daemon.port, tags=("env:test",))
    )
    metrics.watch_lag(lambda: {0: 12, 3: 0})
    metrics.watch_live_entries(lambda: 42)
    async with metrics.reporting():
        metrics.on_fetched(0, [SimpleNamespace(timestamp=1, offset=i) for i in range(10)])
        metrics.on_flush(0, "revocation", "committed", 5, 0.25)
    lines = daemon.parsed()

    assert all(x["tags"] is None for x in lines)  # no tags, constant ones neither
    assert _sum(lines, m.RECORDS_IN.full_name) == 10
    assert _sum(lines, "distcount.aggregator.flush.duration.revocation") == 250
    assert _sum(lines, m.FLUSH_ROWS.full_name) == 5
    lag = {
        x["name"]: x["value"] for x in lines if str(x["name"]).startswith(m.CONSUMER_LAG.full_name)
    }
    assert lag == {
        "distcount.aggregator.consumer_lag.0": "12",
        "distcount.aggregator.consumer_lag.3": "0",
    }
    assert any(x["name"] == "distcount.process.memory_rss.aggregator" for x in lines)
    assert {x["value"] for x in lines if x["name"] == m.LIVE_ENTRIES.full_name} == {"42"}
    # one record of the fetch drawn for the delay, standing for the ten
    delays = [x for x in lines if x["name"] == m.DELAY.full_name]
    assert [(x["type"], x["rate"]) for x in delays] == [("ms", "0.1")]


async def test_per_event_timers_are_sampled_and_carry_their_rate(daemon: Daemon) -> None:
    metrics = ingress_metrics(Options(statsd_port=daemon.port, sample_rate=0.1))
    events = 5_000
    async with metrics.reporting():
        for i in range(events):
            started = metrics.start_timer()  # a draw at the sample rate
            metrics.on_request("increment", 202, None if started is None else 0.001)
            if i % 1000 == 0:
                await asyncio.sleep(0)  # let ticks happen
    lines = daemon.parsed()

    durations = [x for x in lines if x["name"] == m.REQUEST_DURATION.full_name]
    assert {x["rate"] for x in durations} == {"0.1"}
    # binomial(5000, 0.1): mean 500, standard deviation 21; about 5 of them either side
    assert 400 < len(durations) < 600
    # counters are never sampled: exact
    requests = [x for x in lines if x["name"] == m.REQUESTS.full_name]
    assert all(x["rate"] is None for x in requests)
    assert _sum(lines, m.REQUESTS.full_name) == events


async def test_a_large_fetch_gives_one_delay_standing_for_all_its_records(
    daemon: Daemon,
) -> None:
    metrics = aggregator_metrics(Options(statsd_port=daemon.port, sample_rate=0.01))
    async with metrics.reporting():
        for batch in range(7):
            records = [SimpleNamespace(timestamp=1, offset=batch * 1000 + i) for i in range(333)]
            metrics.on_fetched(2, records)
        metrics.on_flush(2, "tick", "committed", 1, 0.01)
    delays = [x for x in daemon.parsed() if x["name"] == m.DELAY.full_name]
    # the cost stays one draw a fetch, however many records it holds
    assert [x["rate"] for x in delays] == ["0.003003"] * 7


async def test_small_fetches_are_drawn_at_the_sample_rate(daemon: Daemon) -> None:
    metrics = aggregator_metrics(Options(statsd_port=daemon.port, sample_rate=0.1))
    fetches = 5_000
    async with metrics.reporting():
        for offset in range(fetches):
            metrics.on_fetched(0, [SimpleNamespace(timestamp=1, offset=offset)])
        metrics.on_flush(0, "tick", "committed", 1, 0.01)
    delays = [x for x in daemon.parsed() if x["name"] == m.DELAY.full_name]
    assert {x["rate"] for x in delays} == {"0.1"}
    # binomial(5000, 0.1): mean 500, standard deviation 21
    assert 400 < len(delays) < 600


async def test_flush_outcomes_count_failures_retries_and_fencing(daemon: Daemon) -> None:
    metrics = aggregator_metrics(Options(statsd_port=daemon.port))
    async with metrics.reporting():
        metrics.on_fetched(1, [SimpleNamespace(timestamp=1, offset=0)])
        metrics.on_flush(1, "tick", "failed", 1, 0.1)
        metrics.on_flush(1, "tick", "failed", 1, 0.1)
        metrics.on_flush(1, "tick", "committed", 1, 0.1)
        metrics.on_flush(1, "tick", "committed", 1, 0.1)  # not a retry: the last one worked
        metrics.on_fetched(4, [SimpleNamespace(timestamp=1, offset=0)])
        metrics.on_flush(4, "shutdown", "fenced", 3, 0.1)
    lines = daemon.parsed()
    assert _sum(lines, m.FLUSH_FAILURES.full_name) == 2
    assert _sum(lines, m.FLUSH_RETRIES.full_name) == 2
    assert _sum(lines, m.FLUSH_FENCED.full_name) == 1
    # rows only for committed flushes; the fenced partition's delay samples are dropped
    assert len([x for x in lines if x["name"] == m.FLUSH_ROWS.full_name]) == 2
    assert len([x for x in lines if x["name"] == m.DELAY.full_name]) == 1
    assert len([x for x in lines if x["name"] == m.FLUSH_DURATION.full_name]) == 5


def test_a_tick_is_packed_into_packets_below_the_limit(daemon: Daemon) -> None:
    recorder = Recorder(1.0)
    for partition in range(500):
        recorder.count(m.RECORDS_IN, (), 1)
        recorder.time(m.FLUSH_DURATION, ("tick",), partition + 0.5)
    sink = StatsdSink("127.0.0.1", daemon.port, dogstatsd=True)
    sink.send(recorder.collect(1.0))
    sink.close()
    daemon.drain()
    assert len(daemon.packets) > 1
    assert all(len(packet) < MAX_PACKET_BYTES for packet in daemon.packets)
    assert len(daemon.lines()) == 501
    # several lines to a packet: a pipeline, not a datagram per observation
    assert len(daemon.packets) < 501 / 10


def test_plain_names_keep_only_safe_characters() -> None:
    sink = StatsdSink("127.0.0.1", 9, dogstatsd=False)
    assert sink.stat(m.REQUESTS, ("a b/c", 202)) == "distcount.ingress.requests.a_b_c.202"
    assert sink.stat(m.RECORDS_IN, ()) == "distcount.aggregator.records_in"


def test_rates_are_written_without_exponents() -> None:
    assert format_rate(0.1) == "0.1"
    assert format_rate(0.0001) == "0.0001"
    assert format_rate(1 / 3) == "0.333333"


async def test_an_unresolvable_host_costs_metrics_not_the_service(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = ingress_metrics(Options(statsd_host="no-such-host.invalid", statsd_port=8125))
    with caplog.at_level(logging.WARNING, logger="distcount.metrics"):
        async with metrics.reporting():
            metrics.on_request("increment", 202, 0.001)
            await asyncio.sleep(0.2)  # several ticks: one warning, not one per tick
    warnings = [r for r in caplog.records if "cannot reach StatsD" in r.getMessage()]
    assert len(warnings) == 1
    assert "no-such-host.invalid:8125" in warnings[0].getMessage()


async def test_off_records_nothing_and_reports_nothing(daemon: Daemon) -> None:
    metrics = ingress_metrics(Options(reporter="off", statsd_port=daemon.port))
    assert type(metrics) is IngressMetrics  # the do-nothing base
    async with metrics.reporting():
        metrics.on_request("increment", 202, 0.001)
        await asyncio.sleep(0.15)
    assert daemon.drain() == []


def test_console_block_lists_counters_timers_and_gauges() -> None:
    recorder = Recorder(0.5)
    recorder.count(m.REQUESTS, ("increment", 202), 25)
    for value in (1.0, 2.0, 3.0, 4.0):
        recorder.time(m.REQUEST_DURATION, ("increment",), value, 0.5)
    recorder.watch(m.INFLIGHT_SENDS, lambda: {(): 3})
    out = io.StringIO()
    ConsoleSink("ingress", out).send(recorder.collect(5.0))
    text = out.getvalue()
    assert "metrics of the ingress, last 5.0 s" in text
    assert re.search(
        r"distcount.ingress.requests\{route:increment,status:202\}\s+25 \(5.0/s\)", text
    )
    assert re.search(
        r"request.duration\{route:increment\}\s+n=4, 1 in 2 sampled\s+p50 3.0 ms", text
    )
    assert re.search(r"distcount.ingress.inflight_sends\s+3 requests", text)


def test_a_gauge_that_fails_is_left_out_of_the_tick() -> None:
    recorder = Recorder(1.0)

    def broken() -> dict[tuple[str | int, ...], float]:
        raise RuntimeError("not assigned")

    recorder.watch(m.CONSUMER_LAG, broken)
    recorder.watch(m.LIVE_ENTRIES, lambda: {(): 1})
    assert [g[0] for g in recorder.collect(1.0).gauges] == [m.LIVE_ENTRIES]


def test_every_catalog_metric_has_a_kind_and_unique_name() -> None:
    names = [metric.full_name for metric in CATALOG]
    assert len(names) == len(set(names))
    assert all(metric.kind in Kind for metric in CATALOG)
    # a per-event metric is a timer: counters are summed exactly, gauges read at the tick
    assert all(metric.kind is Kind.TIMER for metric in CATALOG if metric.per_event)


def test_past_the_cap_a_tick_keeps_a_uniform_sample_and_says_its_rate() -> None:
    recorder = Recorder(0.1)
    seen = 5 * MAX_SAMPLES_PER_TICK
    for value in range(seen):
        recorder.time(m.REQUEST_DURATION, ("increment",), float(value), 0.1)
    [(metric, tags, rate, values)] = recorder.collect(1.0).timers
    assert (metric, tags) == (m.REQUEST_DURATION, ("increment",))
    assert len(values) == MAX_SAMPLES_PER_TICK
    # one in five of what was drawn at 0.1 is kept: the daemon scales by 1/0.02
    assert rate == pytest.approx(0.1 / 5)
    # a uniform sample of the whole tick, not its first observations: mean near 2,500
    assert abs(sum(values) / len(values) - seen / 2) < seen * 0.05
    # the next tick starts afresh
    recorder.time(m.REQUEST_DURATION, ("increment",), 1.0, 0.1)
    [(_, _, rate, values)] = recorder.collect(1.0).timers
    assert (rate, values) == (0.1, [1.0])
