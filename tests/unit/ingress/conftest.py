"""The app around fakes: every status and body of the HTTP contract, without a broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from distcount_config import Settings, load
from distcount_ingress import create_app
from tests.unit.ingress.fakes import MAX_BODY_BYTES, FakeCounters, FakePublisher


@pytest.fixture
def settings() -> Settings:
    # reads with after=TOKEN give up quickly: the fakes never flush on their own
    return load(
        {"DISTCOUNT_MAX_BODY_BYTES": str(MAX_BODY_BYTES), "DISTCOUNT_READ_AFTER_TIMEOUT_MS": "300"}
    )


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def counters() -> FakeCounters:
    return FakeCounters()


@pytest.fixture
async def client(
    settings: Settings, publisher: FakePublisher, counters: FakeCounters
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, publisher, counters)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        yield client
