"""distcount's settings, read from DISTCOUNT_* environment variables."""

from distcount_config._errors import ConfigError
from distcount_config._settings import (
    METRICS_REPORTERS,
    DevSettings,
    MetricsSettings,
    Settings,
    load,
    project_root,
)

__all__ = [
    "METRICS_REPORTERS",
    "ConfigError",
    "DevSettings",
    "MetricsSettings",
    "Settings",
    "load",
    "project_root",
]
