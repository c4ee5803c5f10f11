"""distcount's settings, read from DISTCOUNT_* environment variables, declared in one table."""

from distcount_config._declare import Derived, Rule, Scope, Setting
from distcount_config._docs import export_lines, markdown, with_tables
from distcount_config._errors import ConfigError
from distcount_config._load import load, load_dev
from distcount_config._rollup import RollupTier
from distcount_config._settings import DevSettings, MetricsSettings, Settings, project_root
from distcount_config._table import METRICS_REPORTERS, RULES, SETTINGS

__all__ = [
    "METRICS_REPORTERS",
    "RULES",
    "SETTINGS",
    "ConfigError",
    "Derived",
    "DevSettings",
    "MetricsSettings",
    "RollupTier",
    "Rule",
    "Scope",
    "Setting",
    "Settings",
    "export_lines",
    "load",
    "load_dev",
    "markdown",
    "project_root",
    "with_tables",
]
