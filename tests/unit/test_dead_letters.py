"""Dead letters the Kafka client itself refuses to send: a record with neither key nor value,
and any record the client rejects before the broker sees it. Either would otherwise fail every
flush of its partition, for good."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from distcount_aggregator import NULL_HEADER, REASON_HEADER, REFUSED_HEADER, DeadLetters


@dataclass
class _Record:
    key: bytes | None
    value: bytes | None
    partition: int = 0
    offset: int = 7
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class _Producer:
    """Refuses as aiokafka's producer does a record without key and value, and, when told, any
    record whose value is `refuse`."""

    refuse: bytes | None = None
    sent: list[dict[str, Any]] = field(default_factory=list)

    def _check(self, value: bytes | None, key: bytes | None) -> None:
        if value is None and key is None:
            raise AssertionError("Need at least one: key or value")
        if value is not None and value == self.refuse:
            raise TypeError("refused by the client")

    async def send(self, topic: str, *, value: Any, key: Any, headers: Any) -> asyncio.Future[Any]:
        self._check(value, key)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        self.sent.append({"key": key, "value": value, "headers": dict(headers)})
        return done

    async def send_and_wait(self, topic: str, *, value: Any, key: Any = None, headers: Any) -> None:
        self._check(value, key)
        self.sent.append({"key": key, "value": value, "headers": dict(headers)})


async def test_a_record_without_key_and_value_is_sent_with_an_empty_value() -> None:
    producer = _Producer()
    letters = DeadLetters(producer, "dlq")
    await letters.send(_Record(None, None), "empty record value", "t")
    await letters.settle(0)
    (letter,) = producer.sent
    assert (letter["key"], letter["value"]) == (None, b"")
    assert letter["headers"][NULL_HEADER] == b"true"
    assert letter["headers"][REASON_HEADER] == b"empty record value"


async def test_a_record_the_client_refuses_goes_without_its_content() -> None:
    producer = _Producer(refuse=b"odd")
    letters = DeadLetters(producer, "dlq")
    await letters.send(_Record(b"k", b"odd"), "breaks the record contract", "t")
    await letters.settle(0)  # does not raise: the partition can move on
    (letter,) = producer.sent
    assert (letter["key"], letter["value"]) == (None, b"")
    assert letter["headers"][REFUSED_HEADER] == b"refused by the client"
    assert letter["headers"][REASON_HEADER] == b"breaks the record contract"
