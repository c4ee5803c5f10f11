"""An increment, in one place for the HTTP ingress and the Kafka consumer alike: parsed JSON
checked against the rules of `_rules`, batches, and the Kafka record format.

On Kafka, the record value is UTF-8 JSON `{"key": …, "value": …}` and the message key is the
counter key; the message key is only for locality, the value's key is the one counted. A record
may carry an idempotency id, `"id": "…"`: the aggregators count one record of an id at most
once within their window (see the README).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import orjson

from distcount_codec._errors import InvalidIncrement, InvalidJSON, InvalidRecord
from distcount_codec._json import parse_json
from distcount_codec._rules import (
    ALWAYS_SHORT_ENOUGH,
    CONTROL,
    INT64_MAX,
    INT64_MIN,
    id_errors,
    key_errors,
    value_errors,
)


class Increment(NamedTuple):
    key: str
    value: int


def validate_increment(data: object, prefix: str = "") -> Increment:
    """An Increment from a parsed JSON object, or InvalidIncrement naming each bad field."""
    if not isinstance(data, dict):
        raise InvalidIncrement({prefix.rstrip(".") or "body": ["must be a JSON object"]})
    key, value = data.get("key"), data.get("value")
    errors = {}
    if problems := key_errors(key):
        errors[f"{prefix}key"] = problems
    if problems := value_errors(value):
        errors[f"{prefix}value"] = problems
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


def encode_record(increment: Increment, ident: str | None = None) -> tuple[bytes, bytes]:
    """(message key, message value) for the Kafka topic; `ident` is the record's id, if any."""
    key, value = increment
    if ident is None:
        return key.encode(), orjson.dumps({"key": key, "value": value})
    return key.encode(), orjson.dumps({"key": key, "value": value, "id": ident})


def batch_id(idempotency_key: str, index: int) -> str:
    """The id of a batch's record `index` (in the order of `batch_records`), under the batch's
    idempotency key: the same body sent again makes the same records with the same ids."""
    return f"{idempotency_key} {index}"


def batch_records(
    data: object, max_items: int, idempotency_key: str | None = None
) -> list[tuple[bytes, bytes]]:
    """The Kafka records of a batch body: what `validate_batch`, `sum_by_key` and
    `encode_record` give one after the other (the same records in the same order, the same
    errors), in one pass over the items where every item is plainly valid.

    A batch of a thousand increments spends most of its time in the ingress on these three
    steps, item by item; an item the quick checks below cannot pass (a bad one, or a key too
    long to be sure of its UTF-8 size without encoding it) sends the whole batch the long way,
    which says what is wrong.

    With an `idempotency_key` each record carries the id `batch_id` gives it."""
    if idempotency_key is not None:
        increments = sum_by_key(validate_batch(data, max_items))
        return [
            encode_record(increment, batch_id(idempotency_key, index))
            for index, increment in enumerate(increments)
        ]
    items = data.get("increments") if type(data) is dict else None
    if type(items) is not list or not 0 < len(items) <= max_items:
        return _long_way(data, max_items)  # raises, naming what is wrong
    sums: dict[str, int] = {}
    get = sums.get
    for item in items:
        if type(item) is dict:
            key, value = item.get("key"), item.get("value")
            # what key_errors and value_errors accept, checked in the order cheapest first;
            # printable rules out every control character and costs less than the search
            if (
                type(key) is str
                and 0 < len(key) <= ALWAYS_SHORT_ENOUGH
                and type(value) is int
                and value != 0
                and INT64_MIN <= value <= INT64_MAX
                and (key.isprintable() or not CONTROL.search(key))
            ):
                sums[key] = get(key, 0) + value
                continue
        return _long_way(data, max_items)
    records = []
    for key, total in sums.items():
        if not INT64_MIN <= total <= INT64_MAX:
            return _long_way(data, max_items)  # a sum split over several records
        if total:
            records.append((key.encode(), orjson.dumps({"key": key, "value": total})))
    return records


def _long_way(data: object, max_items: int) -> list[tuple[bytes, bytes]]:
    return [encode_record(increment) for increment in sum_by_key(validate_batch(data, max_items))]


def decode_record(value: bytes | None) -> Increment:
    """The increment a record carries, or InvalidRecord with the reason."""
    return decode_keyed_record(value)[0]


def decode_keyed_record(value: bytes | None) -> tuple[Increment, str | None]:
    """The increment a record carries and its id (None: it has none), or InvalidRecord with
    the reason."""
    if not value:
        raise InvalidRecord("empty record value")
    try:
        data = parse_json(value)
    except InvalidJSON as exc:
        raise InvalidRecord(f"value is not UTF-8 JSON: {exc.detail}") from None
    except InvalidIncrement as exc:  # a member named twice
        raise InvalidRecord(f"breaks the record contract: {exc}") from None
    # the consumer's hot path is `RecordDecoder`, which comes here only for the uncommon shapes
    try:
        increment = validate_increment(data)
    except InvalidIncrement as exc:
        raise InvalidRecord(f"breaks the record contract: {exc}") from None
    assert isinstance(data, dict)  # validate_increment said so
    ident = data.get("id")
    if ident is None and "id" not in data:
        return increment, None
    if problems := id_errors(ident):
        raise InvalidRecord(f"breaks the record contract: id: {', '.join(problems)}")
    return increment, ident
