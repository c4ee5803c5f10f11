"""as_of under lag, against the real ingress, aggregator, Kafka and PostgreSQL: whatever a read
says, every increment answered 202 before its as_of is in its value.

Writers post single increments and all-or-nothing batches (each its own Kafka transaction) while a
reader polls the counter; midway the aggregator is killed and, a few seconds later, started
again, so that the reads see the value fall behind the writes and catch up. Each 202 is timed
when its answer arrived, after the ingress accepted it, so "answered before as_of" implies
"accepted before as_of": the check can only be stricter than the promise.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import pytest

from tests.integration.pipeline import Pipeline

pytestmark = pytest.mark.integration

KEY = "as-of"


@dataclass
class Ledger:
    answered: list[tuple[float, int]] = field(default_factory=list)  # (answer time, value)
    reads: list[tuple[float, int, float | None]] = field(default_factory=list)  # (t, value, as_of)

    def accepted_before(self, moment: float) -> int:
        return sum(value for answered_at, value in self.answered if answered_at < moment)


async def _write(client: httpx.AsyncClient, ledger: Ledger, stop: asyncio.Event, n: int) -> None:
    while not stop.is_set():
        if n % 3:
            response = await client.post("/increment", json={"key": KEY, "value": 1})
            value = 1
        else:
            batch = [{"key": KEY, "value": 2}, {"key": f"{KEY}/other", "value": 1}]
            response = await client.post("/increments", json={"increments": batch})
            value = 2
        if response.status_code == 202:
            ledger.answered.append((time.time(), value))
        n += 3
        await asyncio.sleep(0.005)


async def _read(client: httpx.AsyncClient, ledger: Ledger, stop: asyncio.Event) -> None:
    while not stop.is_set():
        response = await client.get(f"/counters/{KEY}")
        if response.status_code == 200:
            data = response.json()["data"]
            as_of = data["as_of"]
            moment = None if as_of is None else datetime.fromisoformat(as_of).timestamp()
            ledger.reads.append((time.time(), data["value"], moment))
        await asyncio.sleep(0.02)


async def test_every_increment_answered_before_as_of_is_in_the_value(pipeline: Pipeline) -> None:
    url = await pipeline.start_ingress()
    aggregator = pipeline.start("aggregator", "aggregator", flush_interval_ms="700")
    ledger, stop = Ledger(), asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        tasks = [asyncio.create_task(_write(client, ledger, stop, n)) for n in range(3)]
        tasks.append(asyncio.create_task(_read(client, ledger, stop)))
        await asyncio.sleep(4)
        aggregator.send_signal(signal.SIGKILL)  # lag: nothing is flushed for a while
        aggregator.wait()
        killed_at = time.time()
        await asyncio.sleep(4)
        pipeline.start("aggregator", "aggregator-again", flush_interval_ms="700")
        await asyncio.sleep(8)
        stop.set()
        await asyncio.gather(*tasks)

    timed = [(t, value, as_of) for t, value, as_of in ledger.reads if as_of is not None]
    assert len(timed) > 50, f"too few reads with an as_of: {len(ledger.reads)} reads in all"
    for read_at, value, as_of in timed:
        owed = ledger.accepted_before(as_of)
        assert value >= owed, (
            f"a read at {read_at:.3f} says as_of {as_of:.3f} and value {value}, but {owed} "
            "was answered 202 before that as_of"
        )
        assert as_of <= read_at, "as_of is never in the future"
    # the check had something to check: the value lagged the writes, and as_of said so
    lagging = [
        (read_at, as_of)
        for read_at, value, as_of in timed
        if read_at > killed_at + 1 and value < ledger.accepted_before(read_at)
    ]
    assert lagging, "the reads never fell behind the writes while the aggregator was down"
    assert any(read_at - as_of > 2 for read_at, as_of in lagging), "as_of hid the lag"
    # and then caught up: as_of moved past the kill, and the total is every 202, exactly once
    assert timed[-1][2] > killed_at + 4
    await pipeline.wait_caught_up()
    totals = await pipeline.totals()
    assert totals[KEY] == sum(value for _, value in ledger.answered)
