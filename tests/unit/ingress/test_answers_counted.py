"""What each answer reports to the metrics, through the real hooks and recorder; and the
answers a failing handler or database gives."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from distcount_config import Settings
from distcount_ingress import KafkaUnavailable, Overloaded, create_app
from distcount_metrics import ingress_metrics
from distcount_store import DatabaseUnavailable, QueryFailed
from tests.unit.ingress.fakes import JSON, FakeCounters, FakePublisher, post

# -- metrics: what each answer reports, through the real hooks and recorder ----------------------


@dataclass(frozen=True)
class _MetricsOptions:
    reporter: str = "console"
    statsd_host: str = "127.0.0.1"
    statsd_port: int = 8125
    interval_ms: int = 60_000
    sample_rate: float = 1.0
    tags: tuple[str, ...] = ()


async def test_each_answer_is_counted_by_route_and_status(
    settings: Settings, publisher: FakePublisher, counters: FakeCounters
) -> None:
    metrics = ingress_metrics(_MetricsOptions())
    app = create_app(settings, publisher, counters, metrics=metrics)
    counters.totals["c1"] = 5
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ingress"
    ) as client:
        await post(client, "/increment", b'{"key": "c1", "value": 1}', JSON)
        await post(client, "/increment", b'{"key": "c1", "value": 1}', JSON)
        await post(client, "/increment", b'{"key": "c1"}', JSON)
        await post(client, "/increments", b'{"increments": [{"key": "c1", "value": 2}]}', JSON)
        await client.get("/counters/c1")
        await client.get("/counters/nope")
        await client.get("/nowhere")
        await client.get("/increment")  # 405
        publisher.failure = Overloaded("too many")
        await post(client, "/increment", b'{"key": "c1", "value": 1}', JSON)
        publisher.failure = KafkaUnavailable("no ack")
        await post(client, "/increments", b'{"increments": [{"key": "c1", "value": 1}]}', JSON)
        counters.failure = DatabaseUnavailable("down")
        await client.get("/counters/c1")
    snapshot = metrics._recorder.collect(1.0)  # type: ignore[attr-defined]

    counts = {(mt.name, tags): n for mt, tags, n in snapshot.counters}
    assert counts == {
        ("ingress.requests", ("increment", 202)): 2,
        ("ingress.requests", ("increment", 422)): 1,
        ("ingress.requests", ("increment", 503)): 1,
        ("ingress.requests", ("increments", 202)): 1,
        ("ingress.requests", ("increments", 503)): 1,
        ("ingress.requests", ("counter", 200)): 1,
        ("ingress.requests", ("counter", 404)): 1,
        ("ingress.requests", ("counter", 503)): 1,
        ("ingress.requests", ("unmatched", 404)): 1,
        ("ingress.requests", ("unmatched", 405)): 1,
        ("ingress.unavailable", ("overloaded",)): 1,
        ("ingress.unavailable", ("kafka",)): 1,
        ("ingress.unavailable", ("postgres",)): 1,
    }
    timed = {(mt.name, tags): len(values) for mt, tags, _, values in snapshot.timers}
    # unmatched requests are counted, not timed; produce time only for acknowledged records
    assert timed == {
        ("ingress.request.duration", ("increment",)): 4,
        ("ingress.request.duration", ("increments",)): 2,
        ("ingress.request.duration", ("counter",)): 3,
        ("ingress.produce.duration", ("single",)): 2,
        ("ingress.produce.duration", ("batch",)): 1,
    }


async def test_a_query_postgresql_refuses_is_a_500_not_a_503(
    settings: Settings, publisher: FakePublisher, counters: FakeCounters
) -> None:
    # a 503 says "try again": here only a change of the setup helps
    counters.failure = QueryFailed("reading counter 'k': InsufficientPrivilegeError: denied")
    transport = httpx.ASGITransport(
        app=create_app(settings, publisher, counters), raise_app_exceptions=False
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        response = await client.get("/counters/k")
    assert response.status_code == 500
    assert response.json() == {"errors": {"server": ["internal error"]}}


async def test_a_handler_that_fails_is_counted_as_500(
    settings: Settings, publisher: FakePublisher
) -> None:
    class Broken(FakeCounters):
        async def read(self, key: str) -> int | None:
            raise RuntimeError("a bug")

    metrics = ingress_metrics(_MetricsOptions())
    app = create_app(settings, publisher, Broken(), metrics=metrics)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        assert (await client.get("/counters/c1")).status_code == 500
    snapshot = metrics._recorder.collect(1.0)  # type: ignore[attr-defined]
    assert [(mt.name, tags, n) for mt, tags, n in snapshot.counters] == [
        ("ingress.requests", ("counter", 500), 1)
    ]
