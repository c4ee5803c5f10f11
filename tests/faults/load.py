"""Steady HTTP load on the ingress, keeping what every request sent and the answer it got."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class Load:
    url: str
    keys: int = 20
    concurrency: int = 8
    accepted: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.concurrency)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    @property
    def sent_ok(self) -> int:
        return self.statuses[202]

    def expected(self) -> dict[str, int]:
        return {k: v for k, v in self.accepted.items() if v != 0}

    async def _worker(self, seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                key = f"k{rng.randrange(self.keys)}"
                value = rng.choice([1, 1, 1, 2, 7, -1])
                try:
                    response = await client.post("/increment", json={"key": key, "value": value})
                except httpx.HTTPError:
                    self.errors += 1
                    await asyncio.sleep(0.05)
                    continue
                self.statuses[response.status_code] += 1
                if response.status_code == 202:
                    self.accepted[key] += value
                else:
                    await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Answer:
    at_s: float  # time.monotonic() when the answer came
    batch: bool
    status: int | None  # None: no HTTP answer at all
    increments: tuple[tuple[str, int], ...]
    detail: str  # the body of an answer other than 202, or the transport error


@dataclass
class MixedLoad:
    """Singles and, one request in `batch_every`, batches to POST /increments. Every increment
    has a key of its own, so the end can tell exactly which ones were counted, and how often."""

    url: str
    concurrency: int = 48
    batch_every: int = 10
    batch_size: int = 5
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.concurrency)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def batches_since(self, since_s: float) -> list[Answer]:
        return [a for a in self.answers if a.batch and a.at_s >= since_s]

    async def _worker(self, worker: int) -> None:
        rng = random.Random(worker)
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            for request in itertools.count():
                if self._stop.is_set():
                    return
                batch = rng.randrange(self.batch_every) == 0
                size = self.batch_size if batch else 1
                increments = tuple(
                    (f"w{worker}-{request}-{i}", rng.randint(1, 9)) for i in range(size)
                )
                items = [{"key": key, "value": value} for key, value in increments]
                try:
                    if batch:
                        response = await client.post("/increments", json={"increments": items})
                    else:
                        response = await client.post("/increment", json=items[0])
                    status: int | None = response.status_code
                    detail = "" if status == 202 else response.text
                except httpx.HTTPError as exc:
                    status, detail = None, repr(exc)
                self.answers.append(Answer(time.monotonic(), batch, status, increments, detail))
                if status != 202:
                    await asyncio.sleep(0.05)
