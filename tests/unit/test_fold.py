from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest

from distcount_aggregator import PartitionState, bucket_start_ms, fold, next_tick_ms, unseen
from distcount_codec import Increment, InvalidRecord, RecordDecoder, decode_record


@pytest.mark.parametrize(
    ("timestamp_ms", "bucket_ms", "start"),
    [
        (0, 5000, 0),
        (4999, 5000, 0),
        (5000, 5000, 5000),
        (1_700_000_001_234, 1000, 1_700_000_001_000),
    ],
)
def test_bucket_start(timestamp_ms: int, bucket_ms: int, start: int) -> None:
    assert bucket_start_ms(timestamp_ms, bucket_ms) == start


def test_ticks_fall_on_interval_boundaries() -> None:
    # a fake clock stepping through a boundary
    assert next_tick_ms(0, 5000) == 5000
    assert next_tick_ms(4999, 5000) == 5000
    assert next_tick_ms(5000, 5000) == 10000
    assert next_tick_ms(12_345, 1000) == 13_000


def test_partition_state_lifecycle() -> None:
    state = PartitionState(2, stored_offset=None)
    assert not state.dirty
    state.deltas[0] = {"a": 3}
    state.folded_until = state.position = 10
    assert state.dirty

    state.committed()
    assert (state.stored_offset, state.folded_until, state.deltas, state.position) == (
        10,
        None,
        {},
        10,
    )

    state.deltas[0] = {"b": 1}
    state.folded_until = state.position = 12
    state.reset(stored_offset=11)  # another process flushed up to 11
    assert (state.stored_offset, state.position, state.folded_until, state.deltas) == (
        11,
        11,
        None,
        {},
    )


@dataclass(frozen=True)
class FakeRecord:
    """The fields of a consumer record that folding reads."""

    offset: int
    timestamp: int
    value: bytes | None


def _record(offset: int, timestamp: int, key: str, value: int) -> FakeRecord:
    return FakeRecord(offset, timestamp, orjson.dumps({"key": key, "value": value}))


def test_fold_sums_per_bucket_and_key() -> None:
    state = PartitionState(0, stored_offset=None)
    decoder = RecordDecoder()
    records = [
        _record(0, 1_000, "a", 1),
        _record(1, 1_999, "a", 2),
        _record(2, 2_000, "a", 5),
        _record(3, 1_500, "b", -1),  # late timestamp: back to its own bucket
        _record(4, 2_500, "a", 1),
    ]
    assert fold(state, records, 1000, decoder) == []
    assert state.deltas == {1000: {"a": 3, "b": -1}, 2000: {"a": 6}}
    assert (state.position, state.folded_until) == (5, 5)
    assert {key for key, _ in decoder.known.values()} == {"a", "b"}


def test_fold_rejects_what_breaks_the_contract_and_moves_past_it() -> None:
    state = PartitionState(0, stored_offset=None)
    decoder = RecordDecoder()
    records = [
        FakeRecord(0, 1000, b"{oops"),
        FakeRecord(1, 1000, None),
        FakeRecord(2, 1000, orjson.dumps({"key": "a", "value": 0})),
        FakeRecord(3, -1, orjson.dumps({"key": "a", "value": 1})),
        FakeRecord(4, 1000, orjson.dumps({"key": ["a"], "value": 1})),
        _record(5, 1000, "a", 4),
    ]
    rejected = fold(state, records, 1000, decoder)
    assert [(r.offset, reason.split(":")[0]) for r, reason in rejected] == [
        (0, "value is not UTF-8 JSON"),
        (1, "empty record value"),
        (2, "breaks the record contract"),
        (3, "record has no timestamp"),
        (4, "breaks the record contract"),
    ]
    assert state.deltas == {1000: {"a": 4}}
    assert state.folded_until == 6
    # only what decoded is remembered: a bad value is checked again each time it comes
    assert list(decoder.known.values()) == [Increment("a", 1), Increment("a", 4)]


def test_records_before_the_position_are_not_unseen() -> None:
    state = PartitionState(0, stored_offset=10)
    records = [_record(offset, 1000, "a", 1) for offset in range(8, 13)]
    fresh = unseen(state, records)
    assert [r.offset for r in fresh] == [10, 11, 12]
    assert fold(state, fresh, 1000, RecordDecoder()) == []
    assert state.deltas == {1000: {"a": 3}}
    assert state.position == 13
    assert unseen(state, records[:2]) == []  # all old: nothing to fold
    assert unseen(PartitionState(0, None), records) is records  # nothing stored: all new


def test_an_unknown_key_is_validated_before_it_counts() -> None:
    state = PartitionState(0, stored_offset=None)
    decoder = RecordDecoder()
    rejected = fold(state, [_record(0, 0, "x" * 300, 1)], 1000, decoder)
    assert len(rejected) == 1
    assert "at most 256 bytes" in rejected[0][1]
    assert decoder.known == {}
    assert state.deltas == {}


def test_a_timestamp_past_what_postgresql_stores_is_rejected() -> None:
    state = PartitionState(0, stored_offset=None)
    rejected = fold(
        state, [_record(0, 10**16, "a", 1), _record(1, 1000, "a", 1)], 1000, RecordDecoder()
    )
    assert [(r.offset, reason) for r, reason in rejected] == [
        (0, "timestamp 10000000000000000 is past the year 9999")
    ]
    assert state.deltas == {1000: {"a": 1}}


