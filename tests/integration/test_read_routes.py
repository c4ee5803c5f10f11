"""The read routes against the real ingress, aggregator, Kafka and PostgreSQL: what the unit tests
over fakes cannot show.

- records a direct producer stamped far in the past or the future: counted, in the right step of
  a history, out of the recent history and the busiest counters, never making a history query
  slow; a stamp past the year 9999 goes to the dead-letter topic;
- listing in UTF-8 byte order on a column whose own collation is not byte order, prefixes whose
  "%" and "_" are plain characters, and paging by cursor while new keys are flushed;
- history per step of rows written with explicit timestamps, whatever the form of from and to;
- read-your-writes while the aggregator flushes slowly, and a batch's token that waits for every
  partition it wrote to.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from distcount_aggregator import REASON_HEADER, SOURCE_HEADER
from distcount_codec import Increment, encode_record
from distcount_store import connect
from distcount_store._reads import _HISTORY
from tests.integration.pipeline import Pipeline, wait_for

pytestmark = pytest.mark.integration

BUCKET_MS = 1000
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
# the last millisecond of the year 9999, the last one the aggregator counts
MAX_MS = 253_402_300_799_999


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _iso(ms: int) -> str:
    """As the ingress writes times: `2026-11-30T12:00:00.000Z`."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _accept_any_timestamp(pipeline: Pipeline) -> None:
    """Let the topic take records stamped any time ahead: since Kafka 4.0 a broker refuses those
    more than an hour ahead of its clock (`log.message.timestamp.after.max.ms`), but a topic may
    allow them, and a producer's clock may be wrong."""
    admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    pipeline.topic,
                    configs={"message.timestamp.after.max.ms": str(2**63 - 1)},
                )
            ]
        )
    finally:
        await admin.close()


