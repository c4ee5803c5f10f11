"""distcount's PostgreSQL side."""

from distcount_store._connect import connect, redact
from distcount_store._errors import DatabaseUnavailable, MigrationError, StoreError
from distcount_store._migrate import Migration, applied_migrations, find_migrations, migrate

__all__ = [
    "DatabaseUnavailable",
    "Migration",
    "MigrationError",
    "StoreError",
    "applied_migrations",
    "connect",
    "find_migrations",
    "migrate",
    "redact",
]
