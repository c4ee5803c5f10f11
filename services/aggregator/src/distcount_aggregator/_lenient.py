"""Reading a record batch aiokafka refuses only for a header's name: a lenient reader of the
Kafka record batch format (v2), for that one batch.

Kafka's header names are strings, but the broker stores whatever bytes a producer sends, and
some clients send names that are not UTF-8. aiokafka decodes every name strictly while it reads
a batch, so such a record raises on every fetch, and so does every record after it in its batch
(a fetch decodes a batch whole, also the records before the position it skips). Without this
module the partition would stall there (see `_fetch.py`), though the record may well be a valid
increment: the aggregator ignores headers.

`read_batch_at` fetches from the partition's leader with a request of its own (read committed,
as the aggregator's consumer reads), skips control batches and aborted transactions as a
consumer does, checks the CRC of the batch holding the offset, and returns its records from that
offset on, header names decoded with replacement characters, and the offset after the batch:
the aggregator folds them as any others and moves its consumer past the batch.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from aiokafka.errors import for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.util import calc_crc32c, decode_varint

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordCount
_HEADER: Final = struct.Struct(">qiibIhiqqqhii")
_CRC_FROM: Final = 21  # the CRC covers the batch from its attributes on
_CODECS: Final[dict[int, Callable[[bytes], bytes]]] = {
    1: gzip_decode,
    2: snappy_decode,
    3: lz4_decode,
    4: zstd_decode,
}
_TIMESTAMP_LOG_APPEND: Final = 0x08
_TRANSACTIONAL: Final = 0x10
_CONTROL: Final = 0x20
_READ_COMMITTED: Final = 1
_MAX_BYTES: Final = 64 * 1024 * 1024


class Unreadable(Exception):
    """The batch cannot be read even leniently (corrupt, unknown format or codec)."""


@dataclass(frozen=True)
class LenientRecord:
    """A record as the aggregator reads one (the attributes of aiokafka's ConsumerRecord it
    uses)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class _Batch:
    base_offset: int
    next_offset: int
    attributes: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    body: memoryview  # the records, compressed or not


async def read_batch_at(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, max_wait_ms: int
) -> tuple[list[LenientRecord], int] | None:
    """The records from `offset` on of the first batch of data at or after it, and the offset
    after that batch; None when the broker had nothing there yet. Raises `Unreadable` for a
    batch that cannot be read, and KafkaError for what the broker answers."""
    client: Any = consumer._client  # aiokafka has no public call for a raw fetch
    node = client.cluster.leader_for_partition(tp)
    if node is None or node < 0:
        raise Unreadable(f"no leader known for partition {tp.partition}")
    request = FetchRequest(
        max_wait_ms,
        1,
        _MAX_BYTES,
        _READ_COMMITTED,
        [(tp.topic, [(tp.partition, offset, _MAX_BYTES)])],
    )
    response = await client.send(node, request)
    for topic, partitions in response.topics:
        for part in partitions:
            if topic != tp.topic or part[0] != tp.partition:
                continue
            if part[1]:
                raise for_code(part[1])(f"fetching partition {tp.partition} at {offset}")
            # after the partition, its error and its high watermark, the fields differ by version:
            # v4 [last stable offset, aborted, records], v5-v10 [.., log start offset, aborted,
            # records], v11 [.., log start offset, aborted, preferred replica, records]
            aborted = part[5] if response.API_VERSION >= 11 else part[-2]
            return first_data_batch(tp, offset, part[-1] or b"", aborted or [])
    return None


def first_data_batch(
    tp: TopicPartition, offset: int, data: bytes, aborted: list[tuple[int, int]]
) -> tuple[list[LenientRecord], int] | None:
    """Of a fetch's record data, the first batch holding records at or after `offset` that a
    read-committed consumer would return (see `read_batch_at`)."""
    pending = sorted(aborted, key=lambda entry: entry[1])  # (producer id, first offset)
    aborting: set[int] = set()
    for batch in _batches(memoryview(data)):
        if batch.next_offset <= offset:
            continue
        while pending and pending[0][1] <= batch.base_offset:
            aborting.add(pending.pop(0)[0])
        if batch.attributes & _CONTROL:
            # a transaction's marker ends it, an abort or a commit alike
            aborting.discard(batch.producer_id)
            continue
        if batch.attributes & _TRANSACTIONAL and batch.producer_id in aborting:
            continue
        records = [r for r in _records(tp, batch) if r.offset >= offset]
        return records, batch.next_offset
    return None


def _batches(data: memoryview) -> Iterator[_Batch]:
    pos = 0
    while pos + _HEADER.size <= len(data):
        (
            base_offset, length, _, magic, crc, attributes, last_delta, base_ts, max_ts,
            producer_id, _, _, _,
        ) = _HEADER.unpack_from(data, pos)  # fmt: skip
        end = pos + 12 + length
        if end > len(data):
            return  # the fetch cut the last batch short: it comes whole in another fetch
        if magic != 2:
            raise Unreadable(f"a record batch of format {magic} at offset {base_offset}")
        if calc_crc32c(bytes(data[pos + _CRC_FROM : end])) != crc:
            raise Unreadable(f"the record batch at offset {base_offset} fails its CRC")
        yield _Batch(
            base_offset,
            base_offset + last_delta + 1,
            attributes,
            base_ts,
            max_ts,
            producer_id,
            data[pos + _HEADER.size : end],
        )
        pos = end


def _records(tp: TopicPartition, batch: _Batch) -> Iterator[LenientRecord]:
    codec = batch.attributes & 0x07
    if codec == 0:
        body = bytearray(batch.body)
    elif codec in _CODECS:
        body = bytearray(_CODECS[codec](bytes(batch.body)))
    else:
        raise Unreadable(f"the record batch at {batch.base_offset} uses codec {codec}")
    log_append = bool(batch.attributes & _TIMESTAMP_LOG_APPEND)
    pos = 0
    try:
        while pos < len(body):
            length, pos = decode_varint(body, pos)
            end = pos + length
            pos += 1  # the record's attributes, unused
            timestamp_delta, pos = decode_varint(body, pos)
            offset_delta, pos = decode_varint(body, pos)
            key, pos = _bytes(body, pos)
            value, pos = _bytes(body, pos)
            count, pos = decode_varint(body, pos)
            headers = []
            for _ in range(count):
                name, pos = _bytes(body, pos)
                content, pos = _bytes(body, pos)
                headers.append(((name or b"").decode("utf-8", "replace"), content or b""))
            if pos != end:
                raise Unreadable(f"a record of the batch at {batch.base_offset} is malformed")
            timestamp = (
                batch.max_timestamp if log_append else batch.base_timestamp + timestamp_delta
            )
            yield LenientRecord(
                tp.topic,
                tp.partition,
                batch.base_offset + offset_delta,
                timestamp,
                key,
                value,
                tuple(headers),
            )
    except (IndexError, ValueError) as exc:
        raise Unreadable(f"the record batch at {batch.base_offset} is malformed: {exc}") from exc


def _bytes(body: bytearray, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(body, pos)
    if length < 0:
        return None, pos
    if pos + length > len(body):
        raise ValueError("a field runs past the end of its record")
    return bytes(body[pos : pos + length]), pos + length
