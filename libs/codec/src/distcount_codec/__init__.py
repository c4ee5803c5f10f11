"""The increment: input rules and Kafka record format, shared by the ingress and the aggregator."""

from distcount_codec._increment import (
    INT64_MAX,
    INT64_MIN,
    MAX_KEY_BYTES,
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

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_KEY_BYTES",
    "Increment",
    "InvalidIncrement",
    "InvalidRecord",
    "decode_record",
    "encode_record",
    "parse_json",
    "sum_by_key",
    "validate_batch",
    "validate_increment",
]
