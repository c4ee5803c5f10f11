"""Reading the environment: the one place in distcount that does.

Entry points call `load()` (the services' settings) and, for the local stack, `load_dev()`, once,
and pass the settings down. Each value is parsed and checked as its declaration in `_table` says;
a bad one, a derived default that comes out bad, a broken rule, or a DISTCOUNT_ name that is no
setting raises `ConfigError` naming the variable and what it accepts.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from distcount_config import _table as t
from distcount_config._declare import PREFIX, Derived, Scope, Setting
from distcount_config._errors import ConfigError
from distcount_config._settings import (
    LOCAL_PASSWORDS,
    DevSettings,
    KafkaSecurity,
    MetricsSettings,
    Settings,
)

T = TypeVar("T")

# a derived default shown in an error is cut to this many characters
_SHOWN_MAX = 60


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """The services' settings, from `environ` (the process environment by default)."""
    v = _Environment(os.environ if environ is None else environ)
    settings = Settings(
        kafka_bootstrap=v.get(t.KAFKA_BOOTSTRAP),
        database_url=v.get(t.DATABASE_URL),
        migrate_database_url=v.get(t.MIGRATE_DATABASE_URL),
        topic=v.get(t.TOPIC),
        dlq_topic=v.get(t.DLQ_TOPIC),
        partitions=v.get(t.PARTITIONS),
        group_id=v.get(t.GROUP_ID),
        flush_interval_ms=v.get(t.FLUSH_INTERVAL_MS),
        bucket_ms=v.get(t.BUCKET_MS),
        http_host=v.get(t.HTTP_HOST),
        http_port=v.get(t.HTTP_PORT),
        http_reuse_port=v.get(t.HTTP_REUSE_PORT),
        ingress_url=v.get(t.INGRESS_URL),
        metrics=MetricsSettings(
            reporter=v.get(t.METRICS),
            statsd_host=v.get(t.STATSD_HOST),
            statsd_port=v.get(t.STATSD_PORT),
            interval_ms=v.get(t.METRICS_INTERVAL_MS),
            sample_rate=v.get(t.METRICS_SAMPLE_RATE),
            tags=v.get(t.METRICS_TAGS),
        ),
        max_live_entries=v.get(t.MAX_LIVE_ENTRIES),
        stall_retry_ms=v.get(t.STALL_RETRY_MS),
        read_after_timeout_ms=v.get(t.READ_AFTER_TIMEOUT_MS),
        produce_timeout_ms=v.get(t.PRODUCE_TIMEOUT_MS),
        produce_compression=v.get(t.PRODUCE_COMPRESSION),
        max_inflight_sends=v.get(t.MAX_INFLIGHT_SENDS),
        max_body_bytes=v.get(t.MAX_BODY_BYTES),
        http_header_timeout_s=v.get(t.HTTP_HEADER_TIMEOUT_S),
        http_body_timeout_s=v.get(t.HTTP_BODY_TIMEOUT_S),
        http_max_connections=v.get(t.HTTP_MAX_CONNECTIONS),
        idempotency_window_s=v.get(t.IDEMPOTENCY_WINDOW_S),
        log_level=v.get(t.LOG_LEVEL),
        log_format=v.get(t.LOG_FORMAT),
        migrations_dir=v.get(t.MIGRATIONS_DIR),
        rollup=v.get(t.ROLLUP),
        compact_interval_ms=v.get(t.COMPACT_INTERVAL_MS),
        write_token_hashes=v.get(t.WRITE_TOKEN_HASHES),
        read_token_hashes=v.get(t.READ_TOKEN_HASHES),
        token=v.get(t.TOKEN),
        kafka_security=KafkaSecurity(
            protocol=v.get(t.KAFKA_SECURITY_PROTOCOL),
            sasl_mechanism=v.get(t.KAFKA_SASL_MECHANISM),
            sasl_username=v.get(t.KAFKA_SASL_USERNAME),
            sasl_password=v.get(t.KAFKA_SASL_PASSWORD),
            ssl_cafile=v.get(t.KAFKA_SSL_CAFILE),
            ssl_certfile=v.get(t.KAFKA_SSL_CERTFILE),
            ssl_keyfile=v.get(t.KAFKA_SSL_KEYFILE),
        ),
    )
    v.check(Scope.SERVICES)
    return settings


