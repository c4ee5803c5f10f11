"""A private topic per run (deleted at the end), its end offsets, and a fast pre-fill."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from harness._console import Progress, say, utc_stamp
from harness._stack import suffix


@contextlib.asynccontextmanager
async def fresh_topic(bootstrap: str, prefix: str, partitions: int) -> AsyncIterator[str]:
    """A new topic with `partitions` partitions, deleted on the way out (by a client of its own,
    as a long run may outlive a broker restart)."""
    name = f"{prefix}.{utc_stamp().lower()}.{suffix()}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await asyncio.wait_for(admin.start(), 30)
    try:
        response = await asyncio.wait_for(admin.create_topics([NewTopic(name, partitions, 1)]), 60)
    finally:
        await admin.close()
    try:
        for topic, code, message in response.topic_errors:
            if code != 0:
                raise RuntimeError(f"creating topic {topic} failed: {message} (code {code})")
        await _wait_for_leaders(bootstrap, name, partitions)
        say(f"created topic {name} ({partitions} partitions)")
        yield name
    finally:
        await _delete_topic(bootstrap, name)


async def _delete_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    try:
        await asyncio.wait_for(admin.start(), 30)
        await asyncio.wait_for(admin.delete_topics([name]), 60)
        say(f"deleted topic {name}")
    except Exception as exc:  # cleanup must not hide the benchmark's own error
        say(f"could not delete topic {name}: {type(exc).__name__}: {exc}")
    finally:
        await admin.close()


async def _wait_for_leaders(bootstrap: str, topic: str, partitions: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ends = await end_offsets(bootstrap, topic)
        except Exception:
            ends = {}
        if len(ends) == partitions:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"topic {topic} has no leaders for its {partitions} partitions after 30 s")


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """partition -> end offset (the offset the next record will get)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await asyncio.wait_for(consumer.start(), 30)
    try:
        parts = await asyncio.wait_for(_partitions_for(consumer, topic), 30)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await asyncio.wait_for(consumer.end_offsets(tps), 30)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def _partitions_for(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(100):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        await consumer._client.force_metadata_update()  # no public way to ask for a topic
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no metadata for topic {topic}")


async def settled_total(bootstrap: str, topic: str, timeout_s: float = 30.0) -> int:
    """The topic's record count once it has stopped growing (two equal reads 0.5 s apart)."""
    deadline = time.monotonic() + timeout_s
    last = sum((await end_offsets(bootstrap, topic)).values())
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = sum((await end_offsets(bootstrap, topic)).values())
        if now == last:
            return now
        last = now
    raise TimeoutError(f"the topic {topic} kept growing for {timeout_s:.0f} s after the load")


async def prefill(
    bootstrap: str,
    topic: str,
    *,
    partitions: int,
    records: int,
    encoded: Sequence[tuple[bytes, bytes]],
    spread_ms: int,
) -> dict[str, Any]:
    """`records` records, record i being `encoded[i % len(encoded)]` (message key, value), in the
    partition Kafka's default partitioner gives its key, timestamps spread evenly over
    `spread_ms` ending now. Batches are built directly (one per partition at a time, up to 1 MB
    each) rather than record by record through send(). The topic must then hold `records`."""
    choose = DefaultPartitioner()
    all_partitions = list(range(partitions))
    key_partition = [choose(key, all_partitions, all_partitions) for key, _ in encoded]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=50,
        max_batch_size=1_000_000,
        max_request_size=8 * 1024 * 1024,
        request_timeout_ms=60_000,
    )
    await asyncio.wait_for(producer.start(), 30)
    started = time.monotonic()
    base_ms = int(time.time() * 1000) - spread_ms
    sent: list[asyncio.Future[Any]] = []
    builders = [producer.create_batch() for _ in range(partitions)]
    progress = Progress("pre-fill", records, "records appended")
    try:
        for i in range(records):
            index = i % len(encoded)
            partition = key_partition[index]
            key, value = encoded[index]
            timestamp = base_ms + (i * spread_ms) // records
            if builders[partition].append(timestamp=timestamp, key=key, value=value) is None:
                sent.append(
                    await producer.send_batch(builders[partition], topic, partition=partition)
                )
                builders[partition] = producer.create_batch()
                if builders[partition].append(timestamp=timestamp, key=key, value=value) is None:
                    raise RuntimeError("one record does not fit an empty batch")
                progress.update(i + 1)
        for partition, builder in enumerate(builders):
            if builder.record_count():
                sent.append(await producer.send_batch(builder, topic, partition=partition))
        await asyncio.wait_for(asyncio.gather(*sent), 120)
    finally:
        await asyncio.wait_for(producer.stop(), 60)
    seconds = time.monotonic() - started
    ends = await end_offsets(bootstrap, topic)
    if sum(ends.values()) != records:
        raise RuntimeError(f"the topic holds {sum(ends.values())} records, not {records}")
    say(f"pre-fill: {records:,} records in {seconds:.1f} s ({records / seconds:,.0f}/s)")
    return {
        "seconds": seconds,
        "records_per_s": records / seconds,
        "batches": len(sent),
        "end_offsets": ends,
        "spread_ms": spread_ms,
    }
