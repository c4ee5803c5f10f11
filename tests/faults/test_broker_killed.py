"""The Kafka broker killed with SIGKILL under mixed load (one request in ten a batch) and
restarted, again and again: after each restart batches are accepted again within a bound, and
readiness does not claim the ingress ready while they are not. The end checks every increment:
each one that got a 202 counted exactly once, none counted twice, each batch whole or not at all.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import PrivateKafka, make_pipeline
from tests.faults.load import Answer, MixedLoad
from tests.integration.pipeline import Pipeline, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ROUNDS = 5
# Seconds from the broker answering again to the first batch answered 202.
RECOVERY_BOUND_S = 30.0
# Readiness may turn 200 a little before the first batch is committed (a transaction takes a
# round trip or two to the broker, and the next batch must come along), never much before.
READY_AHEAD_BOUND_S = 5.0


@dataclass
class Readiness:
    """GET /health/ready, polled without pause: (time, status, the kafka check) per answer."""

    url: str
    answers: list[tuple[float, int | None, str]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def between(self, start_s: float, end_s: float) -> list[tuple[float, int | None, str]]:
        return [a for a in self.answers if start_s <= a[0] < end_s]

    async def _poll(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            while True:
                try:
                    response = await client.get("/health/ready")
                    check = response.json()["checks"]["kafka"]
                    self.answers.append((time.monotonic(), response.status_code, check))
                except httpx.HTTPError as exc:
                    self.answers.append((time.monotonic(), None, repr(exc)))
                await asyncio.sleep(0.25)


@dataclass(frozen=True)
class Round:
    killed_s: float
    back_s: float  # the broker answers metadata requests again
    accepted_s: float  # the first batch answered 202 after that

    @property
    def recovery_s(self) -> float:
        return self.accepted_s - self.back_s


async def _kill_and_restart(
    broker: PrivateKafka, load: MixedLoad, readiness: Readiness, rng: random.Random, number: int
) -> Round:
    killed_s = time.monotonic()
    await broker.kill()
    await asyncio.sleep(rng.uniform(3.0, 15.0))  # restarted well within 30 s
    await broker.restart()
    back_s = time.monotonic()

    async def batch_accepted() -> bool:
        return any(a.status == 202 for a in load.batches_since(back_s))

    try:
        await wait_for(batch_accepted, RECOVERY_BOUND_S, "a batch to be accepted")
    except AssertionError as exc:
        refusals = {a.detail for a in load.batches_since(back_s)}
        ready = {(s, check) for _, s, check in readiness.between(back_s, time.monotonic())}
        raise AssertionError(
            f"round {number}: {exc} after the broker was back; batches got {refusals}; "
            f"readiness answered {ready}"
        ) from None
    accepted_s = min(a.at_s for a in load.batches_since(back_s) if a.status == 202)
    return Round(killed_s, back_s, accepted_s)


def _check_readiness(readiness: Readiness, round_: Round, number: int) -> None:
    outage = readiness.between(round_.killed_s, round_.back_s)
    assert any(status == 503 for _, status, _ in outage), (number, outage)
    # from the restart to the first accepted batch: ready only just before that batch
    early = [
        answer
        for answer in readiness.between(round_.back_s, round_.accepted_s)
        if answer[1] == 200 and answer[0] < round_.accepted_s - READY_AHEAD_BOUND_S
    ]
    assert not early, f"round {number}: ready while batches were refused: {early[:3]}"


def _check_counted(answers: list[Answer], totals: dict[str, int]) -> dict[str, int]:
    """Every 202 counted once; a refused request counted once or not at all, a batch whole."""
    sent = {key for answer in answers for key, _ in answer.increments}
    assert not set(totals) - sent, "counted keys no request sent"
    late = {"single": 0, "batch": 0}
    for answer in answers:
        expected = [value for _, value in answer.increments]
        counted = [totals.get(key) for key, _ in answer.increments]
        if answer.status == 202:
            assert counted == expected, answer
        elif counted == expected:
            late["batch" if answer.batch else "single"] += 1
        else:
            assert counted == [None] * len(counted), answer
    return late


async def test_batches_recover_each_time_the_broker_is_killed_and_restarted(
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
    url = await pipeline.start_ingress()
    pipeline.start("aggregator", "aggregator")
    load = MixedLoad(url)
    readiness = Readiness(url)
    rng = random.Random(7)
    rounds: list[Round] = []
    load.start()
    readiness.start()
    try:
        for number in range(1, ROUNDS + 1):
            # a random moment under load: inside a transaction, or between two
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            rounds.append(await _kill_and_restart(broker, load, readiness, rng, number))
            _check_readiness(readiness, rounds[-1], number)
        await asyncio.sleep(2)
    finally:
        await readiness.stop()
        await load.stop()

    await pipeline.wait_caught_up(timeout_s=120)
    late = _check_counted(load.answers, await pipeline.totals())
    accepted = sum(1 for a in load.answers if a.status == 202 and a.batch)
    print(
        f"recovery after each restart: {[round(r.recovery_s, 1) for r in rounds]} s; "
        f"{len(load.answers)} requests, {accepted} batches accepted; "
        f"refused yet counted: {late}"
    )
    assert accepted > 20