def given_secrets(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The secret values the environment sets (passwords, tokens), for the logs to hide
    wherever they turn up, even in a driver's message: a URL's passwords rather than the URL,
    and none of the local stack's own passwords, which are public and would blot out the word
    distcount from every line."""
    given = os.environ if environ is None else environ
    found: list[str] = []
    for setting in t.SETTINGS:
        raw = given.get(setting.variable, "").strip()
        if setting.secret and raw:
            found += url_passwords(raw) if "://" in raw else [raw]
    return tuple(dict.fromkeys(s for s in found if s not in LOCAL_PASSWORDS))


def url_passwords(url: str) -> list[str]:
    """The passwords a URL holds: its user's, and those of its query string, as written and
    as decoded."""
    parts = urlsplit(url)
    raw = parts.netloc.rpartition("@")[0].partition(":")[2] if "@" in parts.netloc else ""
    found = [raw, unquote(raw)]
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name.lower() in ("password", "sslpassword"):
            found += [value, quote(value, safe="")]
    return [p for p in dict.fromkeys(found) if p]


def load_dev(environ: Mapping[str, str] | None = None) -> DevSettings:
    """The local stack's settings, from `environ` (the process environment by default)."""
    v = _Environment(os.environ if environ is None else environ)
    java_home = v.machine("JAVA_HOME")
    dev = DevSettings(
        state_dir=v.get(t.DEV_DIR),
        cache_dir=v.get(t.DEV_CACHE_DIR),
        kafka_version=v.get(t.DEV_KAFKA_VERSION),
        maven_repo_url=v.get(t.DEV_MAVEN_REPO),
        kafka_port=v.get(t.DEV_KAFKA_PORT),
        kafka_controller_port=v.get(t.DEV_KAFKA_CONTROLLER_PORT),
        postgres_port=v.get(t.DEV_POSTGRES_PORT),
        stop_timeout_s=v.get(t.DEV_STOP_TIMEOUT_S),
        java_home=Path(java_home) if java_home else None,
        external_kafka=v.is_set(t.KAFKA_BOOTSTRAP),
        external_postgres=v.is_set(t.DATABASE_URL),
        metrics_chosen=v.is_set(t.METRICS),
        sample_rate_chosen=v.is_set(t.METRICS_SAMPLE_RATE),
    )
    v.check(Scope.DEV)
    return dev


class _Environment:
    """The settings of one environment, each parsed when first asked for (a derived default
    asks for what it derives from), so that a loader reads only what it uses."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._machine = environ
        self._given = {k: v for k, v in environ.items() if k.startswith(PREFIX)}
        self._values: dict[str, object] = {}
        self._asked: list[str] = []  # every variable asked for, in order, to explain defaults

    def machine(self, name: str) -> str | None:
        return self._machine.get(name) or None

    def is_set(self, setting: Setting[Any]) -> bool:
        return self._given.get(setting.variable, "").strip() != ""

    def get(self, setting: Setting[T]) -> T:
        self._asked.append(setting.variable)
        if setting.variable not in self._values:
            if self.is_set(setting):
                self._values[setting.variable] = self._parse(setting)
            else:
                self._values[setting.variable] = self._default(setting)
        # what was stored under this setting's name came from this setting's kind
        return cast(T, self._values[setting.variable])

    def _parse(self, setting: Setting[T]) -> T:
        raw = self._given[setting.variable]
        try:
            return setting.kind.parse(raw.strip())
        except ValueError as exc:
            shown = setting.hidden(raw) if setting.secret else raw
            raise ConfigError(
                f"{setting.variable}={shown!r} is not valid: expected "
                f"{setting.kind.accepts}{_detail(exc)}"
            ) from None

    def _default(self, setting: Setting[T]) -> T:
        if not isinstance(setting.default, Derived):
            return setting.default
        derived: Derived[T] = setting.default
        first = len(self._asked)
        value = derived.compute(self)
        # A default derived from other settings can come out bad even though each of them is
        # good (a topic name one character short of Kafka's limit gives a dead-letter topic
        # over it): it is checked like a value given.
        try:
            setting.kind.parse(setting.kind.show(value))
        except ValueError as exc:
            given = [name for name in self._asked[first:] if self._given.get(name, "").strip()]
            change = f", or change {' or '.join(dict.fromkeys(given))}" if given else ""
            shown = setting.shown(value)
            if len(shown) > _SHOWN_MAX:
                shown = shown[: _SHOWN_MAX - 1] + "…"
            raise ConfigError(
                f"{setting.variable} is not set, and its default, {shown!r} "
                f"({derived.described}), is not valid: expected {setting.kind.accepts}"
                f"{_detail(exc)}; set {setting.variable}{change}"
            ) from None
        return value

    def check(self, scope: Scope) -> None:
        """The rules of `scope`, then the names: every DISTCOUNT_ variable must be a setting
        (of either scope: both loaders see the same environment)."""
        for rule in t.RULES:
            if rule.scope is scope and rule.broken(self):
                raise ConfigError(rule.message)
        known = {setting.variable: setting.name for setting in t.SETTINGS}
        for name in sorted(set(self._given) - set(known)):
            guess = difflib.get_close_matches(
                name.removeprefix(PREFIX), known.values(), n=1, cutoff=0.75
            )
            hint = f"; did you mean {PREFIX}{guess[0]}?" if guess else ""
            raise ConfigError(f"{name} is not a distcount setting{hint}")


def _detail(exc: ValueError) -> str:
    return f" ({exc})" if str(exc) else ""
