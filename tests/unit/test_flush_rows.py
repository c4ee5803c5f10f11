"""The rows a flush writes, as built before they reach PostgreSQL: the event rows in COPY's
text format, and the totals (summed per key, in key order)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from distcount_store._counters import (
    _COPY_CHUNK_ROWS,
    _event_chunks,
    _totals,
    bucket_start_text,
    copy_text,
)

STAMP = "2023-11-14T22:13:20+00:00"


def _unescaped(field: str) -> str:
    """A field as COPY's text format reads it back."""
    out, chars = [], iter(field)
    for char in chars:
        if char == "\\":
            escaped = next(chars)
            out.append({"t": "\t", "n": "\n", "r": "\r"}.get(escaped, escaped))
        else:
            out.append(char)
    return "".join(out)


def _rows(text: bytes) -> list[tuple[str, str, int]]:
    """The rows of COPY text: lines end with a newline, columns with a tab; what is escaped
    is neither."""
    lines = text.decode().split("\n")
    assert lines.pop() == ""  # every line ends with a newline
    rows = []
    for line in lines:
        key, stamp, delta = line.split("\t")
        rows.append((_unescaped(key), stamp, int(delta)))
    return rows


def test_a_line_per_entry_and_none_for_a_delta_of_zero() -> None:
    text = copy_text([("a", 2), ("b", 0), ("c", -3)], STAMP)
    assert text == f"a\t{STAMP}\t2\nc\t{STAMP}\t-3\n".encode()
    assert copy_text([("a", 0)], STAMP) == b""


def test_deltas_of_any_size_are_their_digits() -> None:
    huge = 10**40 + 7
    assert _rows(copy_text([("a", huge), ("b", -huge)], STAMP)) == [
        ("a", STAMP, huge),
        ("b", STAMP, -huge),
    ]


@pytest.mark.parametrize(
    "key",
    ["back\\slash", "tab\tkey", "new\nline", "carriage\rreturn", "\\N", "\\.", "ключ😀", "é"],
)
def test_keys_come_back_as_they_were(key: str) -> None:
    entries = [("plain", 1), (key, 2), ("other", 3)]
    assert _rows(copy_text(entries, STAMP)) == [
        ("plain", STAMP, 1),
        (key, STAMP, 2),
        ("other", STAMP, 3),
    ]


def test_only_what_the_format_reads_otherwise_is_escaped() -> None:
    text = copy_text([("a\\b\tc\nd\re f", 1)], STAMP)
    assert text.split(b"\t")[0] == b"a\\\\b\\tc\\nd\\re f"


@pytest.mark.parametrize("ms", [0, 1_700_000_000_123, 86_399_999, 253_402_300_799_999])
def test_bucket_starts_are_exact_to_the_millisecond(ms: int) -> None:
    text = bucket_start_text(ms)
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == timedelta(0)
    assert parsed == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


async def test_chunks_hold_every_row_of_every_bucket_once() -> None:
    deltas = {
        60_000: {f"k{i}": i + 1 for i in range(_COPY_CHUNK_ROWS + 3)},
        120_000: {"a": 0, "b": 5},  # "a" cancelled out within the bucket: no row
    }
    chunks = [chunk async for chunk in _event_chunks([deltas])]
    assert len(chunks) == 3  # the first bucket needs two
    rows = [row for chunk in chunks for row in _rows(chunk)]
    first, second = bucket_start_text(60_000), bucket_start_text(120_000)
    assert rows == [
        *((f"k{i}", first, i + 1) for i in range(_COPY_CHUNK_ROWS + 3)),
        ("b", second, 5),
    ]


async def test_no_chunk_when_every_delta_is_zero() -> None:
    assert [chunk async for chunk in _event_chunks([{0: {"a": 0}}])] == []


def test_totals_of_one_bucket_in_key_order() -> None:
    assert _totals([{0: {"b": 2, "a": 1, "é": 3, "Z": 4}}]) == (["Z", "a", "b", "é"], [4, 1, 2, 3])


def test_totals_sum_over_buckets_and_leave_out_what_sums_to_zero() -> None:
    deltas = {0: {"b": 2, "a": 1, "z": 0}, 1000: {"a": 4, "c": -1, "b": -2}, 2000: {"d": 2**70}}
    assert _totals([deltas]) == (["a", "c", "d"], [5, -1, 2**70])
    assert _totals([{0: {"a": 0}}]) == ([], [])


def test_totals_follow_code_points_as_utf8_bytes_do() -> None:
    keys = ["b", "a", "é", "z", "😀", "ﬀ", "B"]
    sorted_keys, _ = _totals([{0: dict.fromkeys(keys, 1)}])
    assert sorted_keys == sorted(keys, key=lambda k: k.encode())
