"""The process entry point over real HTTP: serving, flushing on the way out, the rules' edges."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from distcount_ingress import serve
from tests.conftest import Services
from tests.integration.ingress.support import (
    consume_all,
    end_offsets,
    free_port,
    settings_for,
)

pytestmark = pytest.mark.integration


async def wait_live(client: httpx.AsyncClient, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                if (await client.get("/health/live")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


async def test_serve_answers_over_http_and_flushes_on_the_way_out(
    services: Services, topic: str, database: str
) -> None:
    port = free_port()
    settings = settings_for(services, topic, database, http_port=str(port))
    server = asyncio.create_task(serve(settings))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_live(client, 30)
            response = await client.post("/increment", json={"key": "over-http", "value": 3})
            assert response.status_code == 202
            data = response.json()["data"]
            assert data.pop("token").startswith("1.")
            assert data == {"key": "over-http", "value": 3}
            chunked = await client.post(
                "/increment",
                content=chunks([b'{"key": "x", "value": 1, "pad": "', b"x" * 4096, b'"}']),
                headers={"content-type": "application/json"},
            )
            assert chunked.status_code == 413
            assert (await client.get("/nowhere")).json() == {"errors": {"path": ["not found"]}}
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
    records = await consume_all(services.kafka_bootstrap, topic, "read_uncommitted")
    assert [(r.key, r.value) for r in records] == [(b"over-http", b'{"key":"over-http","value":3}')]


async def test_over_http_the_edges_of_the_rules_get_one_422_each(
    services: Services, topic: str, database: str
) -> None:
    """What the routing and the parsing of a real server see: a newline in a path, integers
    past 64 bits on both sides, members named twice."""
    port = free_port()
    settings = settings_for(services, topic, database, http_port=str(port))
    server = asyncio.create_task(serve(settings))
    control = {"errors": {"key": ["must not contain control characters"]}}
    out_of_range = ["must be within the 64-bit signed integer range"]
    repeated = ["must not be repeated"]
    posts = [
        ("/increment", b'{"key": "k", "value": 9223372036854775808}', {"value": out_of_range}),
        ("/increment", b'{"key": "k", "value": -9223372036854775809}', {"value": out_of_range}),
        ("/increment", b'{"key": "a", "key": "b", "value": 1}', {"key": repeated}),
        (
            "/increments",
            b'{"increments": [{"key": "a", "value": 1, "value": 2}]}',
            {"increments[0].value": repeated},
        ),
        ("/increment", b'{"key": "a\\nb", "value": 1}', control["errors"]),
    ]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_live(client, 30)
            for path, body, errors in posts:
                response = await client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
                assert (response.status_code, response.json()) == (422, {"errors": errors}), body
            for key in ("a%0Ab", "a%0A", "%0A", "a%0D%0Ab"):
                response = await client.get(f"/counters/{key}")
                assert (response.status_code, response.json()) == (422, control), key
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
    ends = await end_offsets(services.kafka_bootstrap, topic)
    assert sum(ends.values()) == 0


async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
