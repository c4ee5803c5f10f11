"""POST /increment and POST /increments: what is published, and every refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from distcount_config import Settings, load
from distcount_ingress import KafkaUnavailable, Overloaded, Unavailable, create_app
from tests.unit.ingress.fakes import JSON, MAX_BODY_BYTES, FakeCounters, FakePublisher, post

# --- POST /increment --------------------------------------------------------------------------


async def test_an_increment_is_published_and_echoed(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    response = await client.post("/increment", json={"key": "c1", "value": 1})
    assert response.status_code == 202
    assert response.headers["content-type"] == JSON
    data = response.json()["data"]
    assert data.pop("token").startswith("1."), "a read-your-writes token (test_read_side.py)"
    assert data == {"key": "c1", "value": 1}
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
    response = await post(client, "/increment", b'{"key": "k", "value": -5}', content_type)
    assert response.status_code == 202, response.text
    assert publisher.records == [(b"k", b'{"key":"k","value":-5}')]


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/xml", "application/json; charset=latin-1", "json"],
)
async def test_other_content_types_get_415(
    client: httpx.AsyncClient, publisher: FakePublisher, content_type: str | None
) -> None:
    response = await post(client, "/increment", b'{"key": "k", "value": 1}', content_type)
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
    response = await post(client, "/increment", body, JSON)
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
    response = await post(client, "/increment", b'{"key": "k", "value": %s}' % literal, JSON)
    assert response.status_code == 422
    assert response.json() == {"errors": OUT_OF_RANGE}
    batch = b'{"increments": [{"key": "k", "value": %s}]}' % literal
    response = await post(client, "/increments", batch, JSON)
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
    response = await post(client, path, body, JSON)
    assert response.status_code == 422
    assert response.json() == {"errors": errors}
    assert publisher.records == []
    assert publisher.batches == []


async def test_nan_is_not_json_even_beside_a_long_integer(client: httpx.AsyncClient) -> None:
    body = b'{"key": "k", "value": 12345678901234567890, "x": NaN}'
    response = await post(client, "/increment", body, JSON)
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
    response = await post(client, "/increment", body, JSON)
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
    data = response.json()["data"]
    assert data.pop("token").startswith("1.")
    assert data == {"increments": expected}
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


# --- Idempotency-Key --------------------------------------------------------------------------


async def test_an_idempotency_key_becomes_the_records_id_and_is_echoed(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    headers = {"Idempotency-Key": "order-17"}
    response = await client.post("/increment", json={"key": "c1", "value": 2}, headers=headers)
    assert response.status_code == 202
    assert response.json()["data"]["id"] == "order-17"
    assert publisher.records == [(b"c1", b'{"key":"c1","value":2,"id":"order-17"}')]


async def test_a_batchs_records_derive_their_ids_from_its_key(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    body = {
        "increments": [{"key": "a", "value": 1}, {"key": "b", "value": 2}, {"key": "a", "value": 3}]
    }
    response = await client.post("/increments", json=body, headers={"Idempotency-Key": "b-9"})
    assert response.status_code == 202
    (batch,) = publisher.batches
    assert [orjson.loads(value) for _, value in batch] == [
        {"key": "a", "value": 4, "id": "b-9 0"},
        {"key": "b", "value": 2, "id": "b-9 1"},
    ]


@pytest.mark.parametrize(
    "headers",
    [
        [("Idempotency-Key", "has space")],
        [("Idempotency-Key", "")],
        [("Idempotency-Key", "x" * 256)],
        [("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    ],
    ids=["space", "empty", "too-long", "twice"],
)
@pytest.mark.parametrize("path", ["/increment", "/increments"])
async def test_an_idempotency_key_that_breaks_the_rules_is_a_422(
    client: httpx.AsyncClient, publisher: FakePublisher, headers: list[tuple[str, str]], path: str
) -> None:
    body = (
        {"key": "c1", "value": 1}
        if path == "/increment"
        else {"increments": [{"key": "c1", "value": 1}]}
    )
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["Idempotency-Key"]
    assert publisher.records == []
    assert publisher.batches == []
