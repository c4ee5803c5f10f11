"""Clients that retry every 503, every timeout and every broken connection with the write's
`Idempotency-Key`, while the broker and the aggregators are killed: every total is the sum of the
distinct increments, however many copies of a write reached Kafka."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from tests.faults.conftest import PrivateKafka, make_pipeline
from tests.integration.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.faults]

KEYS = 25
# a client gives up waiting long before the ingress gives up on Kafka: its retries race the
# first attempt, which the ingress may still get acknowledged
CLIENT_TIMEOUT_S = 0.8
PRODUCE_TIMEOUT_MS = "2500"
# a write not answered 202 within this long after the load stopped is a failure of the test
SETTLE_S = 90.0


@dataclass
class RetryingLoad:
    """Writes of one or a few increments, each under a key of its own, sent until one attempt is
    answered 202; one in ten is sent once more after its 202, as a client that lost the answer
    would. `attempts` counts what was sent, `accepted` what each key was finally counted as."""

    url: str
    concurrency: int = 24
    accepted: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    unanswered: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.concurrency)]

    async def stop(self) -> None:
        """No new write; the ones under way are retried until answered (or SETTLE_S)."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def expected(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for increments in self.accepted.values():
            for key, value in increments:
                totals[key] += value
        return {key: value for key, value in totals.items() if value}

    async def _worker(self, worker: int) -> None:
        rng = random.Random(worker)
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(
            base_url=self.url, timeout=CLIENT_TIMEOUT_S, limits=limits
        ) as client:
            while not self._stop.is_set():
                size = 1 if rng.random() < 0.8 else rng.randint(2, 6)
                increments = tuple(
                    (f"k{rng.randrange(KEYS)}", rng.choice([1, 1, 2, 3, -1, 10]))
                    for _ in range(size)
                )
                key = str(uuid.UUID(int=rng.getrandbits(128)))
                await self._until_accepted(client, key, increments)
                if key in self.accepted and rng.random() < 0.1:
                    await self._send(client, key, increments)  # the answer was "lost"

    async def _until_accepted(
        self, client: httpx.AsyncClient, key: str, increments: tuple[tuple[str, int], ...]
    ) -> None:
        deadline: float | None = None
        while True:
            if await self._send(client, key, increments) == 202:
                self.accepted[key] = increments
                return
            if self._stop.is_set():
                deadline = deadline or time.monotonic() + SETTLE_S
                if time.monotonic() > deadline:
                    self.unanswered.append(key)
                    return
            await asyncio.sleep(0.1)

    async def _send(
        self, client: httpx.AsyncClient, key: str, increments: tuple[tuple[str, int], ...]
    ) -> int | None:
        self.attempts[key] += 1
        headers = {"Idempotency-Key": key}
        try:
            if len(increments) == 1:
                ((counter, value),) = increments
                body = {"key": counter, "value": value}
                response = await client.post("/increment", json=body, headers=headers)
            else:
                items = [{"key": counter, "value": value} for counter, value in increments]
                body_batch = {"increments": items}
                response = await client.post("/increments", json=body_batch, headers=headers)
        except httpx.TimeoutException:
            self.outcomes["timeout"] += 1
            return None
        except httpx.TransportError:
            self.outcomes["connection"] += 1
            return None
        self.outcomes[str(response.status_code)] += 1
        return response.status_code


def _writes(increments: tuple[tuple[str, int], ...]) -> bool:
    """Whether a write sends any record: the ingress sums a batch per key and sends no record
    for a key whose values cancel out."""
    sums: Counter[str] = Counter()
    for key, value in increments:
        sums[key] += value
    return any(sums.values())


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


async def test_retried_writes_count_once_while_broker_and_aggregators_die(
    private_kafka: PrivateKafka, fresh_database: str, topic_name: str, tmp_path: Path
) -> None:
    pipeline = await make_pipeline(
        private_kafka.node.bootstrap, fresh_database, topic_name, tmp_path
    )
    try:
        await _run(pipeline, private_kafka)
    finally:
        await asyncio.to_thread(pipeline.stop_all)


async def _run(pipeline: Pipeline, broker: PrivateKafka) -> None:
    url = await pipeline.start_ingress(produce_timeout_ms=PRODUCE_TIMEOUT_MS)
    aggregators = [pipeline.start("aggregator", f"aggregator-{i}") for i in range(2)]
    load = RetryingLoad(url)
    load.start()
    try:
        await asyncio.sleep(3)
        _kill(aggregators[0])  # mid-flush or between two: its partitions go to the other
        await asyncio.sleep(2)
        aggregators[0] = pipeline.start("aggregator", "aggregator-0b")
        await asyncio.sleep(3)
        await broker.kill()  # writes under way time out, and are retried
        await asyncio.sleep(5)
        await broker.restart()
        await asyncio.sleep(6)
        for proc in aggregators:  # nothing counts for a while; everything folded is lost
            _kill(proc)
        await asyncio.sleep(2)
        aggregators = [pipeline.start("aggregator", f"aggregator-{i}c") for i in range(2)]
        await asyncio.sleep(4)
        await broker.kill()  # and a broker crash with an aggregator's together
        _kill(aggregators[1])
        await asyncio.sleep(4)
        await broker.restart()
        aggregators[1] = pipeline.start("aggregator", "aggregator-1d")
        await asyncio.sleep(6)
    finally:
        await load.stop()

    assert not load.unanswered, f"{len(load.unanswered)} writes never answered 202"
    await pipeline.wait_caught_up(timeout_s=180)
    totals = await pipeline.totals()
    expected = load.expected()
    assert {k: v for k, v in totals.items() if v} == expected
    assert await pipeline.event_sums() == totals

    # the test is only worth something if writes did reach Kafka more than once
    records = await pipeline.read_all(pipeline.topic)
    copies = Counter(orjson.loads(r.value)["id"].split(" ")[0] for r in records)
    repeated = sum(1 for n in copies.values() if n > 1)
    retried = sum(1 for n in load.attempts.values() if n > 1)
    print(
        f"{len(load.accepted)} writes accepted, {retried} sent more than once, "
        f"{repeated} in Kafka more than once ({len(records)} records); "
        f"answers {dict(load.outcomes)}"
    )
    # every accepted write is in Kafka, but a batch whose values all cancel out writes nothing
    assert set(copies) == {key for key, increments in load.accepted.items() if _writes(increments)}
    assert repeated >= 20, "too few writes reached Kafka twice for the test to mean anything"
    assert load.outcomes["503"] + load.outcomes["timeout"] > 0
