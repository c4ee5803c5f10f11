"""The increment: input rules, their JSON Schema, and the Kafka record format, shared by the
ingress and the aggregator."""

from distcount_codec._errors import InvalidIncrement, InvalidJSON, InvalidRecord
from distcount_codec._increment import (
    Increment,
    batch_id,
    batch_records,
    decode_keyed_record,
    decode_record,
    encode_record,
    sum_by_key,
    validate_batch,
    validate_increment,
)
from distcount_codec._json import parse_json, unique_members
from distcount_codec._record import RecordDecoder
from distcount_codec._rules import (
    IDEMPOTENCY_KEY_PATTERN,
    INT64_MAX,
    INT64_MIN,
    MAX_ID_BYTES,
    MAX_IDEMPOTENCY_KEY_BYTES,
    MAX_KEY_BYTES,
    id_errors,
    idempotency_key_errors,
    key_errors,
)
from distcount_codec._schema import (
    FORMAT_CHECKS,
    FORMATS,
    KEY_FORMAT,
    VALUE_FORMAT,
    batch_schema,
    increment_schema,
    key_schema,
    value_schema,
)

__all__ = [
    "FORMATS",
    "FORMAT_CHECKS",
    "IDEMPOTENCY_KEY_PATTERN",
    "INT64_MAX",
    "INT64_MIN",
    "KEY_FORMAT",
    "MAX_IDEMPOTENCY_KEY_BYTES",
    "MAX_ID_BYTES",
    "MAX_KEY_BYTES",
    "VALUE_FORMAT",
    "Increment",
    "InvalidIncrement",
    "InvalidJSON",
    "InvalidRecord",
    "RecordDecoder",
    "batch_id",
    "batch_records",
    "batch_schema",
    "decode_keyed_record",
    "decode_record",
    "encode_record",
    "id_errors",
    "idempotency_key_errors",
    "increment_schema",
    "key_errors",
    "key_schema",
    "parse_json",
    "sum_by_key",
    "unique_members",
    "validate_batch",
    "validate_increment",
    "value_schema",
]
