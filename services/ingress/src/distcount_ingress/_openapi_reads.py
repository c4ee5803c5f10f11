"""The read side's part of the OpenAPI document: its routes, parameters and answers.

Each parameter's schema admits what its parser accepts, as far as JSON Schema can say it, so a
fuzzer that sends what the schema allows meets the route's answers rather than its refusals.
Two values are opaque, a read-your-writes token and a listing's cursor: their schemas give the
alphabet, and only the service's own encodings of them are read. What no schema of one
parameter states (a history's `from` before its `to`, its step a multiple of the bucket width)
is the 422.
"""

from __future__ import annotations

from typing import Any, Final

from distcount_codec import key_schema

REF: Final = "#/components/schemas/"
_TIME = {
    "type": ["string", "null"],
    "description": "ISO 8601 UTC, such as 2026-11-30T12:00:00.000Z",
}
_TOKEN = {
    "type": "string",
    "minLength": 3,
    "pattern": r"^1\.[A-Za-z0-9_-]+$",
    "description": "opaque: what a 202 wrote",
}
_CURSOR = {
    "type": "string",
    "pattern": "^[A-Za-z0-9_-]*$",
    "description": "opaque: a page's `next_cursor`",
}
# totals are not bounded to 64 bits: exact JSON integers
_TOTAL = {"type": "integer"}
_BOOL = {"type": "boolean"}
_DURATION = {"type": "string", "pattern": "^[1-9][0-9]{0,11}(ms|s|m|h|d)$"}
_WHEN = {
    "type": "string",
    # the forms the parser reads (its ranges, such as a month's days, are its own to check)
    "pattern": r"^(-?[0-9]{1,16}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}"
    r"(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2}))$",
    "description": "ISO 8601 with a time zone, or epoch milliseconds",
}


def _count(maximum: int) -> dict[str, Any]:
    """An integer from 1 to `maximum` (a power of ten), in digits without leading zeros."""
    digits = len(str(maximum)) - 1
    return {"type": "string", "pattern": f"^([1-9][0-9]{{0,{digits - 1}}}|{maximum})$"}


def _prefix() -> dict[str, Any]:
    """Empty, or the start of a key: held to the key's rules (its bytes, no control character)."""
    return {"anyOf": [{"const": ""}, key_schema()]}


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def obj(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    required = [name for name in properties if name not in optional]
    return {"type": "object", "required": required, "properties": properties}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(description: str) -> dict[str, Any]:
    return _json(ref("Errors"), description)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _get(
    operation: str,
    summary: str,
    parameters: list[dict[str, Any]],
    responses: dict[str, Any],
    unavailable: dict[str, Any],
) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation,
            "summary": summary,
            "parameters": parameters,
            "responses": {**responses, "503": unavailable},
        }
    }


def read_paths(unavailable: dict[str, Any], wait_ms: int) -> dict[str, Any]:
    key = {"name": "key", "in": "path", "required": True, "schema": key_schema()}
    bad = _errors("a parameter breaks its rules; the field names it")
    return {
        "/counters/{key}": _get(
            "getCounter",
            "A counter's total, and the time up to which every accepted increment is in it",
            [
                key,
                _query("after", _TOKEN, f"wait (at most {wait_ms} ms) until this write is counted"),
            ],
            {
                "200": _json(ref("Counter"), "the total; with `after`, the write is in it"),
                "202": _json(ref("Counter"), "with `after`: not counted yet; the current total"),
                "404": _errors("the key was never counted"),
                "422": bad,
            },
            unavailable,
        ),
        "/writes/{token}": _get(
            "waitForWrite",
            "Whether a write is counted",
            [{"name": "token", "in": "path", "required": True, "schema": _TOKEN}],
            {
                "200": _json(ref("Write"), "counted"),
                "202": _json(ref("Write"), f"not counted within {wait_ms} ms"),
                "422": bad,
            },
            unavailable,
        ),
        "/counters/{key}/history": _get(
            "getHistory",
            "A counter's sums per step",
            [
                key,
                _query(
                    "from", _WHEN, "start (rounded down to a step); default: an hour before `to`"
                ),
                _query("to", _WHEN, "end (rounded up to a step); default: now"),
                _query("step", _DURATION, "a multiple of the bucket width; default 1m"),
            ],
            {
                "200": _json(ref("History"), "one point per step, 0 where nothing was counted"),
                "404": _errors("the key was never counted"),
                "422": bad,
            },
            unavailable,
        ),
        "/counters": _get(
            "listCounters",
            "Counters in key order (UTF-8 bytes)",
            [
                _query("prefix", _prefix(), "only keys that start with it"),
                _query("limit", _count(1000), "1 to 1000; default 100"),
                _query("cursor", _CURSOR, "`next_cursor` of the previous page"),
            ],
            {"200": _json(ref("Page"), "a page"), "422": bad},
            unavailable,
        ),
        "/counters/top": _get(
            "topCounters",
            "The counters with the largest sums over a recent window",
            [
                _query("window", _DURATION, "from the bucket width to 1h; default 5m"),
                _query("limit", _count(100), "1 to 100; default 10"),
            ],
            {"200": _json(ref("Top"), "largest first"), "422": bad},
            unavailable,
        ),
        "/": {
            "get": {
                "operationId": "page",
                "summary": "The live page of the busiest counters",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
            }
        },
    }


def read_schemas() -> dict[str, Any]:
    entry = obj({"key": key_schema(), "value": _TOTAL})
    return {
        "Counter": obj(
            {
                "data": obj(
                    {
                        "key": key_schema(),
                        "value": _TOTAL,
                        "as_of": _TIME,
                        "complete": {"type": "boolean"},
                    },
                    optional=("complete",),
                )
            }
        ),
        "Write": obj(
            {"data": obj({"token": _TOKEN, "complete": {"type": "boolean"}, "as_of": _TIME})}
        ),
        "History": obj(
            {
                "data": obj(
                    {
                        "key": key_schema(),
                        "from": _TIME,
                        "to": _TIME,
                        "step_ms": {"type": "integer", "minimum": 1},
                        "points": {
                            "type": "array",
                            "items": obj({"start": _TIME, "value": _TOTAL}),
                        },
                        "as_of": _TIME,
                    }
                )
            }
        ),
        "Page": obj(
            {
                "data": obj(
                    {
                        "counters": {"type": "array", "items": entry},
                        "next_cursor": {"anyOf": [_CURSOR, {"type": "null"}]},
                    }
                )
            }
        ),
        "Top": obj(
            {
                "data": obj(
                    {
                        "window_ms": {"type": "integer"},
                        "counters": {"type": "array", "items": entry},
                        "as_of": _TIME,
                    }
                )
            }
        ),
    }


TOKEN_SCHEMA: Final = _TOKEN
