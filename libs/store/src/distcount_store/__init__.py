"""distcount's PostgreSQL side: migrations, the aggregators' flush, and reads. The only package
that knows the driver: its failures arrive as `StoreError`s, whose `retriable` says whether to
try again."""

from distcount_store._compact import (
    CHUNK_ROWS,
    Merged,
    Tier,
    TierDone,
    TierRange,
    compaction,
    compaction_lock,
    tier_ranges,
)
from distcount_store._counters import (
    Fenced,
    PartitionFlush,
    Total,
    Written,
    flush_partition,
    read_offset,
    read_offsets,
    read_total,
)
from distcount_store._database import Connection, Database, connect, redact
from distcount_store._errors import DatabaseUnavailable, MigrationError, QueryFailed, StoreError
from distcount_store._grants import SERVICE_PRIVILEGES, grant_service_privileges, service_role
from distcount_store._ids import FORGET_CHUNK, claim_ids, forget_ids, id_digest
from distcount_store._migrate import (
    Migration,
    applied_migrations,
    find_migrations,
    migrate,
    shipped_migrations,
)
from distcount_store._provision import create_database, create_login_role
from distcount_store._reads import Flushed, HistoryQuery, prefix_end
from distcount_store._stalls import (
    PartitionRef,
    SkipRefused,
    Stall,
    read_stalls,
    record_stall,
    skip_stalled,
)

__all__ = [
    "CHUNK_ROWS",
    "FORGET_CHUNK",
    "SERVICE_PRIVILEGES",
    "Connection",
    "Database",
    "DatabaseUnavailable",
    "Fenced",
    "Flushed",
    "HistoryQuery",
    "Merged",
    "Migration",
    "MigrationError",
    "PartitionFlush",
    "PartitionRef",
    "QueryFailed",
    "SkipRefused",
    "Stall",
    "StoreError",
    "Tier",
    "TierDone",
    "TierRange",
    "Total",
    "Written",
    "applied_migrations",
    "claim_ids",
    "compaction",
    "compaction_lock",
    "connect",
    "create_database",
    "create_login_role",
    "find_migrations",
    "flush_partition",
    "forget_ids",
    "grant_service_privileges",
    "id_digest",
    "migrate",
    "prefix_end",
    "read_offset",
    "read_offsets",
    "read_stalls",
    "read_total",
    "record_stall",
    "redact",
    "service_role",
    "shipped_migrations",
    "skip_stalled",
    "tier_ranges",
]
