"""GET /counters/{key}, routing, health and the OpenAPI document."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from distcount_codec import increment_schema
from distcount_ingress import KafkaUnavailable
from distcount_ingress._app import MAX_BATCH_ITEMS
from distcount_store import DatabaseUnavailable
from tests.unit.ingress.fakes import FakeCounters, FakePublisher

# --- GET /counters/{key} ----------------------------------------------------------------------


async def test_a_counter_is_read_exactly_even_past_64_bits(
    client: httpx.AsyncClient, counters: FakeCounters
) -> None:
    counters.totals = {"small": -3, "big": 2**70, "a/b c": 5}
    # as_of is null until every partition has flushed (test_read_side.py)
    small = (await client.get("/counters/small")).json()
    assert small == {"data": {"key": "small", "value": -3, "as_of": None}}
    response = await client.get("/counters/big")
    assert response.status_code == 200
    assert response.content == (
        b'{"data":{"key":"big","value":1180591620717411303424,"as_of":null}}'
    )
    slashed = await client.get("/counters/a%2Fb%20c")
    assert slashed.json() == {"data": {"key": "a/b c", "value": 5, "as_of": None}}


async def test_an_unknown_counter_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/counters/nope")
    assert response.status_code == 404
    assert response.json() == {"errors": {"key": ["not found"]}}


@pytest.mark.parametrize("path", ["/counters/", "/counters/a%07b", "/counters/" + "k" * 257])
async def test_a_bad_counter_key_is_422(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 422
    assert "key" in response.json()["errors"]


@pytest.mark.parametrize("key", ["a\nb", "a\n", "\n", "a\r\nb", "a\x85"])
async def test_a_counter_key_with_control_characters_gets_the_422_of_a_write(
    client: httpx.AsyncClient, counters: FakeCounters, key: str
) -> None:
    counters.totals = {"a": 5, "a\nb": 1}  # a newline at the end must not read "a"
    written = await client.post("/increment", json={"key": key, "value": 1})
    assert written.status_code == 422
    response = await client.get("/counters/" + quote(key, safe=""))
    assert response.status_code == 422
    assert (
        response.json()
        == written.json()
        == {"errors": {"key": ["must not contain control characters"]}}
    )


async def test_an_unreachable_database_gives_503(
    client: httpx.AsyncClient, counters: FakeCounters
) -> None:
    counters.failure = DatabaseUnavailable("connection refused")
    response = await client.get("/counters/k")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"errors": {"postgres": ["connection refused"]}}


# --- routing, health, OpenAPI -----------------------------------------------------------------


async def test_unknown_paths_and_methods_answer_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json() == {"errors": {"path": ["not found"]}}
    wrong = await client.get("/increment")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json() == {"errors": {"method": ["method not allowed"]}}
    assert (await client.delete("/counters/k")).status_code == 405


async def test_health(
    client: httpx.AsyncClient, publisher: FakePublisher, counters: FakeCounters
) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "checks": {"kafka": "ok", "postgres": "ok", "counting": "ok"},
    }
    counters.stalled = ["partition 3 of t stopped at offset 7 since …: lz4"]
    ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {
        "kafka": "ok",
        "postgres": "ok",
        "counting": "stopped: partition 3 of t stopped at offset 7 since …: lz4",
    }
    publisher.check_failure = KafkaUnavailable("no broker")
    counters.failure = DatabaseUnavailable("no server")
    ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "checks": {
            "kafka": "error: no broker",
            "postgres": "error: no server",
            "counting": "unknown: PostgreSQL does not answer",
        },
    }


async def test_the_openapi_document_describes_the_contract(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/increment",
        "/increments",
        "/counters/{key}",
        "/counters/{key}/history",
        "/counters",
        "/counters/top",
        "/writes/{token}",
        "/",
        "/health/live",
        "/health/ready",
        "/openapi.json",
    }
    # the codec's fragments, whose agreement with the rules tests/unit/test_openapi_rules.py checks
    assert document["components"]["schemas"]["Increment"] == increment_schema()
    assert (
        document["components"]["schemas"]["IncrementBatch"]["properties"]["increments"]["maxItems"]
        == MAX_BATCH_ITEMS
    )
    post = document["paths"]["/increment"]["post"]["responses"]
    assert set(post) == {"202", "400", "408", "413", "415", "422", "503"}
    assert "Retry-After" in post["503"]["headers"]
