"""distcount's PostgreSQL side: migrations, the aggregators' flush, and reads."""

from distcount_store._connect import connect, create_pool, redact
from distcount_store._counters import (
    Fenced,
    PartitionFlush,
    Total,
    flush_partition,
    read_offset,
    read_offsets,
    read_total,
)
from distcount_store._errors import DatabaseUnavailable, MigrationError, StoreError
from distcount_store._grants import SERVICE_PRIVILEGES, grant_service_privileges, service_role
from distcount_store._migrate import Migration, applied_migrations, find_migrations, migrate
from distcount_store._stalls import (
    PartitionRef,
    SkipRefused,
    Stall,
    read_stalls,
    record_stall,
    skip_stalled,
)

__all__ = [
    "SERVICE_PRIVILEGES",
    "DatabaseUnavailable",
    "Fenced",
    "Migration",
    "MigrationError",
    "PartitionFlush",
    "PartitionRef",
    "SkipRefused",
    "Stall",
    "StoreError",
    "Total",
    "applied_migrations",
    "connect",
    "create_pool",
    "find_migrations",
    "flush_partition",
    "grant_service_privileges",
    "migrate",
    "read_offset",
    "read_offsets",
    "read_stalls",
    "read_total",
    "record_stall",
    "redact",
    "service_role",
    "skip_stalled",
]
