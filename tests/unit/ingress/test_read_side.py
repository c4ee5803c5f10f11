"""The read side over fakes: tokens on writes, as_of, read-your-writes, history, listing, top."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest

from distcount_ingress import _params, _tokens
from tests.unit.ingress.fakes import FakeCounters, FakePublisher

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 30, 12, 0, 5, tzinfo=UTC)
MINUTE = 60_000
BASE_MS = 1_800_000_000_000  # 2027-01-15T08:00:00Z, a whole hour


async def test_a_202_carries_a_token_naming_what_it_wrote(client: httpx.AsyncClient) -> None:
    first = await client.post("/increment", json={"key": "a", "value": 1})
    second = await client.post("/increment", json={"key": "b", "value": 2})
    assert first.status_code == second.status_code == 202
    assert first.json()["data"]["key"] == "a"
    assert _tokens.decode(first.json()["data"]["token"]) == {0: 0}
    assert _tokens.decode(second.json()["data"]["token"]) == {0: 1}
    batch = await client.post("/increments", json={"increments": [{"key": "a", "value": 1}]})
    assert _tokens.decode(batch.json()["data"]["token"]) == {1: 0}


async def test_as_of_is_the_earliest_of_every_partition_and_null_until_each_has_one(
    client: httpx.AsyncClient, counters: FakeCounters, publisher: FakePublisher
) -> None:
    counters.totals["a"] = 7
    counters.offsets, counters.as_of = {0: 10}, {0: T1}
    response = await client.get("/counters/a")
    assert response.json() == {"data": {"key": "a", "value": 7, "as_of": None}}  # 1 of 2
    counters.offsets[1], counters.as_of[1] = 3, T0
    await asyncio.sleep(0.15)  # past the shared answer's age
    response = await client.get("/counters/a")
    assert response.json()["data"]["as_of"] == "2026-11-30T12:00:00.000Z"
    publisher.partitions = None  # Kafka cannot say how many: no as_of can be promised
    await asyncio.sleep(0.15)
    assert (await client.get("/counters/a")).json()["data"]["as_of"] is None


async def test_a_read_after_a_token_waits_for_the_flush(
    client: httpx.AsyncClient, counters: FakeCounters
) -> None:
    token = (await client.post("/increment", json={"key": "a", "value": 1})).json()["data"]["token"]
    counters.offsets = {0: 0}  # nothing flushed yet

    async def flush_soon() -> None:
        await asyncio.sleep(0.1)
        counters.totals["a"] = 1
        counters.offsets = {0: 1}

    flushing = asyncio.create_task(flush_soon())
    response = await client.get("/counters/a", params={"after": token})
    await flushing
    assert response.status_code == 200
    assert response.json()["data"] == {"key": "a", "value": 1, "as_of": None, "complete": True}
    written = await client.get(f"/writes/{token}")
    assert (written.status_code, written.json()["data"]["complete"]) == (200, True)


async def test_past_the_bound_a_read_after_a_token_answers_202_with_the_current_value(
    client: httpx.AsyncClient, counters: FakeCounters
) -> None:
    counters.totals["a"] = 5
    counters.offsets = {0: 3}
    token = _tokens.encode({0: 3})  # offset 3 is not flushed: next offset 3
    started = time.monotonic()
    response = await client.get("/counters/a", params={"after": token})
    assert 0.25 < time.monotonic() - started < 3
    assert response.status_code == 202
    assert response.json()["data"] == {"key": "a", "value": 5, "as_of": None, "complete": False}
    unknown = await client.get("/counters/new", params={"after": token})
    assert (unknown.status_code, unknown.json()["data"]["value"]) == (202, 0)
    assert (await client.get(f"/writes/{token}")).status_code == 202


async def test_the_token_of_a_write_of_nothing_is_written_at_once(
    client: httpx.AsyncClient, counters: FakeCounters
) -> None:
    """A batch whose values all cancel out writes no record: its token waits for nothing."""
    counters.totals["a"] = 1
    token = _tokens.encode({})
    response = await client.get("/counters/a", params={"after": token})
    assert (response.status_code, response.json()["data"]["value"]) == (200, 1)
    written = await client.get(f"/writes/{token}")
    assert (written.status_code, written.json()["data"]["complete"]) == (200, True)


@pytest.mark.parametrize("token", ["", "x", "1.", "1.!!", "2.W1swLDFdXQ", "1.W1stMSwxXV0"])
async def test_a_token_that_is_not_ours_is_422(
    client: httpx.AsyncClient, counters: FakeCounters, token: str
) -> None:
    counters.totals["a"] = 1
    response = await client.get("/counters/a", params={"after": token})
    assert response.status_code == 422
    assert response.json() == {"errors": {"after": ["is not a token of this service"]}}


async def test_history_sums_per_step_with_zeros_between(
    client: httpx.AsyncClient, counters: FakeCounters
) -> None:
    counters.totals["a"] = 9
    counters.events["a"] = {BASE_MS: 2, BASE_MS + 5_000: 3, BASE_MS + 2 * MINUTE: 4}
    response = await client.get(
        "/counters/a/history",
        params={"from": str(BASE_MS + 30_000), "to": "2027-01-15T08:03:00Z", "step": "1m"},
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert (data["from"], data["to"], data["step_ms"]) == (
        "2027-01-15T08:00:00.000Z",  # rounded down to the step
        "2027-01-15T08:03:00.000Z",
        MINUTE,
    )
    assert [p["value"] for p in data["points"]] == [5, 0, 4]
    assert data["points"][1]["start"] == "2027-01-15T08:01:00.000Z"


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"step": "7s"}, "step", "multiple of the bucket width"),
        ({"step": "1 minute"}, "step", "must be a duration"),
        ({"step": "0s"}, "step", "must be a duration"),
        ({"from": "2026-11-30T12:00:00"}, "from", "time zone"),
        ({"from": "yesterday"}, "from", "ISO 8601"),
        ({"to": "99999999999999999"}, "to", "between 1970 and the year 9999"),
        ({"from": "2000", "to": "1000"}, "from", "before to"),
        (
            {"from": "9999-12-31T23:00:00Z", "to": "9999-12-31T23:59:59.999Z", "step": "1m"},
            "to",
            "within the year 9999",
        ),
        ({"from": "0", "to": str(BASE_MS), "step": "5s"}, "step", "more than 10000 points"),
    ],
)
async def test_history_names_the_bad_parameter(
    client: httpx.AsyncClient,
    counters: FakeCounters,
    params: dict[str, str],
    field: str,
    words: str,
) -> None:
    counters.totals["a"] = 1
    response = await client.get("/counters/a/history", params=params)
    assert response.status_code == 422
    (message,) = response.json()["errors"][field]
    assert words in message


async def test_history_older_than_a_rollup_age_needs_its_width(
    client: httpx.AsyncClient, counters: FakeCounters
) -> None:
    counters.totals["a"] = 1
    now_ms = time.time_ns() // 1_000_000
    two_days_ago = str(now_ms - 2 * 86_400_000)
    refused = await client.get("/counters/a/history", params={"from": two_days_ago, "step": "1m"})
    assert refused.status_code == 422
    assert "kept per 1h" in refused.json()["errors"]["step"][0]
    hourly = await client.get("/counters/a/history", params={"from": two_days_ago, "step": "1h"})
    assert hourly.status_code == 200
    # the last day at a minute, and the last 30 days at an hour, as one would ask for them: the
    # rows compaction may have merged start before the age rounded down to the tier's width
    for days, step in ((1, "1m"), (30, "1h")):
        since = str(now_ms - days * 86_400_000)
        natural = await client.get("/counters/a/history", params={"from": since, "step": step})
        assert natural.status_code == 200, natural.text


def test_times_are_written_exactly_to_the_millisecond() -> None:
    assert _params.iso(0) == "1970-01-01T00:00:00.000Z"
    assert _params.iso(1_796_092_142_123) == "2026-12-01T02:29:02.123Z"
    # a float would lose the last millisecond here
    assert _params.iso(_params.MAX_TIME_MS) == "9999-12-31T23:59:59.999Z"


async def test_history_of_an_unknown_key_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/counters/nope/history")).status_code == 404


async def test_the_listing_follows_byte_order_and_its_cursors(
    client: httpx.AsyncClient, counters: FakeCounters
) -> None:
    counters.totals = {"b": 2, "a/1": 1, "a/2": 2, "a/é": 3, "a/Z": 4, "c": 5}
    seen = []
    cursor = None
    while True:
        params = {"prefix": "a/", "limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/counters", params=params)).json()["data"]
        seen += [c["key"] for c in page["counters"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a/1", "a/2", "a/Z", "a/é"]
    everything = (await client.get("/counters")).json()["data"]
    assert [c["key"] for c in everything["counters"]] == ["a/1", "a/2", "a/Z", "a/é", "b", "c"]
    assert everything["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"cursor": "!!"}, "cursor"),
        ({"prefix": "a\n"}, "prefix"),
    ],
)
async def test_the_listing_names_the_bad_parameter(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await client.get("/counters", params=params)
    assert response.status_code == 422
    assert list(response.json()["errors"]) == [field]


async def test_top_ranks_the_sums_of_the_window(
    client: httpx.AsyncClient, counters: FakeCounters
) -> None:
    now_ms = time.time_ns() // 1_000_000
    recent, old = now_ms - 10_000, now_ms - 3_600_000
    counters.events = {"a": {recent: 3, old: 100}, "b": {recent: 5}, "c": {recent: 3}}
    data = (await client.get("/counters/top", params={"window": "1m", "limit": "2"})).json()["data"]
    assert data["window_ms"] == MINUTE
    assert data["counters"] == [{"key": "b", "value": 5}, {"key": "a", "value": 3}]
    for window in ("1s", "2h", "soon"):
        refused = await client.get("/counters/top", params={"window": window})
        assert refused.status_code == 422
        assert list(refused.json()["errors"]) == ["window"]
