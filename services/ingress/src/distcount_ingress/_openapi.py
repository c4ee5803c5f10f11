"""The OpenAPI 3.1 document of the ingress, written by hand: the HTTP contract in one place.

Schema-driven fuzz tests read it, so every status a route can answer is listed, and the input
rules are the codec's own schema fragments. What JSON Schema cannot say of them (a key's bound
counts bytes, 800.0 is not an integer) is in two formats of the codec's, described in the
document; a validator or fuzzer asserts them with `distcount_codec.FORMAT_CHECKS`.
"""

from __future__ import annotations

from typing import Any, Final

from distcount_codec import (
    FORMATS,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_IDEMPOTENCY_KEY_BYTES,
    batch_schema,
    increment_schema,
)
from distcount_config import Settings
from distcount_ingress._auth import secured
from distcount_ingress._openapi_reads import TOKEN_SCHEMA, read_paths, read_schemas

# plain JSON Schema 2020-12: the document uses none of the OpenAPI dialect's own keywords
DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
_REF = "#/components/schemas/"
_DESCRIPTION = (
    "Increments counters through Kafka (202 only once the broker acknowledged the record) and "
    "reads their totals from PostgreSQL.\n\n"
    "The schemas use two formats of their own, for what JSON Schema cannot state; a validator "
    "should assert them:\n\n"
    + "\n".join(f"- `{name}`: {meaning}." for name, meaning in FORMATS.items())
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(description: str) -> dict[str, Any]:
    return _json(_ref("Errors"), description)


_UNAVAILABLE = {
    **_errors("not acknowledged in time, or too many requests in flight; rarely still counted"),
    "headers": {
        "Retry-After": {
            "description": "seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}


def _body_errors(max_body_bytes: int) -> dict[str, Any]:
    return {
        "400": _errors("the body is not JSON"),
        "408": _errors(
            "the body did not arrive within DISTCOUNT_HTTP_BODY_TIMEOUT_S; the connection is closed"
        ),
        "413": _errors(f"the body is larger than {max_body_bytes} bytes"),
        "415": _errors("the content type is not application/json (or application/*+json)"),
        "422": _errors(
            "the JSON breaks the input rules, or an object in it names a member twice; each "
            "field names what is wrong"
        ),
        "503": _UNAVAILABLE,
    }


def _idempotency_key(what: str) -> dict[str, Any]:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": (
            f"{what} Sent again with the same key, within the aggregators' window "
            "(DISTCOUNT_IDEMPOTENCY_WINDOW_S, a day by default), it is counted once: retry a "
            "503 or a lost answer with the key of the first attempt. A key reused with another "
            "body is accepted and not counted (the first body counts)."
        ),
        "schema": {
            "type": "string",
            "pattern": IDEMPOTENCY_KEY_PATTERN,
            "minLength": 1,
            "maxLength": MAX_IDEMPOTENCY_KEY_BYTES,
        },
    }


def _request_body(schema_name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema_name)}}}


def openapi_document(settings: Settings, max_batch_items: int) -> dict[str, Any]:
    """The document; with access control on, it declares the bearer scheme and each
    operation's 401 and 403. Off, it declares none: a fuzzer told of a scheme would rightly
    report that requests without a token are answered."""
    document = _document(settings, max_batch_items)
    return secured(document, _ref("Errors")) if settings.access_control else document


def _document(settings: Settings, max_batch_items: int) -> dict[str, Any]:
    body_errors = _body_errors(settings.max_body_bytes)
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": DIALECT,
        "info": {"title": "distcount ingress", "version": "1", "description": _DESCRIPTION},
        "paths": {
            "/increment": {
                "post": {
                    "operationId": "increment",
                    "summary": "Add a value to a counter",
                    "parameters": [
                        _idempotency_key("The record carries it as its `id`, and the answer too.")
                    ],
                    "requestBody": _request_body("Increment"),
                    "responses": {
                        "202": _json(_ref("IncrementAccepted"), "acknowledged by Kafka"),
                        **body_errors,
                    },
                }
            },
            "/increments": {
                "post": {
                    "operationId": "increments",
                    "summary": "Add many values at once, all or nothing",
                    "description": (
                        "Values are summed per key; one record per distinct key is written in "
                        "one Kafka transaction. Keys whose values cancel out are not sent."
                    ),
                    "parameters": [
                        _idempotency_key(
                            "Each record gets an `id` made of it and the record's place in the "
                            "batch (after summing per key), shown in the answer."
                        )
                    ],
                    "requestBody": _request_body("IncrementBatch"),
                    "responses": {
                        "202": _json(_ref("BatchAccepted"), "committed to Kafka"),
                        **body_errors,
                    },
                }
            },
            "/health/live": {
                "get": {
                    "operationId": "live",
                    "summary": "The process answers",
                    "responses": {"200": _json(_ref("Live"), "alive")},
                }
            },
            "/health/ready": {
                "get": {
                    "operationId": "ready",
                    "summary": "Kafka and PostgreSQL are reachable",
                    "responses": {
                        "200": _json(_ref("Ready"), "both reachable"),
                        "503": _json(_ref("Ready"), "at least one is not; `checks` says which"),
                    },
                }
            },
            **read_paths(_UNAVAILABLE, settings.read_after_timeout_ms),
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
        },
        "components": {"schemas": _schemas(max_batch_items)},
    }


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


def _schemas(max_batch_items: int) -> dict[str, Any]:
    return {
        "Increment": increment_schema(),
        "IncrementBatch": batch_schema(max_batch_items, _ref("Increment")),
        "IncrementAccepted": _object(
            {
                "data": {
                    **_object({**increment_schema()["properties"], "token": TOKEN_SCHEMA}),
                    "properties": {
                        **increment_schema()["properties"],
                        "id": {"type": "string", "description": "the Idempotency-Key sent"},
                        "token": TOKEN_SCHEMA,
                    },
                }
            }
        ),
        "BatchAccepted": _object(
            {
                "data": _object(
                    {
                        "increments": {"type": "array", "items": _ref("Increment")},
                        "token": TOKEN_SCHEMA,
                    }
                )
            }
        ),
        **read_schemas(),
        "Errors": _object(
            {
                "errors": {
                    "type": "object",
                    "description": "each field (or body, kafka, postgres...) and its problems",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                }
            }
        ),
        "Live": _object({"status": {"const": "ok"}}),
        "Ready": _object(
            {
                "status": {"enum": ["ok", "unavailable"]},
                "checks": _object(
                    {
                        "kafka": {"type": "string", "description": '"ok" or "error: ..."'},
                        "postgres": {"type": "string", "description": '"ok" or "error: ..."'},
                        "counting": {
                            "type": "string",
                            "description": '"ok", "stopped: ..." (a stalled partition), or '
                            '"unknown: ..."',
                        },
                    }
                ),
            }
        ),
    }
