from __future__ import annotations

import json
import random

import orjson
import pytest

from distcount_codec import (
    INT64_MAX,
    INT64_MIN,
    Increment,
    InvalidIncrement,
    InvalidJSON,
    InvalidRecord,
    RecordDecoder,
    decode_keyed_record,
    decode_record,
    encode_record,
    parse_json,
    sum_by_key,
    unique_members,
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


# --- integers past 64 bits: one rule, one message ---------------------------------------------

OUT_OF_RANGE = "must be within the 64-bit signed integer range"
BEYOND_INT64 = [
    b"9223372036854775808",  # orjson: an exact int
    b"-9223372036854775809",  # orjson: a float
    b"18446744073709551616",  # orjson: a float
    b"1" + b"0" * 400,  # orjson: refused, "infinity"
    b"-1" + b"0" * 5000,  # past the 4300 digits Python's int() takes
]


@pytest.mark.parametrize("literal", BEYOND_INT64)
def test_integers_past_int64_break_the_range_rule_alike(literal: bytes) -> None:
    with pytest.raises(InvalidIncrement) as caught:
        validate_increment(parse_json(b'{"key": "k", "value": %s}' % literal))
    assert caught.value.errors == {"value": [OUT_OF_RANGE]}


@pytest.mark.parametrize("literal", BEYOND_INT64)
def test_records_past_int64_are_dead_lettered_for_the_range(literal: bytes) -> None:
    with pytest.raises(InvalidRecord) as caught:
        decode_record(b'{"key":"k","value":%s}' % literal)
    assert str(caught.value) == f"breaks the record contract: value: {OUT_OF_RANGE}"


def test_integers_within_int64_and_floats_parse_as_before() -> None:
    assert parse_json(b"[-9223372036854775808, 9223372036854775807, 12345678901234567890.5]") == [
        INT64_MIN,
        INT64_MAX,
        12345678901234567890.5,
    ]
    assert parse_json(b'{"v": [1e3, 800.0], "n": 12345678901234567890123}') == {
        "v": [1000.0, 800.0],
        "n": INT64_MAX + 1,  # past 19 digits, any value out of range stands for the literal
    }


@pytest.mark.parametrize(
    "text",
    [
        # each holds a 19-digit run, so orjson's refusal is checked by the exact parser too
        b'{"key": "k", "value": 12345678901234567890, "x": NaN}',
        b'{"key": "k", "value": -12345678901234567890, "x": Infinity}',
        b"[-Infinity, 12345678901234567890]",
        b"[1234567890123456789e400]",
        b'["\\ud800", 12345678901234567890]',
        b'["\\udc00\\ud83d", 12345678901234567890]',
        b"\xef\xbb\xbf[12345678901234567890]",
        b'["\xed\xa0\x80", 12345678901234567890]',  # a surrogate encoded in UTF-8
        b'["\xff", 12345678901234567890]',
        b"[12345678901234567890",
        b"[12345678901234567890] x",
        b"[012345678901234567890]",
        b"[" * 5000 + b"12345678901234567890" + b"]" * 5000,
    ],
)
def test_the_exact_parse_is_as_strict_as_orjson(text: bytes) -> None:
    with pytest.raises(InvalidJSON, match="is not valid JSON"):
        parse_json(text)


def test_a_surrogate_pair_is_one_character_in_the_exact_parse_too() -> None:
    assert parse_json(b'["\\ud83d\\ude00", 12345678901234567890]') == ["😀", 12345678901234567890]


def test_nesting_only_orjson_can_parse_keeps_its_floats() -> None:
    depth = 1000  # orjson takes 1024 levels; Python's parser stops near its recursion limit
    text = b"[" * depth + b"-12345678901234567890" + b"]" * depth
    value = parse_json(text)
    for _ in range(depth):
        assert isinstance(value, list)
        (value,) = value
    assert value == -12345678901234567890.0


# --- objects that name a member twice ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (b'{"key": "a", "key": "b", "value": 1}', "key"),
        (b'{"key": "a", "value": 1, "value": 2}', "value"),
        (b'{"key": "a", "k\\u0065y": "b", "value": 1}', "key"),  # the same name, escaped
        (b'{"key" : "a" ,\n "key"\t:"a", "value": 1}', "key"),
        (b'{"key": "a\\"", "value": 1, "key": "a"}', "key"),  # an escaped quote as well
        (
            b'{"increments": [{"key": "a", "value": 1}, {"key": "b", "value": 1, "value": 2}]}',
            "increments[1].value",
        ),
        (b'{"key": "a", "value": 1, "x": {"y": [1, {"z": 1, "z": 1}]}}', "x.y[1].z"),
        (b'[[{"a": 1}], [0, {"b": "b", "b": "b"}]]', "[1][1].b"),
        (b'{"": 1, "": 2}', '""'),
        (b'{"%s": 1, "%s": 2}' % (b"n" * 100, b"n" * 100), "n" * 64 + "…"),
    ],
)
def test_a_member_named_twice_is_refused_by_field(text: bytes, field: str) -> None:
    with pytest.raises(InvalidIncrement) as caught:
        parse_json(text)
    assert not isinstance(caught.value, InvalidJSON)
    assert caught.value.errors == {field: ["must not be repeated"]}
    assert not unique_members(text, orjson.loads(text))


