"""The aggregator against a real broker and a real database: direct producers, the dead-letter
topic, sums beyond int64, several aggregators in one group, and a fenced zombie."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from datetime import datetime

import orjson
import pytest

from distcount_aggregator import REASON_HEADER, SOURCE_HEADER, TRUNCATED_HEADER
from distcount_codec import INT64_MAX, Increment, encode_record
from distcount_store import connect
from tests.integration.pipeline import Pipeline, counts, wait_for

pytestmark = pytest.mark.integration


def _records(increments: list[Increment]) -> list[tuple[bytes | None, bytes | None]]:
    return [encode_record(inc) for inc in increments]


async def test_records_of_a_plain_producer_are_counted_exactly(pipeline: Pipeline) -> None:
    rng = random.Random(7)
    increments = [
        Increment(f"key-{rng.randrange(50)}", rng.choice([1, 1, 2, 5, -3])) for _ in range(3000)
    ]
    pipeline.start("aggregator", "aggregator", bucket_ms="1000")
    await pipeline.produce(_records(increments))

    await pipeline.wait_caught_up()

    expected = counts(increments)
    totals = await pipeline.totals()
    assert {k: v for k, v in totals.items() if v != 0} == expected
    assert await pipeline.event_sums() == totals
    conn = await connect(pipeline.database_url)
    try:
        starts: list[datetime] = [
            r["bucket_start"] for r in await conn.fetch("SELECT bucket_start FROM counter_events")
        ]
    finally:
        await conn.close()
    assert starts
    assert all(s.microsecond == 0 for s in starts)  # buckets of 1000 ms start on whole seconds


async def test_the_message_key_is_for_locality_only(pipeline: Pipeline) -> None:
    pipeline.start("aggregator", "aggregator")
    value = orjson.dumps({"key": "real", "value": 4})
    await pipeline.produce([(b"other", value), (None, value)])

    await pipeline.wait_caught_up()

    assert await pipeline.totals() == {"real": 8}


MALFORMED: list[tuple[bytes | None, str]] = [
    (b"not json", "not UTF-8 JSON"),
    (b"\xff\xfe", "not UTF-8 JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"value": 1}', "key: can't be blank"),
    (b'{"key": "", "value": 1}', "key: can't be blank"),
    (b'{"key": "k", "value": 0}', "value: must not be zero"),
    (b'{"key": "k", "value": 1.5}', "value: must be an integer"),
    (b'{"key": "k", "value": "1"}', "value: must be an integer"),
    (b'{"key": "k", "value": true}', "value: must be an integer"),
    (b'{"key": "k", "value": 9223372036854775808}', "64-bit"),
    (json.dumps({"key": "x" * 257, "value": 1}).encode(), "at most 256 bytes"),
    (b'{"key": "bell\\u0007", "value": 1}', "control characters"),
    (None, "empty record value"),
]


async def test_malformed_records_go_to_the_dead_letter_topic_with_their_reason(
    pipeline: Pipeline,
) -> None:
    pipeline.start("aggregator", "aggregator")
    good = Increment("good", 1)
    records: list[tuple[bytes | None, bytes | None]] = [encode_record(good)]
    records += [(f"bad-{i}".encode(), value) for i, (value, _) in enumerate(MALFORMED)]
    records.append(encode_record(good))
    await pipeline.produce(records)

    await pipeline.wait_caught_up()

    assert await pipeline.totals() == {"good": 2}
    dead = await pipeline.read_all(pipeline.dlq_topic)
    by_key = {r.key: r for r in dead}
    assert len(dead) == len(MALFORMED)
    for i, (value, reason) in enumerate(MALFORMED):
        record = by_key[f"bad-{i}".encode()]
        headers = dict(record.headers)
        assert record.value == value
        assert reason in headers[REASON_HEADER].decode(), (value, headers[REASON_HEADER])
        assert headers[SOURCE_HEADER].decode().startswith(f"{pipeline.topic}/")
    # nothing is read again on restart: the offsets moved past the dead letters
    pipeline.stop_all()
    pipeline.start("aggregator", "aggregator-again")
    await pipeline.produce([encode_record(good)])
    await pipeline.wait_caught_up()
    assert await pipeline.totals() == {"good": 3}
    assert len(await pipeline.read_all(pipeline.dlq_topic)) == len(MALFORMED)


async def test_sums_beyond_int64_are_exact_and_do_not_wedge_the_pipeline(
    pipeline: Pipeline,
) -> None:
    pipeline.start("aggregator", "aggregator")
    big = [Increment("big", INT64_MAX)] * 3
    await pipeline.produce(_records(big))
    await pipeline.wait_caught_up()
    await pipeline.produce(_records([Increment("big", 1), Increment("after", 1)]))

    await pipeline.wait_caught_up()

    assert await pipeline.totals() == {"big": 3 * INT64_MAX + 1, "after": 1}
    assert len(await pipeline.read_all(pipeline.dlq_topic)) == 0


async def test_two_aggregators_share_the_partitions(pipeline: Pipeline) -> None:
    pipeline.partitions = 4
    pipeline.topic = f"{pipeline.topic}.shared"
    await pipeline.create_topics()
    first = pipeline.start("aggregator", "first")
    second = pipeline.start("aggregator", "second")
    increments = [Increment(f"k{i % 40}", 1) for i in range(4000)]

    await pipeline.produce(_records(increments))
    await pipeline.wait_caught_up()

    assert await pipeline.totals() == counts(increments)
    assert first.poll() is None
    assert second.poll() is None

    def assigned(log: str) -> set[int]:
        # the last assignment each one logged
        lines = [ln for ln in log.splitlines() if "assigned partitions" in ln]
        if not lines:
            return set()
        inside = lines[-1].split("assigned partitions [", 1)[1].split("]", 1)[0]
        return {int(p) for p in inside.split(",") if p.strip()}

    async def split() -> bool:
        a, b = assigned(pipeline.log("first")), assigned(pipeline.log("second"))
        return bool(a) and bool(b) and not a & b and a | b == {0, 1, 2, 3}

    await wait_for(split, 30, "both aggregators to hold partitions")


async def test_a_fenced_zombie_writes_nothing(pipeline: Pipeline) -> None:
    # The zombie must not flush on its own before it is stopped, only when it loses its
    # partitions: its ticks are hourly, and aligned to the hour, so none may fall in the minute
    # or two the test takes to stop it.
    hour_ms = 3_600_000
    to_next_tick_s = (hour_ms - time.time_ns() // 1_000_000 % hour_ms) / 1000
    if to_next_tick_s < 120:
        await asyncio.sleep(to_next_tick_s + 1)
    zombie = pipeline.start("aggregator", "zombie", flush_interval_ms=str(hour_ms))
    first = [Increment(f"z{i % 10}", 1) for i in range(500)]
    await pipeline.produce(_records(first))

    async def folded() -> bool:
        return "assigned partitions" in pipeline.log("zombie")

    await wait_for(folded, 30, "the zombie to join")
    await asyncio.sleep(2)  # fetched and folded, not flushed
    assert await pipeline.stored_offsets() == {}
    os.kill(zombie.pid, signal.SIGSTOP)
    try:
        pipeline.start("aggregator", "successor")
        second = [Increment(f"z{i % 10}", 1) for i in range(300)]
        await pipeline.produce(_records(second))
        # the group drops the silent zombie after its session timeout, the successor takes over
        await pipeline.wait_caught_up(timeout_s=90)
        assert await pipeline.totals() == counts(first + second)
    finally:
        os.kill(zombie.pid, signal.SIGCONT)

    async def zombie_fenced() -> bool:
        return "was flushed by another process" in pipeline.log("zombie")

    await wait_for(zombie_fenced, 60, "the zombie to try its late flush and be fenced")
    third = [Increment("z0", 1)] * 7
    await pipeline.produce(_records(third))
    await pipeline.wait_caught_up()
    assert await pipeline.totals() == counts(first + second + third)
    assert zombie.poll() is None  # fenced, not dead: it goes on with what it owns now


async def test_offsets_that_cannot_be_read_on_assignment_stop_the_process(
    pipeline: Pipeline,
) -> None:
    conn = await connect(pipeline.database_url)
    try:
        # as if someone dropped the table: the stored positions are gone
        await conn.execute("ALTER TABLE consumer_offsets RENAME TO consumer_offsets_gone")
    finally:
        await conn.close()
    await pipeline.produce(_records([Increment("k", 1)]))

    aggregator = pipeline.start("aggregator", "aggregator")

    async def exited() -> bool:
        return aggregator.poll() is not None

    await wait_for(exited, 60, "the aggregator to stop")
    assert aggregator.returncode == 1
    log = pipeline.log("aggregator")
    assert "cannot read or seek to the stored offsets" in log
    assert "distcount: aggregator stopped:" in log
    assert await pipeline.totals() == {}


async def test_a_bad_record_too_large_to_dead_letter_whole_is_cut_not_stuck(
    pipeline: Pipeline,
) -> None:
    pipeline.start("aggregator", "aggregator")
    # just under the broker's limit, so the dead letter's headers push it over the producer's
    huge = b"x" * 1_048_480
    await pipeline.produce([(b"huge", huge)], max_request_size=2 * 1024 * 1024)
    await pipeline.produce(_records([Increment("after", 1)]))

    await pipeline.wait_caught_up()

    assert await pipeline.totals() == {"after": 1}
    (dead,) = await pipeline.read_all(pipeline.dlq_topic)
    headers = dict(dead.headers)
    assert headers[TRUNCATED_HEADER] == str(len(huge) + len(b"huge")).encode()
    assert dead.value == huge[: 64 * 1024]
    assert b"not UTF-8 JSON" in headers[REASON_HEADER]
