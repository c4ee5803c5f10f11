"""The OpenAPI 3.1 document of the ingress, written by hand: the HTTP contract in one place.

Schema-driven fuzz tests read it, so the input rules are spelled out (key length, control
characters, value range, non-zero) and every status a route can answer is listed.
"""

from __future__ import annotations

from typing import Any

from distcount_codec import INT64_MAX, INT64_MIN, MAX_KEY_BYTES
from distcount_config import Settings

_REF = "#/components/schemas/"
_KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_KEY_BYTES,
    # C0 controls, DEL and C1 controls are refused
    "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
    "description": f"1 to {MAX_KEY_BYTES} bytes of UTF-8, without control characters",
}
_VALUE = {
    "type": "integer",
    "format": "int64",
    "minimum": INT64_MIN,
    "maximum": INT64_MAX,
    "not": {"const": 0},
    "description": "a non-zero 64-bit signed integer",
}


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
        "413": _errors(f"the body is larger than {max_body_bytes} bytes"),
        "415": _errors("the content type is not application/json (or application/*+json)"),
        "422": _errors("the JSON breaks the input rules; each field names what is wrong"),
        "503": _UNAVAILABLE,
    }


def _request_body(schema_name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema_name)}}}


def openapi_document(settings: Settings, max_batch_items: int) -> dict[str, Any]:
    body_errors = _body_errors(settings.max_body_bytes)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "distcount ingress",
            "version": "1",
            "description": (
                "Increments counters through Kafka (202 only once the broker acknowledged the "
                "record) and reads their totals from PostgreSQL."
            ),
        },
        "paths": {
            "/increment": {
                "post": {
                    "operationId": "increment",
                    "summary": "Add a value to a counter",
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
                    "requestBody": _request_body("IncrementBatch"),
                    "responses": {
                        "202": _json(_ref("BatchAccepted"), "committed to Kafka"),
                        **body_errors,
                    },
                }
            },
            "/counters/{key}": {
                "get": {
                    "operationId": "getCounter",
                    "summary": "A counter's total",
                    "parameters": [{"name": "key", "in": "path", "required": True, "schema": _KEY}],
                    "responses": {
                        "200": _json(_ref("Counter"), "the total"),
                        "404": _errors("the key was never counted"),
                        "422": _errors("the key breaks the input rules"),
                        "503": _UNAVAILABLE,
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
        "Increment": _object({"key": _KEY, "value": _VALUE}),
        "IncrementBatch": _object(
            {
                "increments": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_batch_items,
                    "items": _ref("Increment"),
                }
            }
        ),
        "IncrementAccepted": _object({"data": _ref("Increment")}),
        "BatchAccepted": _object(
            {"data": _object({"increments": {"type": "array", "items": _ref("Increment")}})}
        ),
        "Counter": _object(
            {
                "data": _object(
                    {
                        "key": _KEY,
                        # a total is not bounded to 64 bits: it is written as an exact JSON integer
                        "value": {"type": "integer"},
                    }
                )
            }
        ),
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
                    }
                ),
            }
        ),
    }