@pytest.mark.parametrize(
    "text",
    [
        b'{"key": "a", "value": 1}',
        b'{"key": "key", "value": 1, "id": "value"}',  # values equal to names are not names
        b'{"key": "a\\"b", "value": 1}',  # escaped quotes: more quotes than strings
        b'{"key": "a:\\"\\\\", "value": 1, "x": ":"}',
        b'{"a": {"a": 1}, "b": {"a": {"a": [{"a": 1}, {"a": 2}]}}}',  # one name per object
        b'{"k\\u0065y": "a", "kEy": "b", "value": 1}',
        b'["a", "a", {"a": "a"}]',
        b'"a"',
        b"12",
    ],
)
def test_the_same_name_in_other_objects_or_as_a_value_is_no_repeat(text: bytes) -> None:
    assert parse_json(text) == json.loads(text)
    assert unique_members(text, orjson.loads(text))


def test_a_record_naming_a_member_twice_is_dead_lettered() -> None:
    with pytest.raises(InvalidRecord) as caught:
        decode_record(b'{"key":"a","value":1,"key":"b"}')
    assert str(caught.value) == "breaks the record contract: key: must not be repeated"


def _random_json(rng: random.Random, depth: int = 0) -> str:
    """A JSON text whose objects repeat names now and then, spelled with or without escapes."""
    kinds = ["object", "object", "array", "string", "number"]
    kind = rng.choice(kinds if depth < 4 else kinds[3:])
    space = rng.choice(["", "", " ", "\n\t "])
    if kind == "object":
        members = [
            f"{_random_string(rng)}{space}:{space}{_random_json(rng, depth + 1)}"
            for _ in range(rng.randrange(4))
        ]
        return "{" + f",{space}".join(members) + "}"
    if kind == "array":
        return "[" + ",".join(_random_json(rng, depth + 1) for _ in range(rng.randrange(4))) + "]"
    if kind == "string":
        return _random_string(rng)
    return rng.choice(["1", "-2.5e3", "true", "null", "12345678901234567890"])


def _random_string(rng: random.Random) -> str:
    # "key" too: unique_members has a shortcut for an increment's shape
    names = ['"a"', '"\\u0061"', '"a\\"b"', '"\\\\"', '"a:b"', '""', '"key"', '"k\\u0065y"']
    names += ['"é"', '"\\u00e9"', '"\\u00E9"']
    return rng.choice(names)


def _errors_of(text: bytes) -> list[list[str]] | None:
    try:
        parse_json(text)
    except InvalidIncrement as exc:
        return list(exc.errors.values())
    return None


def test_unique_members_agrees_with_a_parser_that_sees_every_member() -> None:
    def no_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names):
            raise LookupError
        return dict(pairs)

    rng = random.Random(20240611)
    seen = {True: 0, False: 0}
    for _ in range(5000):
        text = _random_json(rng).encode()
        try:
            json.loads(text, object_pairs_hook=no_repeats)
            expected = True
        except LookupError:
            expected = False
        assert unique_members(text, orjson.loads(text)) is expected, text
        assert unique_members(text, json.loads(text)) is expected, text
        assert _errors_of(text) == (None if expected else [["must not be repeated"]]), text
        seen[expected] += 1
    assert min(seen.values()) > 500  # both kinds of text were met often


@pytest.mark.parametrize(
    "value",
    [
        b'{"key":"a","value":1,"id":"x"}',
        b'{"id":"x","value":-5,"key":"a"}',
        b'{"key":"a","value":1,"id":"x","id":"y"}',  # repeated: the long way refuses it
        b'{"key":"a\\"","value":1,"id":"x"}',  # an escape: the long way
        b'{"key":"a","value":1,"id":7}',
        b'{"key":"a","value":1,"id":""}',
        b'{"key":"a","value":1,"id":"' + b"x" * 513 + b'"}',
        b'{"key":"a","value":1,"id":"' + "\u00e9".encode() * 200 + b'"}',
        b'{"key":"a","value":1,"note":"x"}',
        b'{"key":"a","value":1,"id":null}',
    ],
)
def test_the_decoder_reads_ids_as_the_record_contract_does(value: bytes) -> None:
    try:
        (key, count), ident = decode_keyed_record(value)
        want: object = (key, count, ident)
    except InvalidRecord as exc:
        want = str(exc)
    try:
        got: object = RecordDecoder().decode(value)
    except InvalidRecord as exc:
        got = str(exc)
    assert got == want
