"""distcount's settings, read from DISTCOUNT_* environment variables."""

from distcount_config._errors import ConfigError
from distcount_config._settings import DevSettings, Settings, load, project_root

__all__ = ["ConfigError", "DevSettings", "Settings", "load", "project_root"]
