"""Records from producers nobody here wrote, in one run: valid increments from kcat with every
codec and from Kafka's console producer, mixed with nulls, tombstones, empty values, garbage and
headers of every kind. Every valid increment is counted, every other record is dead-lettered once
with its reason, and nothing stops the aggregator."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
from aiokafka import AIOKafkaProducer

from distcount_aggregator import NULL_HEADER, REASON_HEADER, SOURCE_HEADER
from distcount_codec import INT64_MAX, INT64_MIN
from distcount_metrics import console_blocks
from distcount_store import connect
from tests.integration.console_producer import produce_with_console_producer
from tests.integration.pipeline import Pipeline, wait_for
from tests.integration.test_compression import BATCHED, kcat, run

pytestmark = pytest.mark.integration

CODECS: Final = ("none", "gzip", "snappy", "lz4", "zstd")
PER_RUN: Final = 40  # increments of each producer run: several to a batch
ONE_MB: Final = 1_000_000
NOT_JSON: Final = "value is not UTF-8 JSON"
EMPTY: Final = "empty record value"
NOT_OBJECT: Final = "must be a JSON object"
NOT_INTEGER: Final = "value: must be an integer"
OUT_OF_RANGE: Final = "value: must be within the 64-bit signed integer range"
CONTROL: Final = "key: must not contain control characters"
# `"id"` is becoming an optional string member (an idempotency id): a record whose id is not a
# string may be counted as before, or be dead-lettered for its id
NUMERIC_ID: Final = b'{"key": "numeric-id", "value": 3, "id": 5}'

Record = tuple[bytes | None, bytes | None]
Headers = list[tuple[str, bytes | None]]


def increment(key: str, value: int) -> bytes:
    return json.dumps({"key": key, "value": value}).encode()


@dataclass
class Expected:
    """What was produced: the sum of the valid increments per counter, and the records that
    break the contract, each with what the reason of its dead letter must say."""

    sums: Counter[str] = field(default_factory=Counter)
    dead: Counter[Record] = field(default_factory=Counter)
    reasons: dict[Record, str] = field(default_factory=dict)

    def valid(self, key: str, value: int) -> bytes:
        self.sums[key] += value
        return increment(key, value)

    def invalid(self, key: bytes | None, value: bytes | None, reason: str) -> Record:
        record = (key, value)
        assert self.reasons.setdefault(record, reason) == reason, record
        self.dead[record] += 1
        return record


def some_increments(expected: Expected, name: str, rng: random.Random) -> list[Record]:
    """`PER_RUN` valid increments over the counters `name-0` to `name-3`, each keyed by its
    counter."""
    records: list[Record] = []
    for i in range(PER_RUN):
        key = f"{name}-{i % 4}"
        records.append((key.encode(), expected.valid(key, rng.choice((1, 1, 2, 7, -3)))))
    return records


def lines(records: list[Record], keyed: bool = True) -> bytes:
    """Lines of `key|value`, or of the values only."""
    out = []
    for key, value in records:
        assert key is not None
        assert value is not None
        out.append(key + b"|" + value if keyed else value)
    return b"".join(line + b"\n" for line in out)


async def kcat_produce(pipeline: Pipeline, data: bytes, *options: str) -> None:
    await run([kcat(), "-P", "-b", pipeline.bootstrap, "-t", pipeline.topic, *options], data)


async def console_produce(pipeline: Pipeline, data: bytes, *options: str) -> None:
    await produce_with_console_producer(pipeline.bootstrap, pipeline.topic, data, *options)


def properties(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--property", pair)]


# on valid records: forged distcount headers, a header without a value, an empty one, separators
# inside a value, a name in another script
KCAT_HEADERS: Final = [
    f"{REASON_HEADER}=forged: nothing is wrong",
    f"{SOURCE_HEADER}=nowhere/0/0",
    "trace=5f1c",
    "no-value",
    "empty=",
    "equation=a=b|c",
    "ключ=значение",
]


async def produce_valid_with_kcat(
    pipeline: Pipeline, expected: Expected, rng: random.Random
) -> None:
    """Per codec, a run with message keys and headers, and a run without either."""
    headers = [arg for header in KCAT_HEADERS for arg in ("-H", header)]
    for codec in CODECS:
        keyed = some_increments(expected, f"kcat-{codec}-keyed", rng)
        await kcat_produce(pipeline, lines(keyed), "-K", "|", "-z", codec, *BATCHED, *headers)
        keyless = some_increments(expected, f"kcat-{codec}-keyless", rng)
        await kcat_produce(pipeline, lines(keyless, keyed=False), "-z", codec, *BATCHED)


async def produce_valid_with_console_producer(
    pipeline: Pipeline, expected: Expected, rng: random.Random
) -> None:
    """With parse.key=true (and headers), and without: no message key."""
    keyed = some_increments(expected, "console-keyed", rng)
    with_headers = b"".join(
        b"origin:console,hop:1\t" + line for line in lines(keyed).splitlines(True)
    )
    await console_produce(
        pipeline,
        with_headers,
        "--compression-codec",
        "zstd",
        *properties("parse.key=true", "key.separator=|", "parse.headers=true"),
    )
    keyless = some_increments(expected, "console-keyless", rng)
    await console_produce(pipeline, lines(keyless, keyed=False), "--compression-codec", "gzip")


def nested(depth: int, inside: bytes = b"1") -> bytes:
    return b"[" * depth + inside + b"]" * depth


def garbage(expected: Expected) -> list[Record]:
    """Records that break the contract, for the project's own Kafka client to send: the one that
    sends any bytes at all."""
    bad = expected.invalid
    rng = random.Random(11)
    return [
        bad(b"tombstone", None, EMPTY),
        bad(b"empty", b"", EMPTY),
        bad(b"random", rng.randbytes(512), NOT_JSON),
        bad(b"random-2", rng.randbytes(7), NOT_JSON),
        bad(b"invalid-utf8", b'{"key": "\xc3\x28", "value": 1}', NOT_JSON),
        bad(b"latin-1", '{"key": "café", "value": 1}'.encode("latin-1"), NOT_JSON),
        bad(b"lone-surrogate", b'{"key": "\\ud800", "value": 1}', NOT_JSON),
        bad(b"bom", b'\xef\xbb\xbf{"key": "bom", "value": 1}', NOT_JSON),
        bad(b"nuls", b"\x00" * 32, NOT_JSON),
        bad(b"nul-inside", b'{"key": "a\x00b", "value": 1}', NOT_JSON),
        bad(b"nul-escaped", b'{"key": "a\\u0000b", "value": 1}', CONTROL),
        bad(b"nul-after", b'{"key": "after-nul", "value": 1}\x00', NOT_JSON),
        bad(b"cut", b'{"key": "cut", "val', NOT_JSON),
        bad(b"two", b'{"key": "a", "value": 1}{"key": "b", "value": 1}', NOT_JSON),
        bad(b"nan", b'{"key": "nan", "value": NaN}', NOT_JSON),
        bad(b"array", b'[{"key": "in-array", "value": 1}]', NOT_OBJECT),
        bad(b"string", b'"{\\"key\\": \\"s\\", \\"value\\": 1}"', NOT_OBJECT),
        bad(b"number", b"42", NOT_OBJECT),
        bad(b"null", b"null", NOT_OBJECT),
        bad(b"key-number", b'{"key": 5, "value": 1}', "key: must be a string"),
        bad(b"key-list", b'{"key": ["k"], "value": 1}', "key: must be a string"),
        bad(b"key-missing", b'{"value": 1}', "key: can't be blank"),
        bad(b"key-300", increment("x" * 300, 1), "key: must be at most 256 bytes"),
        bad(b"key-bell", b'{"key": "bell\\u0007", "value": 1}', CONTROL),
        bad(b"value-string", b'{"key": "k", "value": "1"}', NOT_INTEGER),
        bad(b"value-float", b'{"key": "k", "value": 1.0}', NOT_INTEGER),
        bad(b"value-bool", b'{"key": "k", "value": true}', NOT_INTEGER),
        bad(b"value-object", b'{"key": "k", "value": {"n": 1}}', NOT_INTEGER),
        bad(b"value-null", b'{"key": "k", "value": null}', "value: can't be blank"),
        bad(b"value-zero", b'{"key": "k", "value": 0}', "value: must not be zero"),
        bad(b"int64-max+1", increment("k", INT64_MAX + 1), OUT_OF_RANGE),
        bad(b"int64-min-1", increment("k", INT64_MIN - 1), OUT_OF_RANGE),
        bad(b"huge", b'{"key": "k", "value": 1' + b"0" * 5000 + b"}", OUT_OF_RANGE),
        bad(b"huge-float", b'{"key": "k", "value": 1e400}', NOT_JSON),
        bad(b"repeated", b'{"key": "a", "key": "b", "value": 1}', "key: must not be repeated"),
        bad(b"deep", nested(100_000), NOT_JSON),
        bad(b"deep-digits", nested(100_000, b"1" * 25), NOT_JSON),
        bad(b"deep-member", b'{"key": "k", "value": 1, "x": ' + nested(5000) + b"}", NOT_JSON),
        bad(b"m" * 300, b'{"key": "under a long message key", "value": 0}', "must not be zero"),
        bad("ключ-\x00-🔑".encode(), b"\xff\xfe\xfd", NOT_JSON),
        bad(b"one-mb", b"{" + b"7" * (ONE_MB - 2) + b"}", NOT_JSON),
    ]


def odd_but_valid(expected: Expected) -> list[Record]:
    """Valid increments that look odd: a message key of 300 bytes, none, another counter's,
    a value padded to 1 MB with JSON whitespace, escapes, members in another order."""
    expected.sums["été"] += 8
    expected.sums["value-first"] += 9
    return [
        (b"k" * 300, expected.valid("long-message-key", 3)),
        (None, expected.valid("no-message-key", 4)),
        (b"someone-else", expected.valid("other-message-key", 5)),
        (b"padded", b" " * (ONE_MB - 64) + expected.valid("padded", 6) + b"\n\t\r "),
        (b"escaped", b'{"key": "\\u00e9t\\u00e9", "value": 8}'),
        (b"value-first", b'{"value": 9, "key": "value-first"}'),
        (b"extremes", expected.valid("extremes", INT64_MAX)),
        (b"extremes", expected.valid("extremes", INT64_MIN)),
    ]


# headers for the records the project's own client sends, in turn
HEADERS: Final[list[Headers]] = [
    [],
    [(REASON_HEADER, b"forged"), (SOURCE_HEADER, b"forged/0/0")],
    [("null", None), ("", b"nameless"), ("binary", bytes(range(256)))],
    [(f"h{i}", str(i).encode()) for i in range(200)],
    [("ключ", "значение".encode()), ("twice", b"1"), ("twice", b"2")],
]


async def produce_with_headers(pipeline: Pipeline, records: list[Record]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=pipeline.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=50,
        max_request_size=2 * ONE_MB,
    )
    await producer.start()
    try:
        sent = [
            await producer.send(
                pipeline.topic, value=value, key=key, headers=HEADERS[i % len(HEADERS)]
            )
            for i, (key, value) in enumerate(records)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def produce_hostile(pipeline: Pipeline, expected: Expected) -> None:
    """The garbage and the odd valid records, then what kcat and the console producer send that
    breaks the contract."""
    await produce_with_headers(pipeline, garbage(expected) + odd_but_valid(expected))
    await produce_with_headers(pipeline, [(b"numeric-id", NUMERIC_ID)])
    # kcat: a tombstone (-Z: an empty value is null), with a header; an empty value, lz4
    expected.invalid(b"kcat-tombstone", None, EMPTY)
    await kcat_produce(pipeline, b"kcat-tombstone|\n", "-K", "|", "-Z", "-H", "from=kcat")
    expected.invalid(b"kcat-empty", b"", EMPTY)
    await kcat_produce(pipeline, b"kcat-empty|\n", "-K", "|", "-z", "lz4")
    # the console producer: a tombstone with headers, a value that is not JSON, an empty value
    # without a key
    expected.invalid(b"console-tombstone", None, EMPTY)
    expected.invalid(b"console-garbage", b"not json at all", NOT_JSON)
    expected.invalid(None, b"", EMPTY)
    await console_produce(
        pipeline,
        b"src:console,nothing:NULL\tconsole-tombstone|NULL\n"
        b"src:console\tconsole-garbage|not json at all\n"
        b"NULL\tNULL|\n",
        *properties("parse.key=true", "key.separator=|", "parse.headers=true", "null.marker=NULL"),
    )


async def produce_after(pipeline: Pipeline, expected: Expected, name: str) -> None:
    """A valid increment to every partition, with kcat."""
    for partition in range(pipeline.partitions):
        key = f"{name}-{partition}"
        data = key.encode() + b"|" + expected.valid(key, partition + 1) + b"\n"
        await kcat_produce(pipeline, data, "-K", "|", "-p", str(partition))


def dead_letters_counted(log: str) -> int:
    """The aggregator's dead-letter metric, summed over the console blocks of its output."""
    total = 0
    for block in console_blocks(log):
        for found in re.finditer(r"^  distcount\.aggregator\.dead_letters +(\d+) ", block, re.M):
            total += int(found[1])
    return total


