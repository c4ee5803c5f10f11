"""Each way `distcount dev up` can be refused gives a message that says what to do."""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import pytest

from tests.integration.conftest import CliRunner, free_port

pytestmark = [pytest.mark.integration, pytest.mark.devstack]


def _fake_java(folder: Path, version: str) -> Path:
    java = folder / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2024-01-16' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return folder


def _nothing_started(env: dict[str, str]) -> None:
    state = Path(env["DISTCOUNT_DEV_DIR"])
    assert not (state / "stack.json").exists()
    for port in ("DISTCOUNT_DEV_KAFKA_PORT", "DISTCOUNT_DEV_POSTGRES_PORT"):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(env[port]))) != 0


def test_no_java(run_cli: CliRunner, dev_env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    env = dev_env | {"PATH": str(empty)}
    env.pop("JAVA_HOME", None)

    result = run_cli("dev", "up", env=env)

    assert result.returncode == 1
    assert "needs Java 17 or newer" in result.stderr
    assert "no java was found" in result.stderr
    _nothing_started(dev_env)


def test_java_older_than_17(run_cli: CliRunner, dev_env: dict[str, str], tmp_path: Path) -> None:
    env = dev_env | {"JAVA_HOME": str(_fake_java(tmp_path / "jdk11", "11.0.22"))}

    result = run_cli("dev", "up", env=env)

    assert result.returncode == 1
    assert "is Java 11" in result.stderr
    assert "needs Java 17 or newer" in result.stderr
    _nothing_started(dev_env)


def test_jars_cannot_be_fetched(
    run_cli: CliRunner, dev_env: dict[str, str], tmp_path: Path
) -> None:
    nothing_there = f"http://127.0.0.1:{free_port()}/maven2"
    env = dev_env | {
        "DISTCOUNT_DEV_CACHE_DIR": str(tmp_path / "cache"),
        "DISTCOUNT_DEV_MAVEN_REPO": nothing_there,
    }

    result = run_cli("dev", "up", env=env)

    assert result.returncode == 1
    assert f"could not fetch the Apache Kafka 4.1.1 jars from {nothing_there}" in result.stderr
    assert "DISTCOUNT_DEV_MAVEN_REPO" in result.stderr
    assert not (tmp_path / "cache" / "kafka-4.1.1" / "complete").exists()
    _nothing_started(dev_env)


@pytest.mark.parametrize(
    "variable",
    [
        "DISTCOUNT_DEV_KAFKA_PORT",
        "DISTCOUNT_DEV_KAFKA_CONTROLLER_PORT",
        "DISTCOUNT_DEV_POSTGRES_PORT",
    ],
)
def test_port_already_taken(run_cli: CliRunner, dev_env: dict[str, str], variable: str) -> None:
    port = int(dev_env[variable])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()

        result = run_cli("dev", "up", env=dev_env)

    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1" in result.stderr
    assert "already in use" in result.stderr
    assert variable in result.stderr
    assert not (Path(dev_env["DISTCOUNT_DEV_DIR"]) / "stack.json").exists()


def test_broken_state_folder(run_cli: CliRunner, dev_env: dict[str, str]) -> None:
    state = Path(dev_env["DISTCOUNT_DEV_DIR"])
    state.mkdir()
    (state / "stack.json").write_text("{ this is not json")

    up = run_cli("dev", "up", env=dev_env)
    status = run_cli("dev", "status", env=dev_env)

    for result in (up, status):
        assert result.returncode == 1
        assert f"the state folder {state} is damaged" in result.stderr
        assert "distcount dev down --purge" in result.stderr
    purge = run_cli("dev", "down", "--purge", env=dev_env)
    assert purge.returncode == 0, purge.stderr
    assert not state.exists()


def test_state_folder_with_unformatted_kafka_storage(
    run_cli: CliRunner, dev_env: dict[str, str]
) -> None:
    data = Path(dev_env["DISTCOUNT_DEV_DIR"]) / "kafka" / "data"
    data.mkdir(parents=True)
    (data / "stray-file").write_text("")

    result = run_cli("dev", "up", env=dev_env)

    assert result.returncode == 1
    assert "holds no formatted Kafka storage" in result.stderr
    assert "--purge" in result.stderr


def test_external_service_that_does_not_answer(run_cli: CliRunner, dev_env: dict[str, str]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    env = dev_env | {"DISTCOUNT_KAFKA_BOOTSTRAP": dead}

    result = run_cli("dev", "up", env=env)

    assert result.returncode == 1
    assert f"DISTCOUNT_KAFKA_BOOTSTRAP is {dead}, but no Kafka broker answers" in result.stderr
    assert os.path.exists(dev_env["DISTCOUNT_DEV_DIR"])  # the lock folder only
    _nothing_started(dev_env)


def test_bad_setting_names_the_variable(run_cli: CliRunner, dev_env: dict[str, str]) -> None:
    result = run_cli("dev", "up", env=dev_env | {"DISTCOUNT_DEV_POSTGRES_PORT": "70000"})

    assert result.returncode == 1
    assert "DISTCOUNT_DEV_POSTGRES_PORT='70000' is not valid" in result.stderr


def test_no_maven(run_cli: CliRunner, dev_env: dict[str, str], tmp_path: Path) -> None:
    java = shutil.which("java")
    if java is None:
        pytest.skip("no java: the Java check would refuse first")
    empty = tmp_path / "empty-path"
    empty.mkdir()
    env = dev_env | {
        "PATH": str(empty),
        "JAVA_HOME": str(Path(java).resolve().parent.parent),
        # no jars cached there: Maven would be needed
        "DISTCOUNT_DEV_CACHE_DIR": str(tmp_path / "cache"),
    }

    result = run_cli("dev", "up", env=env)

    assert result.returncode == 1
    assert "no mvn was found on PATH" in result.stderr
    assert "apt-get install maven" in result.stderr
    _nothing_started(dev_env)
