"""Steady HTTP load on the ingress, keeping the sum of every increment that got a 202."""

from __future__ import annotations

import asyncio
import random
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
