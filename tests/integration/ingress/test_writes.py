"""What a 202 puts in Kafka and what a refusal keeps out of it, with and without a broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from distcount_config import Settings, load
from distcount_ingress import _tokens
from distcount_ingress._producers import transactional_producer_factory
from tests.conftest import Services
from tests.integration.ingress.support import (
    PARTITIONS,
    consume_all,
    end_offsets,
    free_port,
    ingress,
    settings_for,
)

pytestmark = pytest.mark.integration


# --- POST /increment --------------------------------------------------------------------------


async def test_an_increment_is_acknowledged_by_kafka_before_the_202(
    services: Services, topic: str, database: str
) -> None:
    async with ingress(settings_for(services, topic, database)) as app:
        response = await app.client.post("/increment", json={"key": "c1", "value": 1})
        assert response.status_code == 202
        data = response.json()["data"]
        token = data.pop("token")
        assert data == {"key": "c1", "value": 1}
        # acknowledged means already in the log: no flush is needed to see it
        records = await consume_all(services.kafka_bootstrap, topic, "read_uncommitted")
    assert [(r.key, orjson.loads(r.value)) for r in records] == [(b"c1", {"key": "c1", "value": 1})]
    # the token names where the record is
    assert _tokens.decode(token) == {records[0].partition: records[0].offset}


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
    async with ingress(settings_for(services, topic, database)) as app:
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

    records = await consume_all(services.kafka_bootstrap, topic, "read_committed")
    got = sorted((r.key, orjson.loads(r.value)["value"]) for r in records)
    assert got == [(b"a", 3), (b"b", 15), (b"c", -4), (b"d", 1)]
    assert all(orjson.loads(r.value)["key"] == r.key.decode() for r in records)


async def test_the_batch_path_answers_503_while_transactions_are_unavailable_and_singles_go_on(
    services: Services, topic: str, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the transactional producer alone is pointed at a port where no broker listens
    nowhere = f"127.0.0.1:{free_port()}"

    def unreachable(settings: Settings, transactional_id: str) -> Callable[[], Any]:
        return transactional_producer_factory(
            load({"DISTCOUNT_KAFKA_BOOTSTRAP": nowhere}), transactional_id
        )

    monkeypatch.setattr("distcount_ingress._publisher.transactional_producer_factory", unreachable)
    async with ingress(settings_for(services, topic, database), wait_started_s=3) as app:
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
    records = await consume_all(services.kafka_bootstrap, topic, "read_uncommitted")
    assert [r.key for r in records] == [b"s"]


async def test_without_a_broker_the_ingress_starts_and_answers_503(
    services: Services, topic: str, database: str
) -> None:
    settings = settings_for(services, topic, database, kafka_bootstrap=f"127.0.0.1:{free_port()}")
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
    async with ingress(settings_for(services, topic, database)) as app:
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

    ends = await end_offsets(services.kafka_bootstrap, topic)
    assert len(ends) == PARTITIONS
    assert sum(ends.values()) == 0
