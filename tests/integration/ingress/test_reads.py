"""Reads of totals, health, and the OpenAPI document, against a real database."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from distcount_store import connect
from tests.conftest import Services
from tests.integration.ingress.support import (
    free_port,
    ingress,
    settings_for,
)

pytestmark = pytest.mark.integration


# --- GET /counters/{key} ----------------------------------------------------------------------


async def test_a_counter_is_read_from_postgres_exactly(
    services: Services, topic: str, database: str
) -> None:
    conn = await connect(database)
    try:
        await conn.execute(
            "INSERT INTO counter_totals (key, value) VALUES ($1, $2), ($3, $4)",
            "big",
            Decimal(2**70),
            "neg",
            Decimal(-42),
        )
    finally:
        await conn.close()
    async with ingress(settings_for(services, topic, database)) as app:
        unknown = await app.client.get("/counters/unknown")
        assert unknown.status_code == 404
        assert unknown.json() == {"errors": {"key": ["not found"]}}
        big = await app.client.get("/counters/big")
        assert big.status_code == 200
        # no aggregator has flushed this topic: nothing can be promised about when
        assert big.json() == {"data": {"key": "big", "value": 2**70, "as_of": None}}
        assert b"1180591620717411303424" in big.content
        assert (await app.client.get("/counters/neg")).json()["data"]["value"] == -42
        assert (await app.client.get("/counters/a%07")).status_code == 422


# --- health -----------------------------------------------------------------------------------


async def test_ready_when_kafka_and_postgres_answer(
    services: Services, topic: str, database: str
) -> None:
    async with ingress(settings_for(services, topic, database)) as app:
        assert (await app.client.get("/health/live")).json() == {"status": "ok"}
        ready = await app.client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ok",
            "checks": {"kafka": "ok", "postgres": "ok", "counting": "ok"},
        }


@pytest.mark.parametrize("where", ["missing database", "closed port"])
async def test_not_ready_names_postgres_when_it_cannot_be_reached(
    services: Services, topic: str, where: str
) -> None:
    if where == "missing database":
        url = services.database("distcount_no_such_database")
    else:
        url = f"postgresql://distcount:distcount@127.0.0.1:{free_port()}/distcount"
    async with ingress(settings_for(services, topic, url)) as app:
        ready = await app.client.get("/health/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["kafka"] == "ok"
        assert body["checks"]["postgres"].startswith("error: ")
        counter = await app.client.get("/counters/k")
        assert counter.status_code == 503
        assert list(counter.json()["errors"]) == ["postgres"]
        # writes do not need PostgreSQL
        assert (
            await app.client.post("/increment", json={"key": "k", "value": 1})
        ).status_code == 202


# --- OpenAPI and the process ------------------------------------------------------------------


async def test_the_openapi_document_lists_every_route(
    services: Services, topic: str, database: str
) -> None:
    async with ingress(settings_for(services, topic, database)) as app:
        response = await app.client.get("/openapi.json")
    document = orjson.loads(response.content)
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) >= {"/increment", "/increments", "/counters/{key}"}
    assert document["paths"]["/increments"]["post"]["requestBody"]["required"] is True