async def stalls(pipeline: Pipeline) -> list[Any]:
    conn = await connect(pipeline.database_url)
    try:
        return list(
            await conn.fetch("SELECT * FROM partition_stalls WHERE topic = $1", pipeline.topic)
        )
    finally:
        await conn.close()


async def test_hostile_records_are_counted_or_dead_lettered_and_stop_nothing(
    pipeline: Pipeline,
) -> None:
    aggregator = pipeline.start(
        "aggregator", "aggregator", metrics="console", metrics_interval_ms="500"
    )
    rng = random.Random(5)
    expected = Expected()

    await produce_valid_with_kcat(pipeline, expected, rng)
    await produce_valid_with_console_producer(pipeline, expected, rng)
    await produce_hostile(pipeline, expected)
    await produce_after(pipeline, expected, "after")
    await pipeline.wait_caught_up(timeout_s=120)

    totals = await pipeline.totals()
    if "numeric-id" in totals:
        expected.sums["numeric-id"] += 3
    else:
        expected.invalid(b"numeric-id", NUMERIC_ID, "id")
    assert totals == dict(expected.sums)
    assert await pipeline.event_sums() == dict(expected.sums)

    dead = await pipeline.read_all(pipeline.dlq_topic)
    assert Counter((r.key, r.value) for r in dead) == expected.dead
    for record in dead:
        headers: dict[str, list[bytes | None]] = {}
        for name, value in record.headers:
            headers.setdefault(name, []).append(value)
        # exactly one of each, the aggregator's own: a forged one is not passed on
        (reason,) = headers[REASON_HEADER]
        (source,) = headers[SOURCE_HEADER]
        assert reason is not None
        assert source is not None
        want = expected.reasons[(record.key, record.value)]
        assert want in reason.decode(), (record.key, reason)
        topic, partition, offset = source.decode().rsplit("/", 2)
        assert topic == pipeline.topic
        assert int(partition) in range(pipeline.partitions)
        assert int(offset) >= 0
    # one dead letter per source offset: none was sent twice
    sources = [dict(r.headers)[SOURCE_HEADER] for r in dead]
    assert len(set(sources)) == len(sources)

    await wait_for(
        lambda: _metric_is(pipeline, sum(expected.dead.values())),
        30,
        "the dead-letter metric to count every dead letter",
    )
    assert await stalls(pipeline) == []
    assert aggregator.poll() is None, pipeline.log("aggregator")

    # still counting: a last increment after everything
    await produce_after(pipeline, expected, "last")
    await pipeline.wait_caught_up()
    assert await pipeline.totals() == dict(expected.sums)
    assert aggregator.poll() is None, pipeline.log("aggregator")


