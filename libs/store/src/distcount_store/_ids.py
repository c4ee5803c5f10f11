"""Idempotency ids: which records with an id a flush counts, and forgetting the expired ones.

A flush claims the ids of the records it holds in `counter_ids`, in its own transaction: an id
claimed by a committed flush within the window is a repeat, and its record is not counted. The
claim and the partition's offset commit together, so a retry is recognised after any crash or
rebalance, and a fenced flush (a zombie's) claims nothing. Two partitions claiming one id at
once (a producer sending it under two message keys) wait on its row: the second counts nothing
once the first commits, or claims it if the first rolls back. Claims go in id order, so two
flushes never wait on each other the other way round.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import asyncpg

# a connection of its own, or one borrowed from a pool
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# The digests are made by PostgreSQL (md5 of the id's UTF-8, 16 bytes), on the server's core
# rather than the aggregator's; each claimed row is returned as its place in the arrays given.
# An expired id (older than the window, not deleted yet) is claimed again, as a new one.
_CLAIM = """
WITH given AS (
    SELECT n, decode(md5(i.id), 'hex') AS id, i.fingerprint
    FROM unnest($1::bytea[], $2::bigint[]) WITH ORDINALITY AS i(id, fingerprint, n)
), claimed AS (
    INSERT INTO counter_ids AS c (id, fingerprint)
    SELECT id, fingerprint FROM given
    ORDER BY id
    ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint, seen_at = now()
    WHERE c.seen_at < now() - make_interval(secs => $3)
    RETURNING id
)
SELECT given.n FROM given JOIN claimed USING (id)
"""
_CONFLICTING = """
SELECT count(*) FROM counter_ids AS c
JOIN unnest($1::bytea[], $2::bigint[]) AS i(id, fingerprint) ON c.id = decode(md5(i.id), 'hex')
WHERE c.fingerprint <> i.fingerprint
"""
_FORGET = """
DELETE FROM counter_ids WHERE id IN (
    SELECT id FROM counter_ids
    WHERE seen_at < now() - make_interval(secs => $1)
    LIMIT $2
    -- several aggregators forget at once: each takes rows no other is deleting
    FOR UPDATE SKIP LOCKED
)
"""
FORGET_CHUNK: Final = 10_000


def id_digest(ident: str) -> bytes:
    """An id as `counter_ids` stores it: the MD5 of its UTF-8, 16 bytes whatever its length (a
    digest, not a secret: whoever could make two ids collide could as well reuse one)."""
    return hashlib.md5(ident.encode(), usedforsecurity=False).digest()


def increment_digest(key: str, value: int) -> int:
    """What a record with an id counts, as a 32-bit checksum: a retry has the same, another
    body almost always another (it only tells the two apart in a metric and a log line)."""
    return zlib.crc32(f"{key}\x00{value}".encode())


@dataclass(frozen=True)
class Claimed:
    """What a flush's claim found: the records to count, and how many of the others were
    sent again under an id with another increment (a client reusing a key for a new body)."""

    fresh: list[tuple[int, str, int]]  # (bucket start ms, key, value)
    repeated: int
    conflicting: int


async def claim_ids(
    conn: Conn, keyed: Mapping[str, tuple[int, str, int]], window_s: int
) -> Claimed:
    """Claim the ids of `keyed` (id -> (bucket start ms, key, value)) in the transaction that
    `conn` runs; the records whose id no committed flush claimed within `window_s` are fresh."""
    entries = list(keyed.values())
    idents = [ident.encode() for ident in keyed]
    fingerprints = [increment_digest(key, value) for _, key, value in entries]
    rows = await conn.fetch(_CLAIM, idents, fingerprints, window_s)
    claimed = sorted(row["n"] - 1 for row in rows)
    fresh = [entries[i] for i in claimed]
    repeated = len(entries) - len(fresh)
    conflicting = 0
    if repeated:
        taken = set(claimed)
        old = [i for i in range(len(entries)) if i not in taken]
        conflicting = await conn.fetchval(
            _CONFLICTING, [idents[i] for i in old], [fingerprints[i] for i in old]
        )
    return Claimed(fresh, repeated, conflicting)


async def forget_ids(conn: Conn, window_s: int, limit: int = FORGET_CHUNK) -> int:
    """Delete up to `limit` ids older than the window; how many went."""
    status = await conn.execute(_FORGET, window_s, limit)
    return int(status.rpartition(" ")[2])  # "DELETE <rows>"
