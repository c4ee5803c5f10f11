"""distcount's settings, read from DISTCOUNT_* environment variables, declared in one table."""

from distcount_config._declare import Derived, Rule, Scope, Setting
from distcount_config._docs import export_lines, markdown, with_tables
from distcount_config._errors import ConfigError
from distcount_config._kafka import kafka_client_options
from distcount_config._kinds import token_hash
from distcount_config._load import given_secrets, load, load_dev
from distcount_config._rollup import RollupTier
from distcount_config._settings import (
    DevSettings,
    KafkaSecurity,
    MetricsSettings,
    Settings,
    project_root,
)
from distcount_config._table import METRICS_REPORTERS, RULES, SETTINGS

__all__ = [
    "METRICS_REPORTERS",
    "RULES",
    "SETTINGS",
    "ConfigError",
    "Derived",
    "DevSettings",
    "KafkaSecurity",
    "MetricsSettings",
    "RollupTier",
    "Rule",
    "Scope",
    "Setting",
    "Settings",
    "export_lines",
    "given_secrets",
    "kafka_client_options",
    "load",
    "load_dev",
    "markdown",
    "project_root",
    "token_hash",
    "with_tables",
]
