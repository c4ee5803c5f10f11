"""The settings table against what is built and written from it: the settings objects, the
README's configuration tables, and the `export` lines of `distcount dev status --env`."""

from __future__ import annotations

import dataclasses
import operator
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from distcount_config import (
    SETTINGS,
    Derived,
    DevSettings,
    KafkaSecurity,
    MetricsSettings,
    Scope,
    Setting,
    Settings,
    export_lines,
    load,
    load_dev,
    markdown,
    with_tables,
)
from distcount_devstack import Stack

README = Path(__file__).resolve().parents[2] / "README.md"

# A value for every setting, none of them its default, all valid together.
SAMPLES = {
    "KAFKA_BOOTSTRAP": "kafka-1.example:19092,kafka-2.example:19092",
    "DATABASE_URL": "postgresql://app:pw@db.example:6543/counts",
    "MIGRATE_DATABASE_URL": "postgresql://owner:pw2@db.example:6543/counts",
    "TOPIC": "clicks",
    "DLQ_TOPIC": "clicks.dead",
    "PARTITIONS": "12",
    "GROUP_ID": "clicks-aggregator",
    "FLUSH_INTERVAL_MS": "1000",
    "BUCKET_MS": "60000",
    "HTTP_HOST": "0.0.0.0",
    "HTTP_PORT": "8080",
    "HTTP_REUSE_PORT": "on",
    "INGRESS_URL": "https://ingress.example:8443/distcount",
    "METRICS": "dogstatsd",
    "STATSD_HOST": "statsd.example",
    "STATSD_PORT": "9125",
    "METRICS_INTERVAL_MS": "10000",
    "METRICS_SAMPLE_RATE": "0.5",
    "METRICS_TAGS": "env:prod,region:eu",
    "MAX_LIVE_ENTRIES": "5000",
    "STALL_RETRY_MS": "1000",
    "READ_AFTER_TIMEOUT_MS": "2500",
    "PRODUCE_TIMEOUT_MS": "2000",
    "PRODUCE_COMPRESSION": "zstd",
    "MAX_INFLIGHT_SENDS": "100",
    "MAX_BODY_BYTES": "4096",
    "HTTP_HEADER_TIMEOUT_S": "2.5",
    "HTTP_BODY_TIMEOUT_S": "12",
    "HTTP_MAX_CONNECTIONS": "500",
    "IDEMPOTENCY_WINDOW_S": "3600",
    "LOG_LEVEL": "debug",
    "LOG_FORMAT": "json",
    "MIGRATIONS_DIR": "/srv/distcount/migrations",
    "ROLLUP": "10m@2h,1d@7d",
    "COMPACT_INTERVAL_MS": "600000",
    "WRITE_TOKEN_HASHES": "sha256:" + "ab" * 32 + "," + "0f" * 32,
    "READ_TOKEN_HASHES": "SHA256:" + "CD" * 32,
    "TOKEN": "Ld9fQ2x-token_of.a~client",
    "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "distcount-services",
    "KAFKA_SASL_PASSWORD": "kafka's secret",
    # files that exist wherever the tests run
    "KAFKA_SSL_CAFILE": __file__,
    "KAFKA_SSL_CERTFILE": str(README),
    "KAFKA_SSL_KEYFILE": str(Path(__file__).parent / "__init__.py"),
    "DEV_DIR": "/srv/distcount/state",
    "DEV_CACHE_DIR": "/srv/distcount/cache",
    "DEV_KAFKA_VERSION": "3.9.1",
    "DEV_MAVEN_REPO": "https://mirror.example/maven2",
    "DEV_KAFKA_PORT": "19092",
    "DEV_KAFKA_CONTROLLER_PORT": "19093",
    "DEV_POSTGRES_PORT": "15432",
    "DEV_STOP_TIMEOUT_S": "5",
}
# what DevSettings holds beyond the table: facts about the environment, not settings
DEV_FACTS = {
    "java_home",
    "external_kafka",
    "external_postgres",
    "metrics_chosen",
    "sample_rate_chosen",
}


def _in_scope(scope: Scope) -> list[Setting[Any]]:
    return [setting for setting in SETTINGS if setting.scope is scope]


def _flat_fields(cls: type[Any], prefix: str = "") -> set[str]:
    names = set()
    for f in dataclasses.fields(cls):
        if f.name == "metrics":
            names |= _flat_fields(MetricsSettings, "metrics.")
        elif f.name == "kafka_security":
            names |= _flat_fields(KafkaSecurity, "kafka_security.")
        else:
            names.add(prefix + f.name)
    return names


# --- the README -------------------------------------------------------------------------------


def test_the_readme_shows_the_table_as_it_is() -> None:
    readme = README.read_text()
    section = readme[readme.index("\n## Configuration\n") :]
    section = section[: section.index("\n## ", 1)]
    assert markdown() in section, "the generated tables belong in the README's Configuration"
    assert with_tables(readme) == readme, (
        "the README's configuration tables differ from libs/config's table: "
        "run `uv run python -m distcount_config --write README.md`"
    )


