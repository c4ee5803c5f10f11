"""The fetch guard's check of the Kafka client: a dead metadata task stops the aggregator loudly
instead of leaving it waiting on stale metadata for ever."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from distcount_aggregator._errors import KafkaClientBroken
from distcount_aggregator._fetch import GuardedFetch


class FakeConsumer:
    def __init__(self, sync_task: asyncio.Task[None] | None) -> None:
        self._client = SimpleNamespace(_sync_task=sync_task)
        self.fetches = 0

    async def getmany(self, **options: Any) -> dict[Any, Any]:
        self.fetches += 1
        return {}


async def test_a_live_metadata_task_lets_the_fetch_through() -> None:
    task = asyncio.create_task(asyncio.sleep(60))
    consumer = FakeConsumer(task)
    try:
        assert await GuardedFetch(consumer, 10).fetch(0, dict) == ({}, [])
    finally:
        task.cancel()
    assert consumer.fetches == 1


async def test_a_dead_metadata_task_stops_the_aggregator_with_its_cause() -> None:
    async def dies() -> None:
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

    task = asyncio.create_task(dies())
    await asyncio.wait([task])
    consumer = FakeConsumer(task)
    with pytest.raises(KafkaClientBroken, match="RuntimeError: unable to perform operation"):
        await GuardedFetch(consumer, 10).fetch(0, dict)
    assert consumer.fetches == 0
