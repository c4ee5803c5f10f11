"""The lenient reader of record batches (`_lenient.py`), on batches built by aiokafka's own
builder: header names that are not UTF-8, codecs, offsets, aborted transactions, control
batches, and batches it must refuse (a bad CRC) or leave for a later fetch (cut short)."""

from __future__ import annotations

import struct

import pytest
from aiokafka import TopicPartition
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

from distcount_aggregator._lenient import Unreadable, first_data_batch

TP = TopicPartition("t", 0)
ODD = b"\xff\xfe\xfd"  # what a header name "odd" is turned into: not UTF-8


def _batch(
    base: int,
    values: list[bytes],
    *,
    codec: int = 0,
    producer: int = -1,
    transactional: bool = False,
    control: bool = False,
) -> bytes:
    builder = DefaultRecordBatchBuilder(2, codec, int(transactional), producer, 0, 0, 1 << 20)
    for delta, value in enumerate(values):
        builder.append(delta, 1_000 + delta, b"k", value, [("odd", b"v"), ("ok", b"w")])
    data = bytearray(builder.build())
    if codec == 0:
        data = data.replace(b"odd", ODD)
    if control:
        attributes = struct.unpack_from(">h", data, 21)[0] | 0x20
        struct.pack_into(">h", data, 21, attributes)
    struct.pack_into(">q", data, 0, base)
    struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))
    return bytes(data)


def test_a_header_name_that_is_not_utf8_is_read_with_replacement_characters() -> None:
    data = _batch(10, [b"a", b"b", b"c"]) + _batch(13, [b"d"])
    read = first_data_batch(TP, 11, data, [])
    assert read is not None
    records, after = read
    assert [(r.offset, r.value, r.timestamp) for r in records] == [
        (11, b"b", 1001),
        (12, b"c", 1002),
    ]
    assert records[0].headers == (("\ufffd\ufffd\ufffd", b"v"), ("ok", b"w"))
    assert after == 13


@pytest.mark.parametrize("codec", [1, 2, 3, 4])  # gzip, snappy, lz4, zstd
def test_every_codec_is_read(codec: int) -> None:
    read = first_data_batch(TP, 0, _batch(0, [b"x", b"y"], codec=codec), [])
    assert read is not None
    assert [r.value for r in read[0]] == [b"x", b"y"]


def test_aborted_transactions_and_control_batches_are_passed_over() -> None:
    data = (
        _batch(0, [b"aborted"], producer=7, transactional=True)
        + _batch(1, [b"marker"], producer=7, transactional=True, control=True)
        + _batch(2, [b"committed"], producer=7, transactional=True)
    )
    read = first_data_batch(TP, 0, data, [(7, 0)])
    assert read is not None
    assert [(r.offset, r.value) for r in read[0]] == [(2, b"committed")]
    assert read[1] == 3


def test_a_batch_cut_short_by_the_fetch_is_left_for_the_next() -> None:
    data = _batch(0, [b"a"])
    assert first_data_batch(TP, 0, data[:-3], []) is None


def test_a_batch_failing_its_crc_is_refused() -> None:
    data = bytearray(_batch(0, [b"a"]))
    data[-2] ^= 0xFF
    with pytest.raises(Unreadable, match="CRC"):
        first_data_batch(TP, 0, bytes(data), [])
