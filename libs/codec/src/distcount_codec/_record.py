"""Record values to increments at the rate a consumer reads them.

Most records repeat a value seen shortly before (the same key counted by one again), so the
decoder remembers the values it decoded: a repeat costs one dict lookup, which the consumer does
inline. A value not seen yet takes orjson and the rules' checks inline when it has the one shape
the ingress writes, and the full `decode_keyed_record` otherwise. A record with an id is never
remembered: its value is one of a kind.
"""

from __future__ import annotations

from typing import Final

import orjson

from distcount_codec._increment import decode_keyed_record
from distcount_codec._rules import (
    ALWAYS_SHORT_ENOUGH,
    CONTROL,
    INT64_MAX,
    INT64_MIN,
    MAX_ID_BYTES,
)

# values remembered; past this many the memory starts afresh (a few tens of MB at most)
MAX_KNOWN_VALUES: Final = 100_000


class RecordDecoder:
    """`known` maps record values already decoded to their (key, value); `decode` decodes one
    that is not there into (key, value, id) (or raises InvalidRecord) and remembers it unless it
    has an id. Plain tuples, not Increments: building a named tuple costs more than the rest of
    a lookup."""

    __slots__ = ("_max_known", "known")

    def __init__(self, max_known: int = MAX_KNOWN_VALUES) -> None:
        self.known: dict[bytes, tuple[str, int]] = {}
        self._max_known = max_known

    def decode(self, value: bytes | None) -> tuple[str, int, str | None]:
        if not value:
            decode_keyed_record(value)  # raises, with the reason
            raise AssertionError("an empty record value was decoded")
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            data = None
        if type(data) is dict and len(data) == 3:
            # `{"key":"…","value":…,"id":"…"}`, ten quotes: the ingress's record with an id
            key, count, ident = data.get("key"), data.get("value"), data.get("id")
            if (
                type(key) is str
                and type(count) is int
                and type(ident) is str
                and 0 < len(key) <= ALWAYS_SHORT_ENOUGH
                and 0 < len(ident) <= MAX_ID_BYTES // 4
                and count != 0
                and INT64_MIN <= count <= INT64_MAX
                and value.count(b'"') == 10
                and (key.isprintable() or not CONTROL.search(key))
            ):
                return key, count, ident
            (key, count), found = decode_keyed_record(value)
            if found is not None:
                return key, count, found
            decoded = (key, count)
        elif type(data) is dict and len(data) == 2:
            key, count = data.get("key"), data.get("value")
            # `{"key":"…","value":…}` holds six quotes: more means an escape or a repeated member
            if (
                type(key) is str
                and type(count) is int
                and 0 < len(key) <= ALWAYS_SHORT_ENOUGH
                and count != 0
                and INT64_MIN <= count <= INT64_MAX
                and value.count(b'"') == 6
                # printable rules out every control character, and costs less than the search
                and (key.isprintable() or not CONTROL.search(key))
            ):
                decoded = (key, count)
            else:
                (key, count), ident = decode_keyed_record(value)
                if ident is not None:
                    return key, count, ident
                decoded = (key, count)
        else:
            (key, count), ident = decode_keyed_record(value)
            if ident is not None:
                return key, count, ident
            decoded = (key, count)
        known = self.known
        if len(known) >= self._max_known:
            known.clear()
        known[value] = decoded
        return key, count, None
