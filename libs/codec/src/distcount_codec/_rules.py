"""The two input rules, each a function of one field, and the constants they are made of.

The checks here and the JSON Schema fragments of `_schema` are built from the same constants, so
the OpenAPI document cannot drift from what the ingress and the aggregator enforce.
"""

from __future__ import annotations

import re
from typing import Final

MAX_KEY_BYTES: Final = 256
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

# C0 controls, DEL and C1 controls, as the inside of a character class that Python's `re` and
# ECMA-262 (JSON Schema's `pattern`) read alike
CONTROL_CHARACTERS: Final = "\\u0000-\\u001f\\u007f-\\u009f"
CONTROL: Final = re.compile(f"[{CONTROL_CHARACTERS}]")
# a key this short cannot exceed MAX_KEY_BYTES however it encodes (at most 4 bytes a character)
ALWAYS_SHORT_ENOUGH: Final = MAX_KEY_BYTES // 4

# A record's idempotency id (`id`): any string this long at most. The ingress makes them of an
# `Idempotency-Key` header (visible ASCII, no space, so that " " can join it to a batch
# record's index without two headers ever making the same id).
MAX_ID_BYTES: Final = 512
MAX_IDEMPOTENCY_KEY_BYTES: Final = 255
IDEMPOTENCY_KEY_PATTERN: Final = f"^[!-~]{{1,{MAX_IDEMPOTENCY_KEY_BYTES}}}$"
_IDEMPOTENCY_KEY: Final = re.compile(f"[!-~]{{1,{MAX_IDEMPOTENCY_KEY_BYTES}}}")

OUT_OF_RANGE: Final = "must be within the 64-bit signed integer range"
REPEATED: Final = "must not be repeated"


def key_errors(key: object) -> list[str]:
    """What is wrong with a key: 1..MAX_KEY_BYTES bytes of UTF-8, no control characters."""
    if not isinstance(key, str):
        return ["can't be blank"] if key is None else ["must be a string"]
    if not key:
        return ["can't be blank"]
    if len(key) > ALWAYS_SHORT_ENOUGH:
        try:
            size = len(key.encode())
        except UnicodeEncodeError:
            return ["must be valid UTF-8"]
        if size > MAX_KEY_BYTES:
            return [f"must be at most {MAX_KEY_BYTES} bytes of UTF-8 (it is {size})"]
    if CONTROL.search(key):
        return ["must not contain control characters"]
    return []


def value_errors(value: object) -> list[str]:
    """What is wrong with a value: a non-zero integer within int64, written as an integer."""
    if value is None:
        return ["can't be blank"]
    if type(value) is not int:  # bool is an int subclass, and not a count; 1.0 is a float
        return ["must be an integer"]
    if value == 0:
        return ["must not be zero"]
    if not INT64_MIN <= value <= INT64_MAX:
        return [OUT_OF_RANGE]
    return []


def id_errors(ident: object) -> list[str]:
    """What is wrong with a record's `id`: a string of 1..MAX_ID_BYTES bytes of UTF-8."""
    if not isinstance(ident, str):
        return ["must be a string"]
    if not ident:
        return ["can't be blank"]
    if len(ident) > MAX_ID_BYTES // 4:
        try:
            size = len(ident.encode())
        except UnicodeEncodeError:
            return ["must be valid UTF-8"]
        if size > MAX_ID_BYTES:
            return [f"must be at most {MAX_ID_BYTES} bytes of UTF-8 (it is {size})"]
    return []


def idempotency_key_errors(header: str) -> list[str]:
    """What is wrong with an `Idempotency-Key` header's value (as the server decoded it)."""
    if _IDEMPOTENCY_KEY.fullmatch(header):
        return []
    return [
        f"must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters (no spaces), "
        "such as a UUID"
    ]
