"""The ingress's request handling around a fake publisher and a fake reader of totals, and
the batching of single records around a fake producer.

What reaches Kafka and PostgreSQL for real is in tests/integration/test_ingress.py; here every
status and body of the HTTP contract is checked without a broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import orjson
import pytest

from distcount_codec import increment_schema
from distcount_config import Settings, load
from distcount_ingress import KafkaUnavailable, Overloaded, Unavailable, create_app
from distcount_ingress._app import MAX_BATCH_ITEMS
from distcount_ingress._batcher import Batcher
from distcount_metrics import ingress_metrics
from distcount_store import DatabaseUnavailable, QueryFailed, StoreError

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


@pytest.fixture
def settings() -> Settings:
    return load({"DISTCOUNT_MAX_BODY_BYTES": str(MAX_BODY_BYTES)})


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


async def _post(
    client: httpx.AsyncClient, path: str, body: bytes, content_type: str | None
) -> httpx.Response:
    headers = {} if content_type is None else {"content-type": content_type}
    return await client.post(path, content=body, headers=headers)


JSON = "application/json"


# --- POST /increment --------------------------------------------------------------------------


async def test_an_increment_is_published_and_echoed(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    response = await client.post("/increment", json={"key": "c1", "value": 1})
    assert response.status_code == 202
    assert response.headers["content-type"] == JSON
    assert response.json() == {"data": {"key": "c1", "value": 1}}
    assert publisher.records == [(b"c1", b'{"key":"c1","value":1}')]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        'Application/JSON;charset="UTF-8"',
        "application/vnd.distcount+json",
        "application/merge-patch+json; charset=utf8",
    ],
)
async def test_json_content_types_are_accepted(
    client: httpx.AsyncClient, publisher: FakePublisher, content_type: str
) -> None:
    response = await _post(client, "/increment", b'{"key": "k", "value": -5}', content_type)
    assert response.status_code == 202, response.text
    assert publisher.records == [(b"k", b'{"key":"k","value":-5}')]


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/xml", "application/json; charset=latin-1", "json"],
)
async def test_other_content_types_get_415(
    client: httpx.AsyncClient, publisher: FakePublisher, content_type: str | None
) -> None:
    response = await _post(client, "/increment", b'{"key": "k", "value": 1}', content_type)
    assert response.status_code == 415
    assert list(response.json()["errors"]) == ["content-type"]
    assert publisher.records == []


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"value": 1}', 422, "key"),
        (b'{"key": "", "value": 1}', 422, "key"),
        (orjson.dumps({"key": "k" * 257, "value": 1}), 422, "key"),
        (orjson.dumps({"key": "\u00e9" * 129, "value": 1}), 422, "key"),  # 258 bytes
        (b'{"key": "a\\u0007b", "value": 1}', 422, "key"),
        (b'{"key": "a\\u0085b", "value": 1}', 422, "key"),
        (b'{"key": 5, "value": 1}', 422, "key"),
        (b'{"key": "k"}', 422, "value"),
        (b'{"key": "k", "value": 1.5}', 422, "value"),
        (b'{"key": "k", "value": 1.0}', 422, "value"),
        (b'{"key": "k", "value": "1"}', 422, "value"),
        (b'{"key": "k", "value": 0}', 422, "value"),
        (b'{"key": "k", "value": true}', 422, "value"),
        (b'{"key": "k", "value": null}', 422, "value"),
        (b'{"key": "k", "value": 9223372036854775808}', 422, "value"),
        (b'{"key": "k", "value": -9223372036854775809}', 422, "value"),
        (b'{"key": "k", "value": 18446744073709551616}', 422, "value"),
        (b"[1, 2]", 422, "body"),
        (b"3", 422, "body"),
        (b'"text"', 422, "body"),
        (b"null", 422, "body"),
        (b"", 400, "body"),
        (b'{"key": "k", "value": 1', 400, "body"),
        (b'{"key": "\\ud800", "value": 1}', 400, "body"),
        (b'{"key": "\xff", "value": 1}', 400, "body"),
        (b'{"key": "k", "value": 1e400}', 400, "body"),
        (b"[" * 500 + b"]" * 500, 422, "body"),  # deep, yet no 5xx
    ],
)
async def test_invalid_increments_are_refused_and_not_published(
    client: httpx.AsyncClient, publisher: FakePublisher, body: bytes, status: int, field: str
) -> None:
    response = await _post(client, "/increment", body, JSON)
    assert response.status_code == status, response.text
    assert field in response.json()["errors"]
    assert all(isinstance(m, str) for m in response.json()["errors"][field])
    assert publisher.records == []


OUT_OF_RANGE = {"value": ["must be within the 64-bit signed integer range"]}


@pytest.mark.parametrize(
    "literal",
    [b"9223372036854775808", b"-9223372036854775809", b"18446744073709551616", b"-1" + b"0" * 400],
)
async def test_integers_past_int64_all_get_the_range_message(
    client: httpx.AsyncClient, publisher: FakePublisher, literal: bytes
) -> None:
    response = await _post(client, "/increment", b'{"key": "k", "value": %s}' % literal, JSON)
    assert response.status_code == 422
    assert response.json() == {"errors": OUT_OF_RANGE}
    batch = b'{"increments": [{"key": "k", "value": %s}]}' % literal
    response = await _post(client, "/increments", batch, JSON)
    assert response.status_code == 422
    assert response.json() == {
        "errors": {"increments[0].value": ["must be within the 64-bit signed integer range"]}
    }
    assert publisher.records == []
    assert publisher.batches == []


@pytest.mark.parametrize(
    ("path", "body", "errors"),
    [
        ("/increment", b'{"key": "a", "key": "b", "value": 1}', {"key": ["must not be repeated"]}),
        (
            "/increment",
            b'{"key": "a", "value": 1, "k\\u0065y": "b"}',
            {"key": ["must not be repeated"]},
        ),
        (
            "/increment",
            b'{"key": "a", "value": 1, "value": 5}',
            {"value": ["must not be repeated"]},
        ),
        (
            "/increments",
            b'{"increments": [{"key": "a", "value": 1}, {"key": "a", "value": 1, "value": 2}]}',
            {"increments[1].value": ["must not be repeated"]},
        ),
        (
            "/increments",
            b'{"increments": [{"key": "a", "value": 1}], "increments": []}',
            {"increments": ["must not be repeated"]},
        ),
    ],
)
async def test_a_member_named_twice_gets_422_and_nothing_is_published(
    client: httpx.AsyncClient,
    publisher: FakePublisher,
    path: str,
    body: bytes,
    errors: dict[str, list[str]],
) -> None:
    response = await _post(client, path, body, JSON)
    assert response.status_code == 422
    assert response.json() == {"errors": errors}
    assert publisher.records == []
    assert publisher.batches == []


async def test_nan_is_not_json_even_beside_a_long_integer(client: httpx.AsyncClient) -> None:
    body = b'{"key": "k", "value": 12345678901234567890, "x": NaN}'
    response = await _post(client, "/increment", body, JSON)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["body"]


async def test_the_extreme_int64_values_are_accepted(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    for value in (2**63 - 1, -(2**63)):
        response = await client.post("/increment", json={"key": "k", "value": value})
        assert response.status_code == 202
        assert response.json()["data"]["value"] == value
    assert len(publisher.records) == 2


async def test_a_body_over_the_limit_by_content_length_gets_413(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    body = orjson.dumps({"key": "k", "value": 1, "pad": "x" * MAX_BODY_BYTES})
    response = await _post(client, "/increment", body, JSON)
    assert response.status_code == 413
    assert "body" in response.json()["errors"]
    assert publisher.records == []


async def test_a_chunked_body_over_the_limit_gets_413(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    sent: list[int] = []  # chunks handed to the app

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"key": "k", "value": 1, "pad": "'
        for _ in range(100):
            sent.append(1)
            yield b"x" * 100
        yield b'"}'

    response = await client.post("/increment", content=chunks(), headers={"content-type": JSON})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert len(sent) < 20  # cut off at the limit, not read whole
    assert publisher.records == []


async def test_a_chunked_body_within_the_limit_is_read_whole(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"key": '
        yield b'"chunked", "val'
        yield b'ue": 7}'

    response = await client.post("/increment", content=chunks(), headers={"content-type": JSON})
    assert response.status_code == 202
    assert publisher.records == [(b"chunked", b'{"key":"chunked","value":7}')]


@pytest.mark.parametrize("failure", [KafkaUnavailable("no ack"), Overloaded("too many")])
async def test_an_unavailable_publisher_gives_503_with_retry_after(
    client: httpx.AsyncClient, publisher: FakePublisher, failure: Unavailable
) -> None:
    publisher.failure = failure
    response = await client.post("/increment", json={"key": "k", "value": 1})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"errors": {"kafka": [str(failure)]}}


# --- POST /increments -------------------------------------------------------------------------


async def test_a_batch_is_summed_per_key_and_published_at_once(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    increments = [
        {"key": "a", "value": 1},
        {"key": "b", "value": 5},
        {"key": "a", "value": 2},
        {"key": "c", "value": 3},
        {"key": "c", "value": -3},
    ]
    response = await client.post("/increments", json={"increments": increments})
    assert response.status_code == 202
    expected = [{"key": "a", "value": 3}, {"key": "b", "value": 5}]
    assert response.json() == {"data": {"increments": expected}}
    assert publisher.batches == [
        [(b"a", b'{"key":"a","value":3}'), (b"b", b'{"key":"b","value":5}')]
    ]


async def test_a_batch_summing_past_int64_is_split_into_records_within_it(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    big = 2**63 - 1
    response = await client.post(
        "/increments", json={"increments": [{"key": "a", "value": big}] * 3}
    )
    assert response.status_code == 202
    values = [item["value"] for item in response.json()["data"]["increments"]]
    assert sum(values) == 3 * big
    assert all(v <= big for v in values)
    assert len(publisher.batches[0]) == len(values)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"increments": [{"key": "a", "value": 1}, {"key": "b", "value": 1.5}]},
            "increments[1].value",
        ),
        ({"increments": [{"key": "a", "value": 1}, 7]}, "increments[1]"),
        ({"increments": []}, "increments"),
        ({"increments": {"key": "a", "value": 1}}, "increments"),
        ({"key": "a", "value": 1}, "increments"),
        ([{"key": "a", "value": 1}], "body"),
    ],
)
async def test_a_batch_with_a_bad_item_is_refused_whole(
    client: httpx.AsyncClient, publisher: FakePublisher, body: object, field: str
) -> None:
    response = await client.post("/increments", json=body)
    assert response.status_code == 422
    assert field in response.json()["errors"]
    assert publisher.batches == []


async def test_a_batch_over_the_item_limit_is_refused(
    settings: Settings, publisher: FakePublisher, counters: FakeCounters
) -> None:
    big = load({"DISTCOUNT_MAX_BODY_BYTES": str(4 << 20)})
    app = create_app(big, publisher, counters)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as c:
        response = await c.post(
            "/increments", json={"increments": [{"key": "a", "value": 1}] * 10_001}
        )
    assert response.status_code == 422
    assert "increments" in response.json()["errors"]
    assert publisher.batches == []


async def test_a_batch_the_publisher_cannot_take_gets_503(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    publisher.failure = KafkaUnavailable("transactions unavailable")
    response = await client.post("/increments", json={"increments": [{"key": "a", "value": 1}]})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"errors": {"kafka": ["transactions unavailable"]}}


# --- GET /counters/{key} ----------------------------------------------------------------------


async def test_a_counter_is_read_exactly_even_past_64_bits(
    client: httpx.AsyncClient, counters: FakeCounters
) -> None:
    counters.totals = {"small": -3, "big": 2**70, "a/b c": 5}
    assert (await client.get("/counters/small")).json() == {"data": {"key": "small", "value": -3}}
    response = await client.get("/counters/big")
    assert response.status_code == 200
    assert response.content == b'{"data":{"key":"big","value":1180591620717411303424}}'
    slashed = await client.get("/counters/a%2Fb%20c")
    assert slashed.json() == {"data": {"key": "a/b c", "value": 5}}


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
    assert set(post) == {"202", "400", "413", "415", "422", "503"}
    assert "Retry-After" in post["503"]["headers"]


# --- the single-record batching behind the publisher ------------------------------------------


class FakeBuilder:
    def __init__(self, capacity: int) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.capacity = capacity
        self.closed = False

    def append(self, *, timestamp: None, key: bytes, value: bytes) -> object | None:
        if self.closed or len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeCluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}


class FakeClient:
    cluster = FakeCluster()


class FakeProducer:
    """Takes batches like aiokafka's send_batch; the test decides when each is acknowledged."""

    client = FakeClient()

    def __init__(self, capacity: int = 100, accepting: bool = True) -> None:
        self.capacity = capacity
        self.accepting = asyncio.Event()
        if accepting:
            self.accepting.set()
        self.sent: list[FakeBuilder] = []
        self.acknowledgements: list[asyncio.Future[None]] = []

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(self.capacity)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    async def send_batch(
        self, batch: FakeBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        await self.accepting.wait()  # no room in the producer until the test says so
        assert batch.closed
        self.sent.append(batch)
        acknowledgement: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acknowledgements.append(acknowledgement)
        return acknowledgement


async def _batcher(timeout_s: float = 5.0) -> Batcher:
    batcher = Batcher("t", timeout_s=timeout_s, on_error=lambda producer, exc: None)
    await batcher.learn_partitions(FakeProducer())
    return batcher


async def test_records_of_one_loop_iteration_share_a_batch_and_the_next_waits_for_its_ack() -> None:
    producer = FakeProducer()
    batcher = await _batcher()
    first = [batcher.add(producer, b"k", b"%d" % i) for i in range(3)]
    assert len({id(outcome) for outcome in first}) == 1
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [len(b.records) for b in producer.sent] == [3]

    second = [batcher.add(producer, b"k", b"%d" % i) for i in range(2)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(producer.sent) == 1  # the first batch is still on its way
    assert not second[0].done()

    producer.acknowledgements[0].set_result(None)
    assert await first[0] is None
    for _ in range(5):
        await asyncio.sleep(0)
    assert [len(b.records) for b in producer.sent] == [3, 2]
    producer.acknowledgements[1].set_result(None)
    assert await second[0] is None


async def test_a_full_batch_goes_at_once_and_the_record_starts_the_next() -> None:
    producer = FakeProducer(capacity=2)
    batcher = await _batcher()
    outcomes = [batcher.add(producer, b"k", b"%d" % i) for i in range(3)]
    assert outcomes[0] is outcomes[1]
    assert outcomes[2] is not outcomes[0]
    for _ in range(5):
        await asyncio.sleep(0)
    assert [b.records for b in producer.sent] == [[(b"k", b"0"), (b"k", b"1")]]
    producer.acknowledgements[0].set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    assert [b.records for b in producer.sent][1:] == [[(b"k", b"2")]]
    producer.acknowledgements[1].set_result(None)
    assert await outcomes[0] is None
    assert await outcomes[2] is None


async def test_a_batch_the_producer_has_no_room_for_by_the_deadline_is_never_sent() -> None:
    producer = FakeProducer(accepting=False)
    batcher = await _batcher(timeout_s=0.05)
    outcome = batcher.add(producer, b"k", b"v")
    error = await outcome
    assert error is not None
    assert "did not acknowledge the record within 50 ms" in error
    producer.accepting.set()  # room again: the dropped batch must not go after all
    await batcher.wait_delivered(1)
    for _ in range(5):
        await asyncio.sleep(0)
    assert producer.sent == []


async def test_a_batch_handed_over_but_not_acknowledged_in_time_is_answered_at_the_deadline() -> (
    None
):
    producer = FakeProducer()
    batcher = await _batcher(timeout_s=0.05)
    outcome = batcher.add(producer, b"k", b"v")
    error = await asyncio.wait_for(outcome, 1)
    assert error is not None
    assert len(producer.sent) == 1  # handed over: it may still be written (a 503 says so)
    producer.acknowledgements[0].set_result(None)
    await batcher.wait_delivered(1)
    assert await outcome == error  # a late acknowledgement does not turn the 503 into a 202


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
        await _post(client, "/increment", b'{"key": "c1", "value": 1}', JSON)
        await _post(client, "/increment", b'{"key": "c1", "value": 1}', JSON)
        await _post(client, "/increment", b'{"key": "c1"}', JSON)
        await _post(client, "/increments", b'{"increments": [{"key": "c1", "value": 2}]}', JSON)
        await client.get("/counters/c1")
        await client.get("/counters/nope")
        await client.get("/nowhere")
        await client.get("/increment")  # 405
        publisher.failure = Overloaded("too many")
        await _post(client, "/increment", b'{"key": "c1", "value": 1}', JSON)
        publisher.failure = KafkaUnavailable("no ack")
        await _post(client, "/increments", b'{"increments": [{"key": "c1", "value": 1}]}', JSON)
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
    class Broken:
        async def read(self, key: str) -> int | None:
            raise RuntimeError("a bug")

        async def check(self, timeout_s: float) -> None:
            pass

        async def stalls(self, timeout_s: float) -> list[str]:
            return []

    metrics = ingress_metrics(_MetricsOptions())
    app = create_app(settings, publisher, Broken(), metrics=metrics)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        assert (await client.get("/counters/c1")).status_code == 500
    snapshot = metrics._recorder.collect(1.0)  # type: ignore[attr-defined]
    assert [(mt.name, tags, n) for mt, tags, n in snapshot.counters] == [
        ("ingress.requests", ("counter", 500), 1)
    ]
