"""Helpers for tests that run the `distcount` command as a user would, in its own process."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` different ports free now: each held until all are chosen, so none comes twice."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def clean_environ() -> dict[str, str]:
    """The process environment without any DISTCOUNT_ setting of the developer's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DISTCOUNT_")}


@pytest.fixture
def dev_env() -> Iterator[dict[str, str]]:
    """Settings for a private local stack: its own state folder and free ports."""
    # not under pytest's tmp_path: that is private to root, and PostgreSQL runs as another user
    # when the tests run as root
    parent = Path(tempfile.mkdtemp(prefix="distcount-test-"))
    parent.chmod(0o755)
    env = clean_environ()
    kafka, controller, postgres, http = free_ports(4)
    env.update(
        DISTCOUNT_DEV_DIR=str(parent / "state"),
        DISTCOUNT_DEV_KAFKA_PORT=str(kafka),
        DISTCOUNT_DEV_KAFKA_CONTROLLER_PORT=str(controller),
        DISTCOUNT_DEV_POSTGRES_PORT=str(postgres),
        DISTCOUNT_HTTP_PORT=str(http),
        DISTCOUNT_DEV_STOP_TIMEOUT_S="20",
    )
    yield env
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def run_cli() -> CliRunner:
    def run(
        *args: str, env: Mapping[str, str], timeout_s: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "distcount_cli", *args],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    return run
