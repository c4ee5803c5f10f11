"""Idempotency ids against a real broker and a real database: the claims of the flush (repeats,
reuse with another body, expiry, two partitions claiming one id at once), records with ids from
direct producers across partitions and an aggregator's restart, and `Idempotency-Key` on the
ingress's two write routes."""

from __future__ import annotations

import asyncio
import signal

import httpx
import orjson
import pytest

from distcount_codec import Increment, encode_record
from distcount_store import (
    PartitionFlush,
    Written,
    connect,
    find_migrations,
    flush_partition,
    forget_ids,
    id_digest,
)
from distcount_store import migrate as migrate_database
from tests.conftest import ROOT
from tests.integration.pipeline import Pipeline, wait_for

pytestmark = pytest.mark.integration


def _keyed(
    partition: int, expected: int | None, keyed: dict[str, tuple[str, int]]
) -> PartitionFlush:
    return PartitionFlush(
        "g",
        "t",
        partition,
        expected,
        (expected or 0) + len(keyed),
        {},
        keyed={ident: (60_000, key, value) for ident, (key, value) in keyed.items()},
        id_window_s=3600,
    )


async def _totals(conn: object) -> dict[str, int]:
    rows = await conn.fetch("SELECT key, value FROM counter_totals")  # type: ignore[attr-defined]
    return {row["key"]: int(row["value"]) for row in rows}


async def test_a_flush_counts_an_id_once_and_tells_a_retry_from_another_body(
    fresh_database: str,
) -> None:
    assert ROOT is not None
    await migrate_database(fresh_database, find_migrations(ROOT / "migrations"))
    conn = await connect(fresh_database)
    try:
        first = await flush_partition(conn, _keyed(0, None, {"a": ("x", 5), "b": ("y", 1)}))
        assert first == Written(2)
        # partition 1 holds a retry of "a", the id "b" with another increment, and a new one
        second = _keyed(1, None, {"a": ("x", 5), "b": ("y", 2), "c": ("x", 1)})
        assert await flush_partition(conn, second) == Written(1, repeated=2, conflicting=1)
        assert await _totals(conn) == {"x": 6, "y": 1}
        # an id older than the window is counted again, as a new one
        await conn.execute("UPDATE counter_ids SET seen_at = now() - interval '2 hours'")
        third = _keyed(0, 2, {"a": ("x", 5)})
        assert await flush_partition(conn, third) == Written(1)
        assert await _totals(conn) == {"x": 11, "y": 1}
        # the expired ones are deleted, in chunks; the one just claimed is kept
        assert await forget_ids(conn, 3600, limit=1) == 1
        assert await forget_ids(conn, 3600) == 1
        assert await forget_ids(conn, 3600) == 0
        assert await conn.fetchval("SELECT count(*) FROM counter_ids") == 1
    finally:
        await conn.close()


async def test_two_partitions_claiming_one_id_at_once_count_it_once(fresh_database: str) -> None:
    """The second transaction waits on the first's claim, then finds it taken; the first rolling
    back instead leaves it to the second."""
    assert ROOT is not None
    await migrate_database(fresh_database, find_migrations(ROOT / "migrations"))
    one, two = await connect(fresh_database), await connect(fresh_database)
    try:
        # the first holds its claim, uncommitted, while the second tries
        tx = one.transaction()
        await tx.start()
        await one.execute(
            "INSERT INTO counter_ids (id, fingerprint) VALUES ($1, 0)",
            id_digest("shared"),
        )
        waiting = asyncio.ensure_future(flush_partition(two, _keyed(1, None, {"shared": ("k", 1)})))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # blocked on the claim
        await tx.rollback()
        assert await waiting == Written(1)  # the first gave it up: the second counts it
        again = await flush_partition(one, _keyed(0, None, {"shared": ("k", 1)}))
        assert again == Written(0, repeated=1)
        assert await _totals(one) == {"k": 1}
    finally:
        await one.close()
        await two.close()


async def test_records_with_an_id_count_once_across_partitions_and_a_restart(
    pipeline: Pipeline,
) -> None:
    """A direct producer sends each id several times, under other message keys (other
    partitions), before and after the aggregator is killed; bad ids are dead-lettered."""
    increments = [Increment(f"key-{i % 7}", i % 5 + 1) for i in range(300)]

    def records(message_key: bytes) -> list[tuple[bytes | None, bytes | None]]:
        return [
            (message_key, encode_record(inc, f"order-{i}")[1]) for i, inc in enumerate(increments)
        ]

    aggregator = pipeline.start("aggregator", "aggregator")
    await pipeline.produce(records(b"first"))
    await pipeline.produce(records(b"second"))
    await pipeline.wait_caught_up()
    aggregator.send_signal(signal.SIGKILL)
    aggregator.wait()
    # the retries of a producer that never knew whether its records landed
    await pipeline.produce(records(b"third"))
    await pipeline.produce(
        [(None, encode_record(inc, f"order-{i}")[1]) for i, inc in enumerate(increments[:50])]
    )
    bad = [
        (None, orjson.dumps({"key": "bad", "value": 1, "id": 7})),
        (None, orjson.dumps({"key": "bad", "value": 1, "id": ""})),
        (None, orjson.dumps({"key": "bad", "value": 1, "id": "x" * 513})),
    ]
    await pipeline.produce(bad)
    pipeline.start("aggregator", "aggregator")
    await pipeline.wait_caught_up()

    expected: dict[str, int] = {}
    for inc in increments:
        expected[inc.key] = expected.get(inc.key, 0) + inc.value
    assert await pipeline.totals() == expected
    assert await pipeline.event_sums() == expected
    dead = await pipeline.read_all(pipeline.dlq_topic)
    reasons = sorted(dict(r.headers)["distcount.reason"].decode() for r in dead)
    assert len(reasons) == 3, reasons
    assert all("id:" in reason for reason in reasons), reasons


async def test_the_ingress_counts_a_write_sent_again_with_its_key_once(pipeline: Pipeline) -> None:
    url = await pipeline.start_ingress()
    pipeline.start("aggregator", "aggregator")
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        single = {"key": "single", "value": 3}
        answers = [
            await client.post("/increment", json=single, headers={"Idempotency-Key": "s-1"})
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [202, 202, 202]
        assert answers[0].json()["data"]["id"] == "s-1"
        # the same key with another body: accepted, and not counted
        other = await client.post(
            "/increment", json={"key": "single", "value": 100}, headers={"Idempotency-Key": "s-1"}
        )
        assert other.status_code == 202
        batch = {"increments": [{"key": "b1", "value": 1}, {"key": "b2", "value": 2}]}
        for _ in range(2):
            answer = await client.post(
                "/increments", json=batch, headers={"Idempotency-Key": "b-1"}
            )
            assert answer.status_code == 202
        # without a key, every write counts
        for _ in range(2):
            assert (
                await client.post("/increment", json={"key": "plain", "value": 1})
            ).status_code == 202
        # a key that breaks the rules is refused, naming the header
        for bad in ["has space", "x" * 256, "é"]:
            refused = await client.post(
                "/increment",
                json=single,
                headers={b"Idempotency-Key": bad.encode()},
            )
            assert refused.status_code == 422, bad
            assert "Idempotency-Key" in refused.json()["errors"]

    expected = {"single": 3, "b1": 1, "b2": 2, "plain": 2}

    async def counted() -> bool:
        return await pipeline.totals() == expected

    await pipeline.wait_caught_up()
    await wait_for(counted, 30, f"the totals {expected}")
