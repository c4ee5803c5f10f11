"""The store's exceptions.

StoreError
 ├── MigrationError      a migration file is malformed, changed after it ran, or failed
 └── DatabaseUnavailable PostgreSQL could not be reached (retriable)
"""

from distcount_core import DistcountError


class StoreError(DistcountError):
    """Root of every error raised by distcount_store."""

    retriable = False


class MigrationError(StoreError):
    pass


class DatabaseUnavailable(StoreError):
    retriable = True
