"""What every distcount package shares: the root exception and the backoff schedule."""

from distcount_core._backoff import Backoff
from distcount_core._errors import DistcountError, describe

__all__ = ["Backoff", "DistcountError", "describe"]
