"""Fakes of what the ingress app is built around: a publisher and a reader of totals."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from distcount_ingress import Unavailable
from distcount_store import StoreError

MAX_BODY_BYTES = 1024


class FakePublisher:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.batches: list[list[tuple[bytes, bytes]]] = []
        self.failure: Unavailable | None = None
        self.check_failure: Exception | None = None

    async def publish(self, key: bytes, value: bytes) -> None:
        if self.failure is not None:
            raise self.failure
        self.records.append((key, value))

    async def publish_batch(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        if self.failure is not None:
            raise self.failure
        self.batches.append(list(records))

    async def check(self, timeout_s: float) -> None:
        if self.check_failure is not None:
            raise self.check_failure


class FakeCounters:
    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.failure: StoreError | None = None
        self.stalled: list[str] = []

    async def read(self, key: str) -> int | None:
        if self.failure is not None:
            raise self.failure
        return self.totals.get(key)

    async def check(self, timeout_s: float) -> None:
        if self.failure is not None:
            raise self.failure

    async def stalls(self, timeout_s: float) -> list[str]:
        if self.failure is not None:
            raise self.failure
        return self.stalled


async def post(
    client: httpx.AsyncClient, path: str, body: bytes, content_type: str | None
) -> httpx.Response:
    headers = {} if content_type is None else {"content-type": content_type}
    return await client.post(path, content=body, headers=headers)


JSON = "application/json"
