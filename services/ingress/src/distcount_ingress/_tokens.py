"""Read-your-writes tokens: what a 202 wrote, as opaque text a read can wait for.

A token names, per partition, the highest offset a request wrote. It is "1." followed by the
URL-safe base64 (no padding) of the compact JSON `[[partition, offset], ...]`; clients treat it
as opaque, and a later version may change what follows the "1.".
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Final

import orjson

_VERSION: Final = "1."
# a batch writes at most one record per key, and a topic has at most 10,000 partitions
_MAX_TOKEN_CHARS: Final = 200_000


class InvalidToken(ValueError):
    """Text that is not a token of this service."""


def encode(offsets: Mapping[int, int]) -> str:
    pairs = sorted(offsets.items())
    return _VERSION + base64.urlsafe_b64encode(orjson.dumps(pairs)).rstrip(b"=").decode()


def decode(token: str) -> dict[int, int]:
    """partition -> the highest offset written there; `InvalidToken` for anything else."""
    if not token.startswith(_VERSION) or len(token) > _MAX_TOKEN_CHARS:
        raise InvalidToken(token)
    body = token[len(_VERSION) :]
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        pairs = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise InvalidToken(token) from None
    # an empty list is the token of a batch whose values all cancelled out: nothing to wait for
    if not isinstance(pairs, list):
        raise InvalidToken(token)
    offsets: dict[int, int] = {}
    for pair in pairs:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(type(n) is int and n >= 0 for n in pair)
            or pair[0] in offsets
        ):
            raise InvalidToken(token)
        offsets[pair[0]] = pair[1]
    return offsets
