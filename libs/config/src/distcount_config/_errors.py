from distcount_core import DistcountError


class ConfigError(DistcountError, ValueError):
    """A DISTCOUNT_* variable holds a value distcount cannot use; the message names it."""