def test_a_record_naming_a_member_twice_is_dead_lettered_even_for_a_known_key() -> None:
    state = PartitionState(0, stored_offset=None)
    decoder = RecordDecoder()
    fold(state, [_record(0, 0, "a", 1), _record(1, 0, "b", 1)], 1000, decoder)
    state = PartitionState(0, stored_offset=None)
    records = [
        FakeRecord(0, 1000, b'{"key":"a","value":1,"key":"b"}'),
        FakeRecord(1, 1000, b'{"key":"a","value":1,"value":1000}'),
        FakeRecord(2, 1000, b'{"key":"a","value":1,"k\\u0065y":"b"}'),
        FakeRecord(3, 1000, b'{"key":"a\\"","value":1}'),  # escaped quote, no repeat: counted
        FakeRecord(4, 1000, b'{"key":"b","value":2,"note":"x"}'),  # another member: counted
    ]
    rejected = fold(state, records, 1000, decoder)
    assert [(r.offset, reason) for r, reason in rejected] == [
        (0, "breaks the record contract: key: must not be repeated"),
        (1, "breaks the record contract: value: must not be repeated"),
        (2, "breaks the record contract: key: must not be repeated"),
    ]
    assert state.deltas == {1000: {'a"': 1, "b": 2}}


@pytest.mark.parametrize(
    "literal", [b"9223372036854775808", b"-9223372036854775809", b"-1" + b"0" * 400]
)
def test_a_value_past_int64_is_dead_lettered_for_the_range(literal: bytes) -> None:
    state = PartitionState(0, stored_offset=None)
    record = FakeRecord(0, 1000, b'{"key":"a","value":%s}' % literal)
    rejected = fold(state, [record], 1000, RecordDecoder())
    assert [reason for _, reason in rejected] == [
        "breaks the record contract: value: must be within the 64-bit signed integer range"
    ]
    assert state.deltas == {}


def test_a_value_decoded_once_is_remembered_within_a_bound() -> None:
    decoder = RecordDecoder(max_known=2)
    state = PartitionState(0, stored_offset=None)
    a1, b1, c1 = (orjson.dumps({"key": k, "value": 1}) for k in "abc")
    fold(state, [FakeRecord(0, 0, a1), FakeRecord(1, 0, a1), FakeRecord(2, 0, b1)], 1000, decoder)
    assert decoder.known == {a1: Increment("a", 1), b1: Increment("b", 1)}
    fold(state, [FakeRecord(3, 0, c1)], 1000, decoder)  # full: starts afresh
    assert decoder.known == {c1: Increment("c", 1)}
    assert state.deltas == {0: {"a": 2, "b": 1, "c": 1}}


def test_a_remembered_value_is_what_decoding_says() -> None:
    # the memory must never admit what the full rules refuse, nor change what they accept
    decoder = RecordDecoder()
    values = [
        b'{"key":"a","value":1}',
        b'{"value":1,"key":"a"}',
        b'{"key":"a","value":1,"key":"a"}',
        b'{"key":"a\\u0000","value":1}',
        b'{"key":"a\x01","value":1}',
        b'{"key":"a","value":1.0}',
        b'{"key":"a","value":9223372036854775808}',
        b'{"key":"' + "\u00e9".encode() * 129 + b'","value":1}',
        b'{"key":"' + "\u00e9".encode() * 128 + b'","value":1}',
    ]
    for value in values:
        try:
            want: tuple[str, int] | str = decode_record(value)
        except InvalidRecord as exc:
            want = str(exc)
        for _ in range(2):  # decoded, then remembered
            try:
                got: tuple[str, int] | str = decoder.known.get(value) or decoder.decode(value)[:2]
            except InvalidRecord as exc:
                got = str(exc)
            assert got == want, value


def test_as_of_is_the_time_of_the_latest_probe_the_folded_offset_reached() -> None:
    state = PartitionState(0, stored_offset=10)
    assert state.next_offset == 10
    state.probe(1_000, 12)  # asked at 1,000 ms: the partition ended at 12
    assert state.as_of_ms is None  # 10 < 12: not everything acknowledged by then is folded
    state.probe(1_500, 15)
    fold(state, [_record(offset, 0, "a", 1) for offset in (10, 11)], 1000, RecordDecoder())
    state.reach()
    assert state.as_of_ms == 1_000  # 12 reached, 15 not yet
    assert state.flush_due
    fold(state, [_record(offset, 0, "a", 1) for offset in (12, 13, 14)], 1000, RecordDecoder())
    state.reach()
    assert state.probes == []
    assert state.as_of_ms == 1_500
    state.committed()
    assert (state.stored_offset, state.as_of_ms, state.flush_due) == (15, None, False)


def test_a_caught_up_idle_partition_has_an_as_of_to_store_without_records() -> None:
    state = PartitionState(3, stored_offset=None)
    state.position = 0  # an empty partition: nothing stored, nothing to fold
    state.probe(2_000, 0)
    assert (state.as_of_ms, state.dirty, state.flush_due, state.next_offset) == (
        2_000,
        False,
        True,
        0,
    )


def test_a_lagging_partition_keeps_its_newest_probes_only() -> None:
    state = PartitionState(0, stored_offset=0)
    for i in range(40):
        state.probe(i, 100 + i)
    assert len(state.probes) == 16
    assert state.probes[-1] == (39, 139)
    state.reset(5)
    assert (state.probes, state.as_of_ms) == ([], None)
