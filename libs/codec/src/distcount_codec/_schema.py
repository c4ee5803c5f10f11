"""The input rules as JSON Schema 2020-12 fragments, built from the constants the checks use;
the OpenAPI document of the ingress is made of them.

JSON Schema cannot state two of the rules: its lengths count characters, where the key's bound
counts bytes of UTF-8, and its "integer" is any number whose fraction is zero, so 800.0 and 1e3
pass it. Each fragment keeps what JSON Schema can say (every keyword necessary, none of them
sufficient) and names the whole rule as a `format` of ours, which JSON Schema leaves to the
validator: `FORMAT_CHECKS` are those formats as assertions, for a validator or a fuzzer's
generator. A checker tells 800 from 800.0 by the types its JSON parser gives them, as Python's
`json` does (int and float); a parser that makes every number a float cannot.

Nor can a schema see an object that names a member twice: parsers keep one of them. The
object fragments say so in their description; `parse_json` enforces it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from distcount_codec._rules import (
    ALWAYS_SHORT_ENOUGH,
    CONTROL_CHARACTERS,
    INT64_MAX,
    INT64_MIN,
    MAX_KEY_BYTES,
    key_errors,
    value_errors,
)

KEY_FORMAT: Final = "distcount-key"
VALUE_FORMAT: Final = "distcount-value"

# what each format asserts, as the document describes it
FORMATS: Final[Mapping[str, str]] = {
    KEY_FORMAT: (
        f"a string of 1 to {MAX_KEY_BYTES} bytes once encoded as UTF-8 (so {ALWAYS_SHORT_ENOUGH} "
        f"characters always fit and {MAX_KEY_BYTES + 1} never do), without control characters "
        "(U+0000 to U+001F, U+007F to U+009F)"
    ),
    VALUE_FORMAT: (
        "a non-zero integer within the 64-bit signed range, written as a JSON integer: digits "
        "with no fraction and no exponent, so 800.0 and 8e2 are not integers here"
    ),
}

_NO_REPEATS = "No member may be named twice in one object."


def is_key(instance: object) -> bool:
    """The `distcount-key` format; it holds for what is not a string, as JSON Schema has it."""
    return not isinstance(instance, str) or not key_errors(instance)


def is_value(instance: object) -> bool:
    """The `distcount-value` format; it holds for what is not a number, as JSON Schema has it."""
    if isinstance(instance, bool) or not isinstance(instance, int | float):
        return True
    return not value_errors(instance)


FORMAT_CHECKS: Final[Mapping[str, Callable[[object], bool]]] = {
    KEY_FORMAT: is_key,
    VALUE_FORMAT: is_value,
}


def key_schema() -> dict[str, Any]:
    return {
        "type": "string",
        "format": KEY_FORMAT,
        "minLength": 1,
        # in characters: a bound every valid key keeps, not the rule (the format is)
        "maxLength": MAX_KEY_BYTES,
        # Unanchored, and negated: a `^[^...]+$` would let a final newline through wherever `$`
        # matches before one, as in Python's `re`.
        "not": {"pattern": f"[{CONTROL_CHARACTERS}]"},
        "description": FORMATS[KEY_FORMAT],
    }


def value_schema() -> dict[str, Any]:
    return {
        "type": "integer",
        "format": VALUE_FORMAT,
        "minimum": INT64_MIN,
        "maximum": INT64_MAX,
        "not": {"const": 0},
        "description": FORMATS[VALUE_FORMAT],
    }


def increment_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["key", "value"],
        "properties": {"key": key_schema(), "value": value_schema()},
        "description": f"Other members are ignored. {_NO_REPEATS}",
    }


def batch_schema(max_items: int, item: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`{"increments": [...]}`; `item` is the schema of one (a `$ref`, say), else inline."""
    return {
        "type": "object",
        "required": ["increments"],
        "properties": {
            "increments": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_items,
                "items": dict(item) if item is not None else increment_schema(),
            }
        },
        "description": f"Summed per key, all or nothing. {_NO_REPEATS}",
    }