async def _metric_is(pipeline: Pipeline, want: int) -> bool:
    return dead_letters_counted(pipeline.log("aggregator")) == want


async def settled(pipeline: Pipeline, aggregator: subprocess.Popen[bytes]) -> None:
    """Until the aggregator has flushed up to the end of every partition, stopped, or stopped
    a partition: what a record that stops anything shows without waiting for a timeout."""

    async def done() -> bool:
        if aggregator.poll() is not None or await stalls(pipeline):
            return True
        stored, ends = await pipeline.stored_offsets(), await pipeline.end_offsets()
        return all(stored.get(p, 0) >= end for p, end in ends.items() if end > 0)

    await wait_for(done, 60, "the aggregator to flush, stop or stall")


async def produce_to_partition_zero(pipeline: Pipeline, line: bytes, *options: str) -> None:
    await kcat_produce(pipeline, line, "-K", "|", "-p", "0", *options)


def valid_line(expected: Expected, key: str) -> bytes:
    return key.encode() + b"|" + expected.valid(key, 1) + b"\n"


async def test_a_record_without_key_and_value_is_dead_lettered(pipeline: Pipeline) -> None:
    aggregator = pipeline.start("aggregator", "aggregator")
    expected = Expected()
    await produce_to_partition_zero(pipeline, valid_line(expected, "before"))
    # "|" with -Z: a null key and a null value, as any client but aiokafka may send
    await produce_to_partition_zero(pipeline, b"|\n", "-Z")
    await produce_to_partition_zero(pipeline, valid_line(expected, "after"))

    await settled(pipeline, aggregator)

    assert aggregator.poll() is None, pipeline.log("aggregator")
    assert await pipeline.totals() == dict(expected.sums)
    dead = await pipeline.read_all(pipeline.dlq_topic)
    assert len(dead) == 1
    assert EMPTY in dict(dead[0].headers)[REASON_HEADER].decode()
    # Kafka's clients cannot send a record without key and value: the letter says it was null
    assert (dead[0].key, dead[0].value) == (None, b"")
    assert dict(dead[0].headers)[NULL_HEADER] == b"true"


async def test_a_header_name_that_is_not_utf8_stops_nothing(pipeline: Pipeline) -> None:
    aggregator = pipeline.start("aggregator", "aggregator")
    expected = Expected()
    # Kafka's header names are strings, but the broker stores whatever bytes kcat is given
    odd_name = os.fsdecode(b"\xff\xfe-name=value")
    await produce_to_partition_zero(pipeline, valid_line(expected, "before"))
    await produce_to_partition_zero(pipeline, b"odd|" + increment("odd", 1) + b"\n", "-H", odd_name)
    await produce_to_partition_zero(pipeline, valid_line(expected, "after"))

    await settled(pipeline, aggregator)

    assert aggregator.poll() is None, pipeline.log("aggregator")
    assert await stalls(pipeline) == []
    # the increment itself is valid, and the aggregator ignores headers: it is counted
    assert await pipeline.totals() == {**expected.sums, "odd": 1}
    assert "read it leniently" in pipeline.log("aggregator")
