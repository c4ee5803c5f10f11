"""The ingress against a real broker and a real database: what a 202 puts in Kafka, what a
refusal keeps out of it, reads of totals, health, overload, and the process entry point."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from distcount_config import Settings, load, project_root
from distcount_ingress import KafkaPublisher, PostgresTotals, create_app, serve
from distcount_ingress._producers import transactional_producer_factory
from distcount_store import Database, connect, find_migrations, migrate
from tests.conftest import Services

pytestmark = pytest.mark.integration

PARTITIONS = 3
MAX_BODY_BYTES = 2048


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def topic(services: Services, topic_name: str) -> AsyncIterator[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic_name, PARTITIONS, 1)])
        yield topic_name
        await admin.delete_topics([topic_name])
    finally:
        await admin.close()


@pytest.fixture
async def database(fresh_database: str) -> str:
    root = project_root()
    assert root is not None
    await migrate(fresh_database, find_migrations(root / "migrations"))
    return fresh_database


def _settings(services: Services, topic: str, database_url: str, **extra: str) -> Settings:
    environ = {
        "DISTCOUNT_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "DISTCOUNT_DATABASE_URL": database_url,
        "DISTCOUNT_TOPIC": topic,
        "DISTCOUNT_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "DISTCOUNT_PRODUCE_TIMEOUT_MS": "15000",
    }
    environ.update({f"DISTCOUNT_{name.upper()}": value for name, value in extra.items()})
    return load(environ)


@dataclass
class Ingress:
    client: httpx.AsyncClient
    publisher: KafkaPublisher
    started: bool


@asynccontextmanager
async def ingress(settings: Settings, wait_started_s: float = 30.0) -> AsyncIterator[Ingress]:
    """The app in process, with the producers and the pool `serve()` would build."""
    publisher = KafkaPublisher(settings)
    publisher.start()
    database = await Database.open(settings.database_url, min_size=0, connect_timeout_s=3)
    try:
        started = await publisher.wait_started(wait_started_s)
        app = create_app(
            settings, publisher, PostgresTotals(database, settings.group_id, settings.topic)
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            yield Ingress(client, publisher, started)
    finally:
        await publisher.close()
        await database.close()


async def _end_offsets(
    bootstrap: str, topic: str, isolation_level: str = "read_uncommitted"
) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation_level)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        offsets: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return offsets
    finally:
        await consumer.stop()


async def _consume_all(bootstrap: str, topic: str, isolation_level: str) -> list[Any]:
    """Every record of the topic, from the beginning up to the end offsets at the call."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation_level, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        async with asyncio.timeout(30):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(timeout_ms=1000)
                records.extend(r for batch in batches.values() for r in batch)
        return records
    finally:
        await consumer.stop()


# --- POST /increment --------------------------------------------------------------------------


async def test_an_increment_is_acknowledged_by_kafka_before_the_202(
    services: Services, topic: str, database: str
) -> None:
    async with ingress(_settings(services, topic, database)) as app:
        response = await app.client.post("/increment", json={"key": "c1", "value": 1})
        assert response.status_code == 202
        assert response.json() == {"data": {"key": "c1", "value": 1}}
        # acknowledged means already in the log: no flush is needed to see it
        records = await _consume_all(services.kafka_bootstrap, topic, "read_uncommitted")
    assert [(r.key, orjson.loads(r.value)) for r in records] == [(b"c1", {"key": "c1", "value": 1})]


async def test_a_batch_is_one_record_per_key_committed_in_one_transaction(
    services: Services, topic: str, database: str
) -> None:
    increments = [
        {"key": "a", "value": 1},
        {"key": "b", "value": 10},
        {"key": "a", "value": 2},
        {"key": "c", "value": -4},
        {"key": "b", "value": 5},
    ]
    async with ingress(_settings(services, topic, database)) as app:
        assert app.started
        response = await app.client.post("/increments", json={"increments": increments})
        assert response.status_code == 202, response.text
        sent = response.json()["data"]["increments"]
        assert sorted(sent, key=lambda i: i["key"]) == [
            {"key": "a", "value": 3},
            {"key": "b", "value": 15},
            {"key": "c", "value": -4},
        ]
        again = await app.client.post(
            "/increments", json={"increments": [{"key": "d", "value": 1}]}
        )
        assert again.status_code == 202

    records = await _consume_all(services.kafka_bootstrap, topic, "read_committed")
    got = sorted((r.key, orjson.loads(r.value)["value"]) for r in records)
    assert got == [(b"a", 3), (b"b", 15), (b"c", -4), (b"d", 1)]
    assert all(orjson.loads(r.value)["key"] == r.key.decode() for r in records)