def test_the_readme_names_every_setting_once_per_row() -> None:
    rows = [line for line in markdown().splitlines() if line.startswith("| `DISTCOUNT_")]
    assert [row.split("`")[1] for row in rows] == [setting.variable for setting in SETTINGS]


def test_the_module_prints_and_writes_the_tables(tmp_path: Path) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "distcount_config", "--markdown"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert printed.stdout == markdown()
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{markdown().replace('`3333`', '`80`')}\nafter\n")
    subprocess.run([sys.executable, "-m", "distcount_config", "--write", str(stale)], check=True)
    assert stale.read_text() == f"# x\n\n{markdown()}\nafter\n"


# --- the table against the settings objects ---------------------------------------------------


def test_every_attribute_of_the_settings_is_declared_once() -> None:
    assert len({setting.name for setting in SETTINGS}) == len(SETTINGS)
    services = [setting.field for setting in _in_scope(Scope.SERVICES)]
    assert sorted(services) == sorted(_flat_fields(Settings))
    dev = {setting.field for setting in _in_scope(Scope.DEV)}
    assert dev | DEV_FACTS == _flat_fields(DevSettings)
    assert all(setting.name.startswith("DEV_") for setting in _in_scope(Scope.DEV))


def test_every_setting_lands_on_the_attribute_it_declares() -> None:
    assert set(SAMPLES) == {setting.name for setting in SETTINGS}
    environ = {f"DISTCOUNT_{name}": raw for name, raw in SAMPLES.items()}
    loaded = {Scope.SERVICES: load(environ), Scope.DEV: load_dev(environ)}
    defaults = {Scope.SERVICES: load({}), Scope.DEV: load_dev({})}
    for setting in SETTINGS:
        value = operator.attrgetter(setting.field)(loaded[setting.scope])
        assert value == setting.kind.parse(SAMPLES[setting.name]), setting.name
        assert value != operator.attrgetter(setting.field)(defaults[setting.scope]), setting.name


def test_constant_defaults_are_values_of_their_kind() -> None:
    for setting in SETTINGS:
        if not isinstance(setting.default, Derived):
            shown = setting.kind.show(setting.default)
            assert setting.kind.parse(shown) == setting.default, setting.name


def test_secret_settings_stay_out_of_the_repr() -> None:
    repr_of = {f.name: f.repr for f in dataclasses.fields(Settings)}
    repr_of |= {f"kafka_security.{f.name}": f.repr for f in dataclasses.fields(KafkaSecurity)}
    secrets = [setting for setting in SETTINGS if setting.secret]
    assert {setting.name for setting in secrets} == {
        "DATABASE_URL",
        "MIGRATE_DATABASE_URL",
        "WRITE_TOKEN_HASHES",
        "READ_TOKEN_HASHES",
        "TOKEN",
        "KAFKA_SASL_PASSWORD",
    }
    for setting in secrets:
        assert repr_of[setting.field] is False, setting.name


# --- `dev status --env` -------------------------------------------------------------------------


def test_export_lines_are_the_exported_settings_with_their_values() -> None:
    environ = {
        "DISTCOUNT_DATABASE_URL": "postgresql://app:it's secret@db.example/counts",
        "DISTCOUNT_HTTP_PORT": "8080",
    }
    lines = export_lines(load(environ))
    exported = [setting for setting in SETTINGS if setting.exported]
    assert [line.split("=")[0].removeprefix("# ") for line in lines] == [
        f"export {s.variable}" if not s.secret else s.variable for s in exported
    ]
    assert {s.name for s in exported} >= {"KAFKA_BOOTSTRAP", "DATABASE_URL", "TOPIC", "HTTP_PORT"}
    assert all(setting.scope is Scope.SERVICES for setting in exported)
    # the user's password is not printed: the line says where the database is, as a comment
    assert "it's secret" not in "\n".join(lines)
    assert "# DISTCOUNT_DATABASE_URL=postgresql://app:***@db.example/counts is your own" in lines[1]
    # what a shell makes of them, in the environment that holds the secret, is the settings again
    exports = [line for line in lines if line.startswith("export ")]
    assigned = dict(shlex.split(line)[1].split("=", 1) for line in exports)
    assert load({**environ, **assigned}) == load(environ)


def test_export_lines_print_the_local_stacks_passwords() -> None:
    lines = export_lines(load({}))
    assert (
        "export DISTCOUNT_DATABASE_URL=postgresql://distcount:distcount@127.0.0.1:5432/distcount"
        in lines
    )
    assert not any(line.startswith("#") for line in lines)


def test_the_stack_exports_the_endpoints_it_runs(tmp_path: Path) -> None:
    environ = {
        "DISTCOUNT_DEV_DIR": str(tmp_path),
        "DISTCOUNT_DEV_KAFKA_PORT": "19092",
        "DISTCOUNT_DEV_POSTGRES_PORT": "15432",
        "DISTCOUNT_TOPIC": "clicks",
    }
    settings = load(environ)
    lines = Stack(settings, load_dev(environ)).env_lines()
    # the services' default endpoints are the ones the stack runs
    assert lines == export_lines(settings)
    assert "export DISTCOUNT_KAFKA_BOOTSTRAP=127.0.0.1:19092" in lines
    assert "export DISTCOUNT_TOPIC=clicks" in lines
