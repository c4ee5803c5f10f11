"""`batch_records`, the ingress's one pass over a batch, gives what validate_batch, sum_by_key and
encode_record give one after the other: the same records in the same order, the same errors."""

from __future__ import annotations

import random

import pytest

from distcount_codec import (
    INT64_MAX,
    INT64_MIN,
    InvalidIncrement,
    batch_records,
    encode_record,
    sum_by_key,
    validate_batch,
)

MAX_ITEMS = 1000


def _long_way(data: object) -> list[tuple[bytes, bytes]] | dict[str, list[str]]:
    try:
        return [encode_record(i) for i in sum_by_key(validate_batch(data, MAX_ITEMS))]
    except InvalidIncrement as exc:
        return exc.errors


def _one_pass(data: object) -> list[tuple[bytes, bytes]] | dict[str, list[str]]:
    try:
        return batch_records(data, MAX_ITEMS)
    except InvalidIncrement as exc:
        return exc.errors


# keys and values of every kind the rules tell apart, the plain ones most often
KEYS: list[object] = [
    "a",
    "b",
    "c",
    "ключ",
    "😀",
    "x" * 64,  # as long as a key can be and still take the quick way
    "y" * 65,  # one more: the UTF-8 size must be counted
    "é" * 200,  # 400 bytes: too long
    "tab\there",
    "del\x7f",
    "c1\x85",
    "",
    None,
    7,
    ["a"],
]
VALUES: list[object] = [1, 1, 2, -1, -2, 5, 0, True, 1.0, "1", None, INT64_MAX, INT64_MIN, 2**63]


def _item(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.02:
        return "not an object"
    item: dict[str, object] = {}
    if roll < 0.97 or rng.random() < 0.5:
        item["key"] = rng.choice(KEYS[:4]) if rng.random() < 0.7 else rng.choice(KEYS)
    if roll < 0.97 or rng.random() < 0.5:
        item["value"] = rng.choice(VALUES[:6]) if rng.random() < 0.7 else rng.choice(VALUES)
    if rng.random() < 0.05:
        item["extra"] = 1
    return item


@pytest.mark.parametrize("seed", range(400))
def test_random_batches_come_out_the_same(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([1, 2, 3, 5, 20])
    data = {"increments": [_item(rng) for _ in range(size)]}
    assert _one_pass(data) == _long_way(data)


@pytest.mark.parametrize(
    "data",
    [
        {
            "increments": [
                {"key": "a", "value": 1},
                {"key": "b", "value": 2},
                {"key": "a", "value": 3},
            ]
        },
        {"increments": [{"key": "a", "value": 1}, {"key": "a", "value": -1}]},  # sums to zero
        {"increments": [{"key": "a", "value": INT64_MAX}, {"key": "a", "value": INT64_MAX}]},
        {"increments": [{"key": "a", "value": INT64_MIN}, {"key": "a", "value": -1}]},
        {"increments": [{"key": "a", "value": 1}] * MAX_ITEMS},
        {"increments": [{"key": "a", "value": 1}] * (MAX_ITEMS + 1)},
        {"increments": []},
        {"increments": "a"},
        {"increments": None},
        {},
        [],
        None,
        {"increments": [{"key": "ok", "value": 1}, {"key": "", "value": 0}, {"value": 1.5}]},
    ],
)
def test_edges_come_out_the_same(data: object) -> None:
    assert _one_pass(data) == _long_way(data)


def test_the_plain_case_is_summed_in_first_seen_order() -> None:
    data = {
        "increments": [{"key": "b", "value": 2}, {"key": "a", "value": 1}, {"key": "b", "value": 3}]
    }
    assert batch_records(data, MAX_ITEMS) == [
        (b"b", b'{"key":"b","value":5}'),
        (b"a", b'{"key":"a","value":1}'),
    ]