async def test_the_batch_path_answers_503_while_transactions_are_unavailable_and_singles_go_on(
    services: Services, topic: str, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the transactional producer alone is pointed at a port where no broker listens
    nowhere = f"127.0.0.1:{_free_port()}"

    def unreachable(settings: Settings, transactional_id: str) -> Callable[[], Any]:
        return transactional_producer_factory(
            load({"DISTCOUNT_KAFKA_BOOTSTRAP": nowhere}), transactional_id
        )

    monkeypatch.setattr("distcount_ingress._publisher.transactional_producer_factory", unreachable)
    async with ingress(_settings(services, topic, database), wait_started_s=3) as app:
        assert not app.started
        batch = await app.client.post(
            "/increments", json={"increments": [{"key": "b", "value": 1}]}
        )
        assert batch.status_code == 503
        assert batch.headers["retry-after"] == "1"
        assert "transactions" in batch.json()["errors"]["kafka"][0]
        single = await app.client.post("/increment", json={"key": "s", "value": 2})
        assert single.status_code == 202
        # not ready while one of the two paths answers 503, whichever it is
        ready = await app.client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["kafka"].startswith("error: Kafka transactions are not")
    records = await _consume_all(services.kafka_bootstrap, topic, "read_uncommitted")
    assert [r.key for r in records] == [b"s"]


async def test_without_a_broker_the_ingress_starts_and_answers_503(
    services: Services, topic: str, database: str
) -> None:
    settings = _settings(services, topic, database, kafka_bootstrap=f"127.0.0.1:{_free_port()}")
    async with ingress(settings, wait_started_s=1) as app:
        assert not app.started
        response = await app.client.post("/increment", json={"key": "k", "value": 1})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert list(response.json()["errors"]) == ["kafka"]
        ready = await app.client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["kafka"].startswith("error: ")
        assert ready.json()["checks"]["postgres"] == "ok"
        assert (await app.client.get("/health/live")).status_code == 200


INVALID: list[tuple[str, str, bytes, int]] = [
    ("/increment", "application/json", b'{"value": 1}', 422),
    ("/increment", "application/json", b'{"key": "", "value": 1}', 422),
    ("/increment", "application/json", orjson.dumps({"key": "k" * 257, "value": 1}), 422),
    ("/increment", "application/json", b'{"key": "a\\u0007", "value": 1}', 422),
    ("/increment", "application/json", b'{"key": "k", "value": 1.5}', 422),
    ("/increment", "application/json", b'{"key": "k", "value": "1"}', 422),
    ("/increment", "application/json", b'{"key": "k", "value": 0}', 422),
    ("/increment", "application/json", orjson.dumps({"key": "k", "value": 2**63}), 422),
    ("/increment", "application/json", b'{"key": "k", "value": true}', 422),
    ("/increment", "application/json", b'{"key": "k", "value": 1', 400),
    ("/increment", "text/plain", b'{"key": "k", "value": 1}', 415),
    (
        "/increment",
        "application/json",
        b'{"key": "k", "value": 1, "p": "' + b"x" * 4096 + b'"}',
        413,
    ),
    ("/increment", "application/json", b'[{"key": "k", "value": 1}]', 422),
    ("/increment", "application/json", b"1", 422),
    ("/increment", "application/json", b'"k"', 422),
    (
        "/increments",
        "application/json",
        b'{"increments": [{"key": "a", "value": 1}, {"key": "b", "value": 0.5}]}',
        422,
    ),
    ("/increments", "text/plain", b'{"increments": [{"key": "a", "value": 1}]}', 415),
]


async def test_refused_input_gets_its_status_and_leaves_the_topic_empty(
    services: Services, topic: str, database: str
) -> None:
    async with ingress(_settings(services, topic, database)) as app:
        assert app.started  # a working publisher that was never asked to send
        for path, content_type, body, status in INVALID:
            response = await app.client.post(
                path, content=body, headers={"content-type": content_type}
            )
            assert response.status_code == status, (body[:60], response.text)
            assert response.json()["errors"]
        bad_item = await app.client.post(
            "/increments",
            content=INVALID[-2][2],
            headers={"content-type": "application/json"},
        )
        assert list(bad_item.json()["errors"]) == ["increments[1].value"]

    ends = await _end_offsets(services.kafka_bootstrap, topic)
    assert len(ends) == PARTITIONS
    assert sum(ends.values()) == 0


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
    async with ingress(_settings(services, topic, database)) as app:
        unknown = await app.client.get("/counters/unknown")
        assert unknown.status_code == 404
        assert unknown.json() == {"errors": {"key": ["not found"]}}
        big = await app.client.get("/counters/big")
        assert big.status_code == 200
        assert big.json() == {"data": {"key": "big", "value": 2**70}}
        assert b"1180591620717411303424" in big.content
        assert (await app.client.get("/counters/neg")).json()["data"]["value"] == -42
        assert (await app.client.get("/counters/a%07")).status_code == 422


# --- health -----------------------------------------------------------------------------------


async def test_ready_when_kafka_and_postgres_answer(
    services: Services, topic: str, database: str
) -> None:
    async with ingress(_settings(services, topic, database)) as app:
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
        url = f"postgresql://distcount:distcount@127.0.0.1:{_free_port()}/distcount"
    async with ingress(_settings(services, topic, url)) as app:
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


# --- overload ---------------------------------------------------------------------------------


async def test_past_max_inflight_sends_the_answer_is_503_and_only_202s_are_in_kafka(
    services: Services, topic: str, database: str
) -> None:
    settings = _settings(services, topic, database, max_inflight_sends="1")
    async with ingress(settings) as app:
        assert app.started
        responses = await asyncio.gather(
            *(app.client.post("/increment", json={"key": f"k{i}", "value": 1}) for i in range(60))
        )
        assert app.publisher.inflight_sends == 0
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {202, 503}
    rejected = [r for r in responses if r.status_code == 503]
    assert rejected
    assert all(r.headers["retry-after"] == "1" for r in rejected)
    accepted = {r.json()["data"]["key"] for r in responses if r.status_code == 202}
    assert accepted

    records = await _consume_all(services.kafka_bootstrap, topic, "read_uncommitted")
    assert sorted(r.key.decode() for r in records) == sorted(accepted)
    ends = await _end_offsets(services.kafka_bootstrap, topic)
    assert sum(ends.values()) == len(accepted)


async def test_past_the_deadline_the_answer_is_503_and_every_202_is_in_kafka(
    services: Services, topic: str, database: str
) -> None:
    # a millisecond is less than the broker's round trip: most requests miss their deadline
    settings = _settings(services, topic, database, produce_timeout_ms="1")
    async with ingress(settings) as app:
        assert app.started
        responses = [
            await app.client.post("/increment", json={"key": f"k{i}", "value": 1})
            for i in range(20)
        ]
        await asyncio.sleep(1)  # what was handed to the producer in time has landed by now
    rejected = [r for r in responses if r.status_code == 503]
    assert rejected
    assert all(r.headers["retry-after"] == "1" for r in rejected)
    reasons = [r.json()["errors"]["kafka"][0] for r in rejected]
    assert any("did not acknowledge the record within 1 ms" in reason for reason in reasons)
    accepted = {r.json()["data"]["key"] for r in responses if r.status_code == 202}
    assert len(accepted) + len(rejected) == len(responses)
    # never a 202 for a record that is not in Kafka (a 503'd one may be there too: see 503)
    records = await _consume_all(services.kafka_bootstrap, topic, "read_uncommitted")
    assert accepted <= {r.key.decode() for r in records}


# --- OpenAPI and the process ------------------------------------------------------------------


async def test_the_openapi_document_lists_every_route(
    services: Services, topic: str, database: str
) -> None:
    async with ingress(_settings(services, topic, database)) as app:
        response = await app.client.get("/openapi.json")
    document = orjson.loads(response.content)
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) >= {"/increment", "/increments", "/counters/{key}"}
    assert document["paths"]["/increments"]["post"]["requestBody"]["required"] is True


