"""JSON text to Python values as the rules need them: integers exact at any size, and no object
that names a member twice (a plain parse keeps the last one silently, so `{"key": "a", "key":
"b"}` would count b).

orjson parses; what it cannot do exactly is checked after it, at a cost only where it applies:

- An integer literal past 64 bits comes back from orjson as a float, or, past float's range, is
  refused as "infinity". Either needs a literal of at least 19 digits, so only then is the text
  parsed again by Python's `json`, exactly, and as strictly as orjson otherwise.
- Repeated member names: see `unique_members`, one byte count on the common path.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from typing import Final

import orjson

from distcount_codec._errors import InvalidIncrement, InvalidJSON
from distcount_codec._rules import INT64_MAX, INT64_MIN, REPEATED

# the digits of INT64_MIN; the shortest literal orjson does not return exactly has as many
_INT64_DIGITS: Final = 19
_LONG_DIGITS: Final = re.compile(rb"[0-9]{%d}" % _INT64_DIGITS)
_SURROGATE: Final = re.compile("[\\ud800-\\udfff]")
# In a valid JSON text, a string (group 1: its inside; group 2: the colon that makes it a member
# name) or a bracket or a comma: numbers and literals hold none of these characters.
_TOKEN: Final = re.compile(rb'"([^"\\]*(?:\\.[^"\\]*)*)"[ \t\n\r]*(:)?|[\[\]{},]')
# a repeated name longer than this is shortened in the error's field, which is echoed back
_MAX_NAME_SHOWN: Final = 64


def parse_json(text: bytes) -> object:
    """Parse a request body or record value.

    Raises InvalidJSON for what is not JSON, and InvalidIncrement naming the field (such as
    `increments[3].key`) of a member whose object already had one of that name.
    """
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if not _LONG_DIGITS.search(text):
            raise InvalidJSON(str(exc)) from None
        data = _exact_loads(text, str(exc))
        strings = _census(data)[0]
    else:
        strings, floats = _census(data)
        if floats and _LONG_DIGITS.search(text):
            # Python's parser refuses only what orjson accepted yet nests past Python's
            # recursion limit: orjson's floats are then the best answer there is
            with contextlib.suppress(InvalidJSON):
                data = _exact_loads(text, "")
    if text.count(b'"') != 2 * strings and (field := _first_repeat(text)) is not None:
        raise InvalidIncrement({field: [REPEATED]})
    return data


def unique_members(text: bytes, parsed: object) -> bool:
    """Whether no object in the JSON `text`, which a parser turned into `parsed`, names a member
    twice.

    Every `"` of a JSON text either delimits a string (two per string, member names included)
    or is part of an escaped quote inside one: quotes = 2 x strings of the text + escaped quotes.
    A parse keeps every string of the text but those of the repeated members it drops, each
    with its name at least: strings of the value <= strings of the text, equal only when nothing
    was dropped. So quotes <= 2 x L, for any L no more than the strings of the value, holds only
    when the text has no repeated member (nor escaped quote). Only otherwise is the text scanned.
    """
    quotes = text.count(b'"')
    # L without a walk, for the common case: an object's member names, and an increment's key
    if type(parsed) is dict and quotes <= 2 * len(parsed) + 2 and type(parsed.get("key")) is str:
        return True
    return quotes == 2 * _census(parsed)[0] or _first_repeat(text) is None


def _census(value: object) -> tuple[int, bool]:
    """How many strings `value` holds, object member names included, and whether any float."""
    if type(value) is not dict:
        return _census_deep([value], 0, False)
    # the common case, one flat object, without a stack
    strings, floats = len(value), False
    nested: list[object] = []
    for item in value.values():
        kind = type(item)
        if kind is str:
            strings += 1
        elif kind is int:
            continue
        elif kind is float:
            floats = True
        elif kind is dict or kind is list:
            nested.append(item)
    return _census_deep(nested, strings, floats) if nested else (strings, floats)


def _census_deep(nested: list[object], strings: int, floats: bool) -> tuple[int, bool]:
    while nested:  # a loop, not recursion: orjson accepts 1024 levels, past Python's limit
        item = nested.pop()
        if type(item) is dict:
            strings += len(item)
            nested.extend(item.values())
        elif type(item) is list:
            nested.extend(item)
        elif type(item) is str:
            strings += 1
        elif type(item) is float:
            floats = True
    return strings, floats


def _exact_loads(text: bytes, orjson_said: str) -> object:
    """Python's parser, exact for integers and otherwise as strict as orjson."""
    try:
        data = json.loads(
            text.decode(),  # strict UTF-8: Python's own decoding would pass surrogates and BOMs
            parse_int=_integer,
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError) as exc:
        raise InvalidJSON(orjson_said or str(exc)) from None
    if _holds_lone_surrogate(data):
        raise InvalidJSON(orjson_said or "a \\u escape is half a surrogate pair")
    return data


def _integer(literal: str) -> int:
    if len(literal) - literal.startswith("-") <= _INT64_DIGITS:
        return int(literal)
    # Past 19 digits (JSON has no leading zeros) a literal is out of int64 whatever it says, and
    # int() of a long one costs quadratic time: the nearest value out of range stands for it.
    return INT64_MIN - 1 if literal.startswith("-") else INT64_MAX + 1


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise ValueError("number is infinity when parsed as double")
    return value


def _no_constant(literal: str) -> object:
    raise ValueError(f"{literal} is not JSON")


def _holds_lone_surrogate(value: object) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _first_repeat(text: bytes) -> str | None:
    """The field, as `increments[3].key`, of the first member whose object already had one of
    that name; `text` must be valid JSON."""
    where: list[str | int] = []  # per open object or array: the current member name, item index
    names: list[set[str]] = []  # per open object or array: the member names so far
    for token in _TOKEN.finditer(text):
        inside = token.group(1)
        if inside is not None:
            if token.group(2) is not None:  # a member name, not a string value
                name = inside.decode() if b"\\" not in inside else json.loads(b'"%s"' % inside)
                where[-1] = name
                if name in names[-1]:
                    return _field(where)
                names[-1].add(name)
            continue
        char = token.group()
        if char == b"{":
            where.append("")
            names.append(set())
        elif char == b"[":
            where.append(0)
            names.append(set())
        elif char == b",":
            if isinstance(index := where[-1], int):
                where[-1] = index + 1
        else:
            where.pop()
            names.pop()
    return None


def _field(where: list[str | int]) -> str:
    field = ""
    for step in where:
        if isinstance(step, int):
            field += f"[{step}]"
        else:
            field += f".{_shown(step)}" if field else _shown(step)
    return field


def _shown(name: str) -> str:
    if not name:
        return '""'
    return name if len(name) <= _MAX_NAME_SHOWN else name[:_MAX_NAME_SHOWN] + "…"
