"""distcount_client and the read commands against the real ingress and aggregator: a write, the
wait for it, then every read of it (a total, its history, the listing, the busiest counters)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from distcount_client import (
    AsyncClient,
    Client,
    Counter,
    Entry,
    InvalidInput,
    NotFound,
    Written,
)
from tests.integration.pipeline import Pipeline

pytestmark = pytest.mark.integration


async def _write(client: AsyncClient) -> Written:
    """Increments for the reads to find, counted: client/a 3, client/b 5, top 3."""
    single = await client.incr("client/a", 2)
    batch = await client.incr_many([("client/b", 4), ("client/a", 1), ("top", 3), ("client/b", 1)])
    assert single.token is not None
    assert batch.increments == {"client/b": 5, "client/a": 1, "top": 3}
    await client.wait_for(single.token, timeout_s=60)
    counted = await client.wait_for(batch, timeout_s=60)
    assert counted.token == batch.token
    return batch


async def _read_with_as_of(client: AsyncClient, key: str) -> Counter:
    """The counter once its as_of is known: on a fresh topic, a flush or two after the first
    data (each partition's as_of waits for the aggregator to pass its transaction markers)."""
    for _ in range(100):
        counter = await client.get_counter_value(key)
        if counter.as_of is not None:
            return counter
        await asyncio.sleep(0.1)
    raise AssertionError(f"{key}: as_of stayed null for 10 s")


async def test_incr_wait_for_then_read_it_every_way(pipeline: Pipeline) -> None:
    url = await pipeline.start_ingress()
    pipeline.start("aggregator", "aggregator")  # flushing every 300 ms, buckets of 300 ms
    async with AsyncClient(url, timeout_s=10) as client:
        batch = await _write(client)
        a = await _read_with_as_of(client, "client/a")
        assert (a.key, a.value, a.complete) == ("client/a", 3, True)
        after = await client.get_counter_value("client/b", after=batch.token)
        assert (after.value, after.complete) == (5, True)
        # the route of the busiest counters shadows a counter named "top"
        assert (await client.get_counter_value("top")).value == 3
        with pytest.raises(NotFound):
            await client.get_counter_value("client/never")

        history = await client.history("client/a", step="1m")
        assert history.step_ms == 60_000
        assert sum(point.value for point in history.points) == 3
        assert history.points[0].start == history.start
        with pytest.raises(InvalidInput) as refused:
            await client.history("client/a", step="750ms")  # not a multiple of the bucket
        assert list(refused.value.errors) == ["step"]

        first = await client.list("client/", limit=1)
        assert first.counters == [Entry("client/a", 3)]
        assert first.next_cursor is not None
        rest = await client.list("client/", limit=1, cursor=first.next_cursor)
        assert rest.counters == [Entry("client/b", 5)]
        every = [entry async for entry in client.iter_counters("client/", page_size=1)]
        assert every == [Entry("client/a", 3), Entry("client/b", 5)]

        top = await client.top("5m", limit=10)
        assert top.window_ms == 300_000
        assert top.counters[0] == Entry("client/b", 5)
        assert {e.key: e.value for e in top.counters} == {"client/b": 5, "client/a": 3, "top": 3}

    # the blocking client reads the same
    def read_blocking() -> Counter:
        with Client(url) as blocking:
            return blocking.get_counter_value("client/a")

    assert (await asyncio.to_thread(read_blocking)).value == 3


async def test_the_read_commands_go_through_the_ingress(pipeline: Pipeline) -> None:
    url = await pipeline.start_ingress()
    pipeline.start("aggregator", "aggregator")
    async with AsyncClient(url, timeout_s=10) as client:
        await _write(client)

    got = await _cli(pipeline, url, "get", "client/a")
    assert (got.returncode, got.stdout) == (0, "3\n"), got.stderr
    history_json = await _cli(pipeline, url, "history", "client/a", "--json")
    assert history_json.returncode == 0, history_json.stderr
    assert sum(p["value"] for p in json.loads(history_json.stdout)["points"]) == 3
    history_rows = await _cli(pipeline, url, "history", "client/a")
    assert history_rows.returncode == 0, history_rows.stderr
    assert history_rows.stdout.startswith("client/a: per 1m from ")
    top_table = await _cli(pipeline, url, "top", "--limit", "1")
    assert top_table.returncode == 0, top_table.stderr
    assert top_table.stdout.splitlines()[1:] == ["#  KEY       SUM", "1  client/b    5"]
    refused_step = await _cli(pipeline, url, "history", "client/a", "--step", "750ms")
    assert refused_step.returncode == 2
    assert "step:" in refused_step.stderr
    missing = await _cli(pipeline, url, "get", "client/never")
    assert missing.returncode == 1
    assert "no counter 'client/never'" in missing.stderr


async def _cli(pipeline: Pipeline, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "distcount_cli", *args],
        env=pipeline.env(ingress_url=url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
