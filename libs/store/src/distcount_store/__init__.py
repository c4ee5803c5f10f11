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
from distcount_store._migrate import Migration, applied_migrations, find_migrations, migrate

__all__ = [
    "DatabaseUnavailable",
    "Fenced",
    "Migration",
    "MigrationError",
    "PartitionFlush",
    "StoreError",
    "Total",
    "applied_migrations",
    "connect",
    "create_pool",
    "find_migrations",
    "flush_partition",
    "migrate",
    "read_offset",
    "read_offsets",
    "read_total",
    "redact",
]
