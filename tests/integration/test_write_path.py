"""The whole write path, as a user meets it: HTTP in, Kafka, the aggregator, PostgreSQL out."""

from __future__ import annotations

import httpx
import pytest

from distcount_store import connect
from tests.integration.pipeline import Pipeline, wait_for

pytestmark = pytest.mark.integration


async def test_post_then_get_after_a_flush(pipeline: Pipeline) -> None:
    url = await pipeline.start_ingress()
    pipeline.start("aggregator", "aggregator", flush_interval_ms="500")
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post("/increment", json={"key": "c1", "value": 1})
        assert response.status_code == 202
        data = response.json()["data"]
        token = data.pop("token")
        assert data == {"key": "c1", "value": 1}
        assert (await client.get("/counters/c1")).status_code == 404  # not flushed yet

        async def flushed() -> bool:
            return (await client.get("/counters/c1")).status_code == 200

        await wait_for(flushed, 30, "c1 to be flushed")
        read = (await client.get("/counters/c1")).json()["data"]
        assert (read["key"], read["value"]) == ("c1", 1)
        # once flushed, the write's token is too, and as_of is a time (every partition flushed)
        written = await client.get(f"/writes/{token}")
        assert written.status_code == 200, written.text
        assert read["as_of"] is not None

    # the original's walkthrough: `distcount get c1` prints 1
    cli = await pipeline.cli("get", "c1")
    assert (cli.returncode, cli.stdout) == (0, "1\n"), cli.stderr
    conn = await connect(pipeline.database_url)
    try:
        rows = await conn.fetch("SELECT key, delta FROM counter_events")
    finally:
        await conn.close()
    assert [(r["key"], int(r["delta"])) for r in rows] == [("c1", 1)]


async def test_batch_is_presummed_and_counted_whole(pipeline: Pipeline) -> None:
    url = await pipeline.start_ingress()
    pipeline.start("aggregator", "aggregator")
    batch = {
        "increments": [
            {"key": "a", "value": 2},
            {"key": "b", "value": 1},
            {"key": "a", "value": 3},
            {"key": "c", "value": 4},
            {"key": "c", "value": -4},
        ]
    }
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post("/increments", json=batch)
        assert response.status_code == 202, response.text
        data = response.json()["data"]
        assert data.pop("token").startswith("1.")
        assert data == {"increments": [{"key": "a", "value": 5}, {"key": "b", "value": 1}]}
        bad = await client.post(
            "/increments", json={"increments": [{"key": "a", "value": 1}, {"key": "", "value": 1}]}
        )
        assert bad.status_code == 422

    await pipeline.wait_caught_up()
    assert await pipeline.totals() == {"a": 5, "b": 1}


async def test_cli_incr_and_get(pipeline: Pipeline) -> None:
    pipeline.start("aggregator", "aggregator")
    await pipeline.start_ingress()  # `distcount get` reads through it

    assert (await pipeline.cli("incr", "k")).returncode == 0
    assert (await pipeline.cli("incr", "k", "41")).returncode == 0
    refused = await pipeline.cli("incr", "k", "0")
    assert refused.returncode == 2
    assert "value: must not be zero" in refused.stderr
    missing = await pipeline.cli("get", "nope")
    assert missing.returncode == 1
    assert "no counter 'nope'" in missing.stderr

    await pipeline.wait_caught_up()
    got = await pipeline.cli("get", "k")
    assert (got.returncode, got.stdout) == (0, "42\n"), got.stderr