async def _produce_stamped(pipeline: Pipeline, records: list[tuple[Increment, int]]) -> None:
    """Send each increment with its timestamp (ms), one at a time, in order."""
    producer = AIOKafkaProducer(
        bootstrap_servers=pipeline.bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for increment, timestamp_ms in records:
            key, value = encode_record(increment)
            sent = await producer.send(
                pipeline.topic, value=value, key=key, timestamp_ms=timestamp_ms
            )
            await sent
    finally:
        await producer.stop()


async def _get(client: httpx.AsyncClient, path: str, **params: str) -> httpx.Response:
    return await client.get(path, params=params)


def _data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()["data"]


def _values(data: dict[str, Any]) -> list[int]:
    return [point["value"] for point in data["points"]]


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


# --- 1. timestamps far in the past and the future ------------------------------------------


@dataclass(frozen=True)
class Stamps:
    now_ms: int
    in_1971: int = _ms(datetime(1971, 3, 5, 12, 34, 56, 789000, UTC))
    in_9000: int = _ms(datetime(9000, 6, 1, 0, 30, tzinfo=UTC))
    past_9999: int = MAX_MS + 1

    @property
    def two_years_ago(self) -> int:
        return self.now_ms - 2 * 365 * DAY

    @property
    def recent(self) -> int:
        return self.now_ms - 5_000

    def records(self) -> list[tuple[Increment, int]]:
        return [
            (Increment("far", 1), self.in_1971),
            (Increment("far", 10), self.two_years_ago),
            (Increment("far", 7), self.past_9999),  # dead-lettered; the partition goes on
            (Increment("far", 100), self.recent),
            (Increment("far", 1000), self.now_ms + 50 * 365 * DAY),
            (Increment("far", 10_000), self.in_9000),
            (Increment("far", 100_000), MAX_MS),
            (Increment("near", 5), self.recent),
        ]


async def test_far_timestamps_are_counted_and_kept_out_of_recent_reads(pipeline: Pipeline) -> None:
    stamps = Stamps(_now_ms())
    url = await pipeline.start_ingress(bucket_ms=str(BUCKET_MS))
    pipeline.start("aggregator", "aggregator", bucket_ms=str(BUCKET_MS))
    await _accept_any_timestamp(pipeline)
    await _produce_stamped(pipeline, stamps.records())
    await pipeline.wait_caught_up()

    # every stamp up to the end of 9999 is counted once; the one past it is dead-lettered
    assert await pipeline.totals() == {"far": 111_111, "near": 5}
    (dead,) = await pipeline.read_all(pipeline.dlq_topic)
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == encode_record(Increment("far", 7))
    assert f"timestamp {stamps.past_9999} is past the year 9999" in headers[REASON_HEADER].decode()
    assert headers[SOURCE_HEADER].decode().startswith(f"{pipeline.topic}/")
    # each stamp is one row of one bucket, its own, however far
    conn = await connect(pipeline.database_url)
    try:
        rows = await conn.fetch(
            "SELECT (extract(epoch FROM bucket_start) * 1000)::bigint AS start_ms, delta "
            "FROM counter_events WHERE key = 'far'"
        )
    finally:
        await conn.close()
    assert sorted((r["start_ms"], int(r["delta"])) for r in rows) == sorted(
        (ts - ts % BUCKET_MS, inc.value)
        for inc, ts in stamps.records()
        if inc.key == "far" and ts <= MAX_MS
    )

    # rows of many other keys, over all time, as a long-lived event log holds them
    await _fill_the_event_log(pipeline, stamps.now_ms)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await _read_the_far_counter(client, stamps)
        # the busiest counters of the last 5 minutes: the recent stamps, not the future ones
        top = _data(await _get(client, "/counters/top", window="5m"))
        assert top["counters"] == [{"key": "far", "value": 100}, {"key": "near", "value": 5}]

    # the history query narrows by key and time in the (key, bucket_start) index
    await _assert_history_uses_the_key_time_index(pipeline, stamps.now_ms - HOUR, stamps.now_ms)
    await _assert_history_uses_the_key_time_index(pipeline, 0, 10_000 * DAY)


async def _read_the_far_counter(client: httpx.AsyncClient, stamps: Stamps) -> None:
    async def history(**params: str) -> dict[str, Any]:
        data: dict[str, Any] = _data(await _get(client, "/counters/far/history", **params))
        return data

    # the last hour holds the recent stamp only, and reads quickly
    started = time.perf_counter()
    last_hour = await history(step="1m")
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"the last hour's history took {elapsed:.2f} s"
    assert last_hour["step_ms"] == MINUTE
    assert 60 <= len(last_hour["points"]) <= 61
    nonzero = [p for p in last_hour["points"] if p["value"]]
    assert nonzero == [{"start": _iso(stamps.recent - stamps.recent % MINUTE), "value": 100}]

    # a range holding 1971 shows it in its day (data that old is read in steps of whole days)
    early = await history(
        **{"from": "1971-03-01T00:00:00Z", "to": "1971-03-11T00:00:00Z"}, step="1d"
    )
    assert (early["from"], early["to"]) == ("1971-03-01T00:00:00.000Z", "1971-03-11T00:00:00.000Z")
    assert early["points"][4]["start"] == "1971-03-05T00:00:00.000Z"
    assert _values(early) == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    # and one two years ago
    day = stamps.two_years_ago - stamps.two_years_ago % DAY
    around = await history(**{"from": str(day - DAY), "to": str(day + 2 * DAY)}, step="1d")
    assert _values(around) == [0, 10, 0]
    # 10,000 days from the epoch on, the most points a history gives: quick all the same
    started = time.perf_counter()
    widest = await history(**{"from": "0", "to": str(10_000 * DAY)}, step="1d")
    elapsed = time.perf_counter() - started
    assert elapsed < 3.0, f"10,000 days of history took {elapsed:.2f} s"
    assert len(widest["points"]) == 10_000
    assert sum(_values(widest)) == 1
    assert widest["points"][stamps.in_1971 // DAY]["value"] == 1
    # the future reads as stored, in its own step
    future = await history(
        **{"from": "9000-06-01T00:00:00Z", "to": "9000-06-02T00:00:00Z"}, step="1h"
    )
    assert _values(future) == [10_000] + [0] * 23


async def _fill_the_event_log(pipeline: Pipeline, now_ms: int) -> None:
    """200,000 rows of 2,000 other keys from 1970 to 9999 (none within a day of now), and 20,000
    more over the hour before the last 10 minutes."""
    conn = await connect(pipeline.database_url)
    try:
        await conn.execute(
            """
            INSERT INTO counter_events (key, bucket_start, delta)
            SELECT 'filler-' || (i % 2000), to_timestamp(i * 1266000.0), 1
            FROM generate_series(0, 199999) AS i
            WHERE abs(i * 1266000.0 - $1 / 1000.0) > 86400
            UNION ALL
            SELECT 'filler-' || (i % 2000), to_timestamp(($1 - 600000 - i * 150) / 1000.0), 1
            FROM generate_series(0, 19999) AS i
            """,
            now_ms,
        )
        await conn.execute("ANALYZE counter_events")
    finally:
        await conn.close()


async def _assert_history_uses_the_key_time_index(
    pipeline: Pipeline, start_ms: int, end_ms: int
) -> None:
    conn = await connect(pipeline.database_url)
    try:
        plan = await conn.fetchval(
            f"EXPLAIN (FORMAT JSON) {_HISTORY}",
            "far",
            datetime.fromtimestamp(start_ms / 1000, UTC),
            datetime.fromtimestamp(end_ms / 1000, UTC),
            start_ms,
            MINUTE,
        )
    finally:
        await conn.close()
    nodes = list(_plan_nodes(json.loads(plan)[0]["Plan"]))
    scans = [n for n in nodes if n.get("Relation Name") == "counter_events" or "Index Name" in n]
    assert all(n["Node Type"] != "Seq Scan" for n in scans), plan
    matching = [n for n in scans if n.get("Index Name") == "counter_events_key_width_bucket_idx"]
    assert len(matching) == 1, plan
    (scan,) = matching
    condition = scan["Index Cond"]
    assert "key = " in condition, condition
    assert "width_ms = " in condition, condition
    assert "bucket_start >= " in condition, condition
    assert "bucket_start < " in condition, condition


async def test_history_up_to_the_last_millisecond_of_9999_is_no_server_error(
    pipeline: Pipeline,
) -> None:
    """`to` may be as late as 9999-12-31T23:59:59.999Z, but a range whose last whole step ends
    past it cannot be read (no time after 9999 exists to the server): a 422 naming `to`, never
    a 500."""
    url = await pipeline.start_ingress(bucket_ms=str(BUCKET_MS))
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await _get(
            client,
            "/counters/nobody/history",
            **{"from": "9999-12-31T23:00:00Z", "to": "9999-12-31T23:59:59.999Z", "step": "1m"},
        )
        assert response.status_code == 422, response.text
        assert list(response.json()["errors"]) == ["to"]
        # the same range at a step that ends within 9999 is read (no counter: 404)
        fitting = await _get(
            client,
            "/counters/nobody/history",
            **{"from": "9999-12-31T23:00:00Z", "to": "9999-12-31T23:59:59.000Z", "step": "1s"},
        )
        assert fitting.status_code == 404, fitting.text


# --- 2. listing in byte order -----------------------------------------------------------------


KEYS = [
    "Apple",
    "apple",
    "APPLE",
    "apple2",
    "a",
    "a%",
    "a%b",
    "a%c",
    "a_b",
    "a_c",
    "abc",
    "axe",
    "1/10",
    "1/2",
    "10",
    "9",
    "dir/sub",
    "dir/sub/x",
    "%",
    "_",
    "/",
    "e",
    "é",
    "f",
    "z",
    "Z",
    "中",
    "中文",
    "\uff5e",  # before 😀 in UTF-8 and in code points; after it in UTF-16 (surrogates D83D…)
    "😀",
    "😀x",
    "\ud7ffz",  # the last character before the surrogates
    "\ue000",  # the first after them
    "\U0010ffff!",  # the last character of all
]
BYTE_ORDER = sorted(KEYS, key=str.encode)
PREFIXES = ["a%", "a_", "%", "_", "a", "A", "dir/", "é", "中", "😀", "\ud7ff", "\U0010ffff", "1/"]


async def _flushed(client: httpx.AsyncClient, response: httpx.Response) -> None:
    """Until the write that `response` answered is flushed."""
    token = _data(response, 202)["token"]

    async def done() -> bool:
        return (await client.get(f"/writes/{token}")).status_code == 200

    await wait_for(done, 30, "a write to be flushed")


async def _non_byte_collation(pipeline: Pipeline) -> str | None:
    conn = await connect(pipeline.database_url)
    try:
        rows = await conn.fetch("SELECT collname::text AS name FROM pg_collation")
    finally:
        await conn.close()
    present = {row["name"] for row in rows}
    return next((c for c in ("und-x-icu", "en-x-icu", "en_US.utf8") if c in present), None)


async def test_listing_is_in_byte_order_with_literal_prefixes_and_stable_cursors(
    pipeline: Pipeline,
) -> None:
    # a column ordered by a language's rules, not by bytes: the listing must not follow it
    collation = await _non_byte_collation(pipeline)
    if collation is not None:
        await _admin_execute(
            pipeline, f'ALTER TABLE counter_totals ALTER COLUMN key TYPE text COLLATE "{collation}"'
        )
    url = await pipeline.start_ingress()
    pipeline.start("aggregator", "aggregator")
    value = {key: i + 1 for i, key in enumerate(KEYS)}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        batch = [{"key": key, "value": value[key]} for key in KEYS]
        await _flushed(client, await client.post("/increments", json={"increments": batch}))
        if collation is not None:  # the setup tells something: that collation orders otherwise
            in_collation_order = await _admin_fetch(
                pipeline, "SELECT key FROM counter_totals ORDER BY key"
            )
            assert [r["key"] for r in in_collation_order] != BYTE_ORDER, collation

        every = _data(await _get(client, "/counters", limit="1000"))
        assert [c["key"] for c in every["counters"]] == BYTE_ORDER
        assert all(c["value"] == value[c["key"]] for c in every["counters"])
        assert every["next_cursor"] is None

        for prefix in PREFIXES:
            listed = _data(await _get(client, "/counters", prefix=prefix, limit="1000"))
            expected = [k for k in BYTE_ORDER if k.startswith(prefix)]
            assert _keys(listed) == expected, prefix
        # "%" and "_" are themselves, not LIKE's wildcards
        assert _keys(_data(await _get(client, "/counters", prefix="a%"))) == ["a%", "a%b", "a%c"]
        assert _keys(_data(await _get(client, "/counters", prefix="a_"))) == ["a_b", "a_c"]

        seen, added_after = await _page_through(client)
        assert len(seen) == len(set(seen)), seen
        assert seen == sorted(KEYS + added_after, key=str.encode)
        # the keys added before the cursor were flushed, and are listed from the start
        every = _data(await _get(client, "/counters", limit="1000"))
        assert {"0-new-2", "0-new-5"} <= set(_keys(every))
        assert _keys(every) == sorted(_keys(every), key=str.encode)


def _keys(listed: dict[str, Any]) -> list[str]:
    return [c["key"] for c in listed["counters"]]


async def _page_through(client: httpx.AsyncClient) -> tuple[list[str], list[str]]:
    """Every key, in pages of 2; after pages 2 and 5, one key before the cursor, one after and
    a change to a key already seen are flushed. Returns the keys seen, and those added after."""
    seen: list[str] = []
    added_after: list[str] = []
    params = {"limit": "2"}
    for pages in range(1, 100):
        page = _data(await _get(client, "/counters", **params))
        assert 1 <= len(page["counters"]) <= 2
        seen += _keys(page)
        if pages in (2, 5):
            new = [f"0-new-{pages}", f"zz-new-{pages}"]
            added_after.append(new[1])
            increments = [{"key": k, "value": 1} for k in [*new, seen[0]]]
            await _flushed(
                client, await client.post("/increments", json={"increments": increments})
            )
        if page["next_cursor"] is None:
            return seen, added_after
        params = {"limit": "2", "cursor": page["next_cursor"]}
    raise AssertionError(f"no end to the pages: {seen}")


async def _admin_execute(pipeline: Pipeline, statement: str) -> None:
    conn = await connect(pipeline.database_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _admin_fetch(pipeline: Pipeline, query: str) -> list[Any]:
    conn = await connect(pipeline.database_url)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


# --- 3. history of rows with explicit timestamps ----------------------------------------------


async def test_history_sums_per_step_whatever_the_form_of_the_range(pipeline: Pipeline) -> None:
    hour = _now_ms() // HOUR * HOUR - 2 * HOUR  # a whole hour, well past
    stamped = [
        (Increment("hist", 1), hour + 4 * MINUTE),  # the first millisecond of the range
        (Increment("hist", 3), hour + 5 * MINUTE + 10_000),
        (Increment("hist", 4), hour + 6 * MINUTE - 1),  # the last millisecond of minute 5
        (Increment("hist", 5), hour + 7 * MINUTE),  # the first of minute 7
        (Increment("hist", -2), hour + 9 * MINUTE + 30_000),
        (Increment("hist", 11), hour + HOUR + MINUTE),
        (Increment("other", 100), hour + 6 * MINUTE),
    ]
    url = await pipeline.start_ingress(bucket_ms=str(BUCKET_MS))
    pipeline.start("aggregator", "aggregator", bucket_ms=str(BUCKET_MS))
    await _produce_stamped(pipeline, stamped)
    await pipeline.wait_caught_up()

    plus_one = timezone(timedelta(hours=1))

    def offset_iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, plus_one).isoformat()

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def history(start: str, end: str, step: str = "1m") -> dict[str, Any]:
            response = await _get(
                client, "/counters/hist/history", **{"from": start, "to": end, "step": step}
            )
            data: dict[str, Any] = _data(response)
            return data

        start, end = hour + 4 * MINUTE, hour + 10 * MINUTE
        by_minute = await history(str(start), str(end))
        assert by_minute["from"] == _iso(start)
        assert by_minute["to"] == _iso(end)
        assert by_minute["step_ms"] == MINUTE
        assert [p["start"] for p in by_minute["points"]] == [
            _iso(start + i * MINUTE) for i in range(6)
        ]
        assert _values(by_minute) == [1, 7, 0, 5, 0, -2]
        # the same range as ISO 8601 with an offset, and in UTC: the same points
        assert offset_iso(start).endswith("+01:00")
        as_offset = await history(offset_iso(start), offset_iso(end))
        as_utc = await history(_iso(start), _iso(end))
        for other in (as_offset, as_utc):
            assert (other["from"], other["to"], other["points"]) == (
                by_minute["from"],
                by_minute["to"],
                by_minute["points"],
            )
        # from is taken down to its step, to up to its step; to is exclusive
        unaligned = await history(str(start + 30_000), str(hour + 9 * MINUTE + 1))
        assert unaligned["points"] == by_minute["points"]
        before_9 = await history(str(start), str(hour + 9 * MINUTE))
        assert _values(before_9) == [1, 7, 0, 5, 0]

        by_hour = await history(str(hour), str(hour + 2 * HOUR), "1h")
        assert [p["start"] for p in by_hour["points"]] == [_iso(hour), _iso(hour + HOUR)]
        assert _values(by_hour) == [11, 11]

        refused = await _get(
            client,
            "/counters/hist/history",
            **{"from": str(start), "to": str(end), "step": "1500ms"},
        )
        assert refused.status_code == 422, refused.text
        errors = refused.json()["errors"]
        assert list(errors) == ["step"]
        assert "multiple of the bucket width, 1s" in errors["step"][0]
        backwards = await _get(
            client, "/counters/hist/history", **{"from": str(end), "to": str(start)}
        )
        assert (backwards.status_code, list(backwards.json()["errors"])) == (422, ["from"])
        too_many = await _get(
            client,
            "/counters/hist/history",
            **{"from": str(hour), "to": str(hour + 3 * HOUR), "step": "1s"},
        )
        assert (too_many.status_code, list(too_many.json()["errors"])) == (422, ["step"])
        missing = await _get(
            client, "/counters/never/history", **{"from": str(start), "to": str(end)}
        )
        assert missing.status_code == 404


# --- 4. read-your-writes under a slow aggregator ----------------------------------------------


FLUSH_INTERVAL_MS = 3000
READ_AFTER_TIMEOUT_MS = 300


async def _just_after_a_flush_tick() -> None:
    """Until 200 ms past a tick of the aggregator's flush (ticks are aligned to the interval):
    nothing written now is flushed for the next 2.8 s."""
    phase = _now_ms() % FLUSH_INTERVAL_MS
    await asyncio.sleep(((200 - phase) % FLUSH_INTERVAL_MS) / 1000)


def _token_offsets(token: str) -> dict[int, int]:
    """partition -> offset of a token of this version ("1." then base64 of [[p, offset], ...])."""
    assert token.startswith("1.")
    body = token[2:]
    pairs = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return {int(p): int(offset) for p, offset in pairs}


async def _until_complete(client: httpx.AsyncClient, path: str, **params: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        response = await _get(client, path, **params)
        if response.status_code != 202 or time.monotonic() > deadline:
            return response


async def test_reads_after_a_token_wait_for_every_partition_it_wrote(pipeline: Pipeline) -> None:
    url = await pipeline.start_ingress(
        bucket_ms=str(BUCKET_MS), read_after_timeout_ms=str(READ_AFTER_TIMEOUT_MS)
    )
    pipeline.start(
        "aggregator",
        "aggregator",
        bucket_ms=str(BUCKET_MS),
        flush_interval_ms=str(FLUSH_INTERVAL_MS),
    )

    async def every_partition_flushed_once() -> bool:
        return len(await pipeline.stored_offsets()) == pipeline.partitions

    await wait_for(every_partition_flushed_once, 60, "the aggregator's first flush")

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await _a_single_write_is_read_once_flushed(client)
        await _a_batch_token_waits_for_every_partition(pipeline, client)


async def _a_single_write_is_read_once_flushed(client: httpx.AsyncClient) -> None:
    """202 and incomplete until the next tick flushes the write, then 200 with it."""
    await _just_after_a_flush_tick()
    written = await client.post("/increment", json={"key": "ryw", "value": 5})
    token = _data(written, 202)["token"]
    started = time.perf_counter()
    waiting = _data(await _get(client, "/counters/ryw", after=token), 202)
    waited = time.perf_counter() - started
    assert (waiting["key"], waiting["value"], waiting["complete"]) == ("ryw", 0, False)
    assert waited >= READ_AFTER_TIMEOUT_MS / 1000 * 0.9, "answered 202 without waiting"
    pending = _data(await client.get(f"/writes/{token}"), 202)
    assert (pending["token"], pending["complete"]) == (token, False)

    read = _data(await _until_complete(client, "/counters/ryw", after=token))
    assert (read["key"], read["value"], read["complete"]) == ("ryw", 5, True)
    assert read["as_of"] is not None
    done = _data(await client.get(f"/writes/{token}"))
    assert (done["token"], done["complete"]) == (token, True)
    # a read without a token does not wait, and says nothing of completeness
    plain = _data(await client.get("/counters/ryw"))
    assert (plain["value"], "complete" in plain) == (5, False)


async def _a_batch_token_waits_for_every_partition(
    pipeline: Pipeline, client: httpx.AsyncClient
) -> None:
    """A batch across the partitions, one of which cannot flush yet (a transaction holds its
    offset's row, which the flush locks): incomplete until that one flushes too."""
    keys = [f"batch-{i}" for i in range(12)]
    await _just_after_a_flush_tick()
    response = await client.post(
        "/increments", json={"increments": [{"key": k, "value": 1} for k in keys]}
    )
    token = _data(response, 202)["token"]
    offsets = _token_offsets(token)
    assert len(offsets) >= 2, f"the batch wrote to one partition only: {offsets}"
    held = max(offsets)
    others = {p: o for p, o in offsets.items() if p != held}
    locker = await connect(pipeline.database_url)
    try:
        await locker.execute("BEGIN")
        await locker.execute(
            "SELECT 1 FROM consumer_offsets "
            "WHERE group_id = $1 AND topic = $2 AND partition = $3 FOR UPDATE",
            pipeline.group,
            pipeline.topic,
            held,
        )

        async def the_others_flushed() -> bool:
            stored = await pipeline.stored_offsets()
            return all(stored.get(p, 0) > o for p, o in others.items())

        await wait_for(the_others_flushed, 30, f"the partitions {sorted(others)} to flush")
        assert (await pipeline.stored_offsets())[held] <= offsets[held]
        totals = await pipeline.totals()
        counted = [k for k in keys if k in totals]
        missing = [k for k in keys if k not in totals]
        assert counted, "no partition of the batch was flushed"
        assert missing, "the held partition was flushed"

        partial = _data(await client.get(f"/writes/{token}"), 202)
        assert partial["complete"] is False
        some = _data(await _get(client, f"/counters/{counted[0]}", after=token), 202)
        assert (some["value"], some["complete"]) == (1, False)
        none = _data(await _get(client, f"/counters/{missing[0]}", after=token), 202)
        assert (none["value"], none["complete"]) == (0, False)
    finally:
        await locker.close()  # the transaction ends with the connection: the row is free

    whole = _data(await _until_complete(client, f"/writes/{token}"))
    assert whole["complete"] is True
    last = _data(await _get(client, f"/counters/{missing[0]}", after=token))
    assert (last["value"], last["complete"]) == (1, True)
    totals = await pipeline.totals()
    assert {k: totals.get(k) for k in keys} == dict.fromkeys(keys, 1)
