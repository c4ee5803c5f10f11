"""Records that break the contract go to the dead-letter topic, with the reason in a header.

A send is started while folding and settled before the flush that moves the partition's offset
past the record commits: a record is never skipped without being in the dead-letter topic. The
sends waiting to be settled are kept here, per partition, so the partition's state stays data.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError

REASON_HEADER = "distcount.reason"
SOURCE_HEADER = "distcount.source"
# A record with neither key nor value (some clients send one): Kafka's clients refuse to send
# such a record, so its dead letter has an empty value, and this header says it was null.
NULL_HEADER = "distcount.null-value"
# set on a stripped dead letter, when the client refused the record as it was (the reason why)
REFUSED_HEADER = "distcount.refused"
# set when a record too large to dead-letter whole was cut to its first _KEPT_BYTES
TRUNCATED_HEADER = "distcount.truncated-from-bytes"
_KEPT_BYTES = 64 * 1024


@dataclass
class PendingDeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    sent: asyncio.Future[Any] | None
    acknowledged: bool = False  # by the broker: a later settle skips it


class DeadLetters:
    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self.topic = topic
        self._pending: dict[int, list[PendingDeadLetter]] = {}

    async def send(self, record: Any, reason: str, source_topic: str) -> None:
        """Start sending `record` with its reason; `settle(record.partition)` waits for it."""
        self._pending.setdefault(record.partition, []).append(
            await self._start(record, reason, source_topic)
        )

    async def settle(self, partition: int) -> None:
        """Until the broker acknowledged every send of `partition` started so far."""
        await self._settle(self._pending.get(partition, []))

    def started(self, partition: int) -> int:
        """How many sends of `partition` were started so far (see `forget`)."""
        return len(self._pending.get(partition, ()))

    def forget(self, partition: int, first: int | None = None) -> None:
        """The partition's offset moved past its sends (committed), or they will be made again
        (its state was dropped): nothing to wait for any more. With `first`, only the first
        that many: those of the records a flush took, when records folded since have sends of
        their own that the next flush must still wait for."""
        if first is None:
            self._pending.pop(partition, None)
        elif (pending := self._pending.get(partition)) is not None:
            del pending[:first]

    async def _start(self, record: Any, reason: str, source_topic: str) -> PendingDeadLetter:
        headers = [
            (REASON_HEADER, reason.encode()),
            (SOURCE_HEADER, f"{source_topic}/{record.partition}/{record.offset}".encode()),
            *((k, v) for k, v in (record.headers or ()) if k not in (REASON_HEADER, SOURCE_HEADER)),
        ]
        value = record.value
        if value is None and record.key is None:
            value = b""
            headers.insert(2, (NULL_HEADER, b"true"))
        pending = PendingDeadLetter(record.key, value, headers, None)
        try:
            pending.sent = await self._producer.send(
                self.topic, value=value, key=record.key, headers=headers
            )
        except Exception:
            pending.sent = None
        return pending

    async def _settle(self, pending: list[PendingDeadLetter]) -> None:
        """Wait until the broker acknowledged every one; re-send the failed ones once."""
        for letter in pending:
            if letter.acknowledged:
                continue
            if letter.sent is not None:
                try:
                    await letter.sent
                except Exception:
                    letter.sent = None  # failed: sent again below, once per settle
                else:
                    letter.acknowledged = True
                    continue
            try:
                await self._producer.send_and_wait(
                    self.topic, value=letter.value, key=letter.key, headers=letter.headers
                )
            except (AssertionError, TypeError, ValueError) as exc:
                # the client refused the record itself (not the broker): a retry would meet the
                # same refusal and stop the flush for good, so the letter goes without its
                # content, saying why, and the partition moves on
                await self._producer.send_and_wait(
                    self.topic,
                    value=b"",
                    headers=[*letter.headers[:2], (REFUSED_HEADER, str(exc).encode()[:1024])],
                )
            except MessageSizeTooLargeError:
                # the headers pushed a record near Kafka's size limit over it: keep its start
                size = len(letter.value or b"") + len(letter.key or b"")
                await self._producer.send_and_wait(
                    self.topic,
                    value=None if letter.value is None else letter.value[:_KEPT_BYTES],
                    key=None if letter.key is None else letter.key[:_KEPT_BYTES],
                    headers=[*letter.headers, (TRUNCATED_HEADER, str(size).encode())],
                )
            letter.acknowledged = True