async def _wait_live(client: httpx.AsyncClient, timeout_s: float) -> None:
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
    port = _free_port()
    settings = _settings(services, topic, database, http_port=str(port))
    server = asyncio.create_task(serve(settings))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await _wait_live(client, 30)
            response = await client.post("/increment", json={"key": "over-http", "value": 3})
            assert response.status_code == 202
            assert response.json() == {"data": {"key": "over-http", "value": 3}}
            chunked = await client.post(
                "/increment",
                content=_chunks([b'{"key": "x", "value": 1, "pad": "', b"x" * 4096, b'"}']),
                headers={"content-type": "application/json"},
            )
            assert chunked.status_code == 413
            assert (await client.get("/nowhere")).json() == {"errors": {"path": ["not found"]}}
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
    records = await _consume_all(services.kafka_bootstrap, topic, "read_uncommitted")
    assert [(r.key, r.value) for r in records] == [(b"over-http", b'{"key":"over-http","value":3}')]


async def test_over_http_the_edges_of_the_rules_get_one_422_each(
    services: Services, topic: str, database: str
) -> None:
    """What the routing and the parsing of a real server see: a newline in a path, integers
    past 64 bits on both sides, members named twice."""
    port = _free_port()
    settings = _settings(services, topic, database, http_port=str(port))
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
            await _wait_live(client, 30)
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
    ends = await _end_offsets(services.kafka_bootstrap, topic)
    assert sum(ends.values()) == 0


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
