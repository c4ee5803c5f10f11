"""The OpenAPI document and the codec's rules are one: a JSON Schema validator built from the
document (its dialect, plus the formats it declares) accepts exactly what the codec accepts.

The inputs are the edges where JSON Schema alone and the rules part: 800.0 and 1e3 are JSON
Schema integers, its lengths count characters where the key's bound counts bytes, and a
`^...$` pattern lets a final newline through in Python's `re`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import specification_with

from distcount_codec import (
    FORMAT_CHECKS,
    FORMATS,
    INT64_MAX,
    INT64_MIN,
    InvalidIncrement,
    parse_json,
    validate_batch,
    validate_increment,
)
from distcount_config import load
from distcount_ingress._app import MAX_BATCH_ITEMS
from distcount_ingress._openapi import openapi_document

_URI = "urn:distcount:openapi"

KEYS: list[object] = [
    "k",
    "a" * 256,  # 256 bytes
    "a" * 257,
    "é" * 128,  # 256 bytes in 128 characters
    "é" * 129,
    "é" * 256,  # 256 characters, 512 bytes
    "🎉" * 64,  # 256 bytes in 64 characters
    "🎉" * 65,  # 260 bytes in 65 characters
    "",
    "a\n",  # where `$` matches before the newline
    "\n",
    "a\x00b",
    "\x1f",
    "\x7f",
    "\x85",
    "\x9f",
    "\xa0",  # no-break space: not a control character
    "a/b c",
    5,
    None,
]
VALUES = [
    "1",
    "-1",
    "800",
    "800.0",
    "1e3",
    "1E3",
    "-8e2",
    "1.5",
    "0",
    "-0",
    "0.0",
    str(INT64_MAX),
    str(INT64_MIN),
    str(INT64_MAX + 1),
    str(INT64_MIN - 1),
    "18446744073709551616",
    "true",
    "false",
    "null",
    '"1"',
    "[1]",
]


def _bodies() -> Iterator[str]:
    for key in KEYS:
        yield json.dumps({"key": key, "value": 1})
    for value in VALUES:
        yield '{"key": "k", "value": ' + value + "}"
    yield '{"key": "k"}'
    yield '{"value": 1}'
    yield '{"key": "k", "value": 1, "other": 1.5}'


BODIES = list(_bodies())


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document(load({}), MAX_BATCH_ITEMS)


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A validator of the document's dialect, asserting the formats the codec declares."""
    dialect = document["jsonSchemaDialect"]
    validator_class = _dialect_validator(dialect)
    checker = jsonschema.FormatChecker(formats=())
    for name, check in FORMAT_CHECKS.items():
        checker.checks(name)(check)
    resource = specification_with(dialect).create_resource(document)
    registry: Registry[Any] = Registry().with_resource(_URI, resource)
    validator: jsonschema.Validator = validator_class(
        schema, registry=registry, format_checker=checker
    )
    return validator


def _dialect_validator(dialect: str) -> type[jsonschema.Validator]:
    validator_class = jsonschema.validators.validator_for({"$schema": dialect})
    # an unknown dialect would fall back to the latest draft (with a warning): not good enough
    assert validator_class.META_SCHEMA["$schema"] == dialect
    return validator_class


def _component(document: dict[str, Any], name: str) -> jsonschema.Validator:
    return _validator(document, {"$ref": f"{_URI}#/components/schemas/{name}"})


def _codec_accepts(body: str, validate: Any) -> bool:
    try:
        validate(parse_json(body.encode()))
    except InvalidIncrement:
        return False
    return True


@pytest.mark.parametrize("body", BODIES)
def test_the_increment_schema_accepts_what_the_codec_accepts(
    document: dict[str, Any], body: str
) -> None:
    schema_says = _component(document, "Increment").is_valid(json.loads(body))
    assert schema_says == _codec_accepts(body, validate_increment), body


@pytest.mark.parametrize("body", BODIES)
def test_the_batch_schema_accepts_what_the_codec_accepts(
    document: dict[str, Any], body: str
) -> None:
    batch = '{"increments": [{"key": "other", "value": 2}, ' + body + "]}"
    schema_says = _component(document, "IncrementBatch").is_valid(json.loads(batch))
    codec_says = _codec_accepts(batch, lambda data: validate_batch(data, MAX_BATCH_ITEMS))
    assert schema_says == codec_says, batch


@pytest.mark.parametrize("key", [key for key in KEYS if isinstance(key, str)])
def test_the_counter_path_key_accepts_what_the_codec_accepts(
    document: dict[str, Any], key: str
) -> None:
    parameters = document["paths"]["/counters/{key}"]["get"]["parameters"]
    (parameter,) = [p for p in parameters if p["in"] == "path"]
    schema_says = _validator(document, parameter["schema"]).is_valid(key)
    assert schema_says == _codec_accepts(json.dumps({"key": key, "value": 1}), validate_increment)


def _formats(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("format"), str):
            yield node["format"]
        for child in node.values():
            yield from _formats(child)
    elif isinstance(node, list):
        for child in node:
            yield from _formats(child)


def test_every_format_the_document_uses_is_declared_and_described(
    document: dict[str, Any],
) -> None:
    used = set(_formats(document))
    assert used == set(FORMAT_CHECKS) == set(FORMATS)
    for name, meaning in FORMATS.items():
        assert f"`{name}`: {meaning}" in document["info"]["description"]


def test_the_schemas_are_valid_in_the_document_dialect(document: dict[str, Any]) -> None:
    validator_class = _dialect_validator(document["jsonSchemaDialect"])
    for schema in document["components"]["schemas"].values():
        validator_class.check_schema(schema)
