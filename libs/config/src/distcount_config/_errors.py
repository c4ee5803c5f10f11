class ConfigError(ValueError):
    """A DISTCOUNT_* variable holds a value distcount cannot use; the message names it."""
