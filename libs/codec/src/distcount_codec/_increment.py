"""An increment and its rules, in one place for the HTTP ingress and the Kafka consumer alike.

Rules: the key is 1..256 bytes of UTF-8 without control characters; the value is a non-zero
integer within int64 (JSON booleans and floats are not integers here). On Kafka, the record value
is UTF-8 JSON `{"key": …, "value": …}` and the message key is the counter key; the message key is
only for locality, the value's key is the one counted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, NamedTuple

import orjson

MAX_KEY_BYTES: Final = 256
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

# C0 controls, DEL and C1 controls
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# a key this short cannot exceed MAX_KEY_BYTES however it encodes (at most 4 bytes a character)
_ALWAYS_SHORT_ENOUGH = MAX_KEY_BYTES // 4


class Increment(NamedTuple):
    key: str
    value: int


class InvalidIncrement(ValueError):
    """Input that breaks the rules; `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{f}: {', '.join(m)}" for f, m in errors.items()))
        self.errors = errors


class InvalidRecord(ValueError):
    """A Kafka record that breaks the contract; the message is the reason given to the DLQ."""


def parse_json(body: bytes) -> object:
    """Parse a request body or record value; raises InvalidIncrement for what is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidIncrement({"body": [f"is not valid JSON: {exc}"]}) from None


def _key_errors(key: object) -> list[str]:
    if not isinstance(key, str):
        return ["can't be blank"] if key is None else ["must be a string"]
    if not key:
        return ["can't be blank"]
    if len(key) > _ALWAYS_SHORT_ENOUGH:
        try:
            size = len(key.encode())
        except UnicodeEncodeError:
            return ["must be valid UTF-8"]
        if size > MAX_KEY_BYTES:
            return [f"must be at most {MAX_KEY_BYTES} bytes of UTF-8 (it is {size})"]
    if _CONTROL.search(key):
        return ["must not contain control characters"]
    return []


def _value_errors(value: object) -> list[str]:
    if value is None:
        return ["can't be blank"]
    if type(value) is not int:  # bool is an int subclass, and not a count
        return ["must be an integer"]
    if value == 0:
        return ["must not be zero"]
    if not INT64_MIN <= value <= INT64_MAX:
        return ["must be within the 64-bit signed integer range"]
    return []


def validate_increment(data: object, prefix: str = "") -> Increment:
    """An Increment from a parsed JSON object, or InvalidIncrement naming each bad field."""
    if not isinstance(data, dict):
        raise InvalidIncrement({prefix.rstrip(".") or "body": ["must be a JSON object"]})
    key, value = data.get("key"), data.get("value")
    errors = {}
    if key_errors := _key_errors(key):
        errors[f"{prefix}key"] = key_errors
    if value_errors := _value_errors(value):
        errors[f"{prefix}value"] = value_errors
    if errors:
        raise InvalidIncrement(errors)
    return Increment(key, value)  # type: ignore[arg-type] # both checked above


def validate_batch(data: object, max_items: int) -> list[Increment]:
    """The increments of `{"increments": [...]}`; every bad item is reported, by index."""
    if not isinstance(data, dict):
        raise InvalidIncrement({"body": ["must be a JSON object"]})
    items = data.get("increments")
    if not isinstance(items, list) or not items:
        raise InvalidIncrement({"increments": ["must be a non-empty list"]})
    if len(items) > max_items:
        raise InvalidIncrement({"increments": [f"must hold at most {max_items} items"]})
    increments: list[Increment] = []
    errors: dict[str, list[str]] = {}
    for index, item in enumerate(items):
        try:
            increments.append(validate_increment(item, prefix=f"increments[{index}]."))
        except InvalidIncrement as exc:
            errors.update(exc.errors)
    if errors:
        raise InvalidIncrement(errors)
    return increments


def sum_by_key(increments: Iterable[Increment]) -> list[Increment]:
    """One increment per distinct key, in first-seen order; keys summing to zero are dropped.

    A sum beyond int64 is split into several increments, each within the record contract.
    """
    sums: dict[str, int] = {}
    for key, value in increments:
        sums[key] = sums.get(key, 0) + value
    result: list[Increment] = []
    for key, total in sums.items():
        rest = total
        while rest > INT64_MAX or rest < INT64_MIN:
            part = INT64_MAX if rest > 0 else INT64_MIN
            result.append(Increment(key, part))
            rest -= part
        if rest:
            result.append(Increment(key, rest))
    return result


def encode_record(increment: Increment) -> tuple[bytes, bytes]:
    """(message key, message value) for the Kafka topic."""
    return increment.key.encode(), orjson.dumps({"key": increment.key, "value": increment.value})


def decode_record(value: bytes | None) -> Increment:
    """The increment a record carries, or InvalidRecord with the reason."""
    if not value:
        raise InvalidRecord("empty record value")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"value is not UTF-8 JSON: {exc}") from None
    if type(data) is dict:
        key, count = data.get("key"), data.get("value")
        # the common case, checked inline: this runs once per record on the consumer's hot path
        if (
            type(key) is str
            and type(count) is int
            and 0 < len(key) <= _ALWAYS_SHORT_ENOUGH
            and count != 0
            and INT64_MIN <= count <= INT64_MAX
            and not _CONTROL.search(key)
        ):
            return Increment(key, count)
    try:
        return validate_increment(data)
    except InvalidIncrement as exc:
        raise InvalidRecord(f"breaks the record contract: {exc}") from None
