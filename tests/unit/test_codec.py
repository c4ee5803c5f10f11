from __future__ import annotations

import json

import orjson
import pytest

from distcount_codec import (
    INT64_MAX,
    INT64_MIN,
    Increment,
    InvalidIncrement,
    InvalidRecord,
    decode_record,
    encode_record,
    parse_json,
    sum_by_key,
    validate_batch,
    validate_increment,
)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"value": 1}, "key", "can't be blank"),
        ({"key": "", "value": 1}, "key", "can't be blank"),
        ({"key": 5, "value": 1}, "key", "must be a string"),
        ({"key": "x" * 257, "value": 1}, "key", "at most 256 bytes"),
        ({"key": "é" * 129, "value": 1}, "key", "at most 256 bytes"),  # 258 bytes, 129 chars
        ({"key": "a\x00b", "value": 1}, "key", "control characters"),
        ({"key": "a\x7f", "value": 1}, "key", "control characters"),
        ({"key": "a\x85", "value": 1}, "key", "control characters"),
        ({"key": "\ud800" * 70, "value": 1}, "key", "valid UTF-8"),
        ({"key": "k"}, "value", "can't be blank"),
        ({"key": "k", "value": 0}, "value", "must not be zero"),
        ({"key": "k", "value": 1.0}, "value", "must be an integer"),
        ({"key": "k", "value": "1"}, "value", "must be an integer"),
        ({"key": "k", "value": True}, "value", "must be an integer"),
        ({"key": "k", "value": INT64_MAX + 1}, "value", "64-bit"),
        ({"key": "k", "value": INT64_MIN - 1}, "value", "64-bit"),
    ],
)
def test_invalid_increments_name_the_field(data: object, field: str, message: str) -> None:
    with pytest.raises(InvalidIncrement) as caught:
        validate_increment(data)
    assert message in " ".join(caught.value.errors[field])


@pytest.mark.parametrize(
    "data",
    [
        {"key": "c1", "value": 1},
        {"key": "x" * 256, "value": -1},
        {"key": "é" * 128, "value": INT64_MAX},  # exactly 256 bytes
        {"key": "emoji 🎉", "value": INT64_MIN},
        {"key": "c1", "value": 1, "extra": "ignored"},
    ],
)
def test_valid_increments(data: dict[str, object]) -> None:
    assert validate_increment(data) == Increment(str(data["key"]), int(str(data["value"])))


def test_both_fields_reported_at_once() -> None:
    with pytest.raises(InvalidIncrement) as caught:
        validate_increment({"key": "", "value": 0})
    assert set(caught.value.errors) == {"key", "value"}


@pytest.mark.parametrize("data", [[1], 3, "s", None])
def test_not_an_object(data: object) -> None:
    with pytest.raises(InvalidIncrement) as caught:
        validate_increment(data)
    assert caught.value.errors == {"body": ["must be a JSON object"]}


def test_parse_json_reports_broken_json() -> None:
    with pytest.raises(InvalidIncrement) as caught:
        parse_json(b'{"key": ')
    assert "is not valid JSON" in caught.value.errors["body"][0]


def test_batch_reports_each_bad_item_by_index() -> None:
    with pytest.raises(InvalidIncrement) as caught:
        validate_batch({"increments": [{"key": "a", "value": 1}, {"key": "b", "value": 0}, 7]}, 10)
    assert caught.value.errors == {
        "increments[1].value": ["must not be zero"],
        "increments[2]": ["must be a JSON object"],
    }


@pytest.mark.parametrize("data", [{}, {"increments": []}, {"increments": {}}, []])
def test_batch_needs_a_non_empty_list(data: object) -> None:
    with pytest.raises(InvalidIncrement):
        validate_batch(data, 10)


def test_batch_size_is_bounded() -> None:
    with pytest.raises(InvalidIncrement, match="at most 2 items"):
        validate_batch({"increments": [{"key": "a", "value": 1}] * 3}, 2)


def test_sum_by_key_presums_and_drops_zero_sums() -> None:
    got = sum_by_key(
        [
            Increment("a", 1),
            Increment("b", 2),
            Increment("a", 4),
            Increment("c", 1),
            Increment("c", -1),
        ]
    )
    assert got == [Increment("a", 5), Increment("b", 2)]


def test_sum_by_key_splits_sums_beyond_int64() -> None:
    got = sum_by_key([Increment("a", INT64_MAX)] * 3)
    assert sum(i.value for i in got) == 3 * INT64_MAX
    assert all(INT64_MIN <= i.value <= INT64_MAX and i.value for i in got)
    negative = sum_by_key([Increment("n", INT64_MIN)] * 2 + [Increment("n", -5)])
    assert sum(i.value for i in negative) == 2 * INT64_MIN - 5


def test_record_round_trip() -> None:
    key, value = encode_record(Increment("c1", -3))
    assert key == b"c1"
    assert json.loads(value) == {"key": "c1", "value": -3}
    assert decode_record(value) == Increment("c1", -3)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty record value"),
        (b"", "empty record value"),
        (b"{", "not UTF-8 JSON"),
        (b"\xc3\x28", "not UTF-8 JSON"),
        (b"[]", "must be a JSON object"),
        (orjson.dumps({"key": "k", "value": 0}), "must not be zero"),
        (orjson.dumps({"key": "k" * 300, "value": 1}), "at most 256 bytes"),
        (orjson.dumps({"key": "k\n", "value": 1}), "control characters"),
    ],
)
def test_records_that_break_the_contract(value: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        decode_record(value)


def test_long_valid_keys_take_the_slow_path_and_pass() -> None:
    assert decode_record(orjson.dumps({"key": "é" * 128, "value": 2})) == Increment("é" * 128, 2)
