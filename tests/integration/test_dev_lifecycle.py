"""`distcount dev up | status | down` on a private stack of its own (its own folder and ports)."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from distcount_store import connect
from tests.conftest import Services
from tests.integration.conftest import CliRunner, free_port

pytestmark = [pytest.mark.integration, pytest.mark.devstack]


# a reader thread per process, feeding its lines to a queue
_pumps: dict[int, queue.Queue[str]] = {}


def _read_until(
    process: subprocess.Popen[str], patterns: dict[str, re.Pattern[str]], timeout_s: float
) -> set[str]:
    """The names of `patterns` seen in the process's output before `timeout_s`."""
    assert process.stdout is not None
    found: set[str] = set()
    lines = _pumps.get(process.pid)
    if lines is None:
        lines = _pumps[process.pid] = queue.Queue()
        queued = lines

        def pump() -> None:
            for line in process.stdout or ():
                queued.put(line)

        threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while found != set(patterns) and (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        found.update(name for name, pattern in patterns.items() if pattern.search(line))
    return found


def _pids(status_output: str) -> dict[str, tuple[str, str]]:
    """name -> (pid, state) from the `dev status` table."""
    rows = {}
    for line in status_output.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] in ("kafka", "postgres", "ingress", "aggregator"):
            rows[fields[0]] = (fields[1], fields[2])
    return rows


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(")")[-1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.1)
    raise AssertionError(f"pid {pid} still runs")


async def _topics(bootstrap: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(await admin.list_topics())
    finally:
        await admin.close()
    # Kafka's own topics (__consumer_offsets, __transaction_state) come and go with use
    return {t["topic"]: len(t["partitions"]) for t in described if not t["topic"].startswith("__")}


def test_up_status_restart_down_purge(run_cli: CliRunner, dev_env: dict[str, str]) -> None:
    state = Path(dev_env["DISTCOUNT_DEV_DIR"])
    try:
        up = run_cli("dev", "up", env=dev_env)
        assert up.returncode == 0, up.stdout + up.stderr

        status = run_cli("dev", "status", env=dev_env)
        assert status.returncode == 0, status.stdout
        first = _pids(status.stdout)
        assert {name: s for name, (_, s) in first.items()} == {
            "kafka": "healthy",
            "postgres": "healthy",
            "ingress": "healthy",
            "aggregator": "healthy",
        }

        env_lines = run_cli("dev", "status", "--env", env=dev_env).stdout.splitlines()
        bootstrap = f"127.0.0.1:{dev_env['DISTCOUNT_DEV_KAFKA_PORT']}"
        assert f"export DISTCOUNT_KAFKA_BOOTSTRAP={bootstrap}" in env_lines
        db_port = dev_env["DISTCOUNT_DEV_POSTGRES_PORT"]
        assert (
            f"export DISTCOUNT_DATABASE_URL=postgresql://distcount:distcount@127.0.0.1:{db_port}"
            "/distcount" in env_lines
        )
        assert f"export DISTCOUNT_HTTP_PORT={dev_env['DISTCOUNT_HTTP_PORT']}" in env_lines
        assert asyncio.run(_topics(bootstrap)) == {
            "distcount.increments": 6,
            "distcount.increments.dlq": 6,
        }

        # crashed pieces: `up` restarts just those
        for crashed in ("postgres", "aggregator"):
            os.kill(int(first[crashed][0]), signal.SIGKILL)
            _wait_gone(int(first[crashed][0]))
            assert _pids(run_cli("dev", "status", env=dev_env).stdout)[crashed][1] == "stopped"
        # and downloads nothing: the jar cache serves, so a dead repository does no harm
        offline = dev_env | {"DISTCOUNT_DEV_MAVEN_REPO": f"http://127.0.0.1:{free_port()}/m2"}
        again = run_cli("dev", "up", env=offline)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "fetching" not in again.stdout
        assert "kafka: started" not in again.stdout
        second = _pids(run_cli("dev", "status", env=dev_env).stdout)
        assert second["kafka"] == first["kafka"]
        assert second["ingress"] == first["ingress"]
        for restarted in ("postgres", "aggregator"):
            assert second[restarted][0] != first[restarted][0]
            assert second[restarted][1] == "healthy"

        url = f"postgresql://distcount:distcount@127.0.0.1:{db_port}/distcount"
        asyncio.run(_write_total(url))

        down = run_cli("dev", "down", env=dev_env)
        assert down.returncode == 0, down.stderr
        for pid, _ in second.values():
            _wait_gone(int(pid))
        stopped = run_cli("dev", "status", env=dev_env)
        assert stopped.returncode == 3
        assert {s for _, s in _pids(stopped.stdout).values()} == {"stopped"}
        assert (state / "kafka" / "data" / "meta.properties").is_file()

        # data survives down/up
        warm = run_cli("dev", "up", env=offline)
        assert warm.returncode == 0, warm.stdout + warm.stderr
        assert "formatting" not in warm.stdout
        assert "creating a cluster" not in warm.stdout
        assert asyncio.run(_read_total(url)) == 42
    finally:
        purge = run_cli("dev", "down", "--purge", env=dev_env)
    assert purge.returncode == 0, purge.stderr
    assert not state.exists()


async def _write_total(url: str) -> None:
    conn = await connect(url)
    try:
        await conn.execute("INSERT INTO counter_totals (key, value) VALUES ('kept', 42)")
    finally:
        await conn.close()


async def _read_total(url: str) -> int:
    conn = await connect(url)
    try:
        return int(await conn.fetchval("SELECT value FROM counter_totals WHERE key = 'kept'"))
    finally:
        await conn.close()


def test_up_uses_services_that_already_run(
    run_cli: CliRunner, dev_env: dict[str, str], services: Services
) -> None:
    topic = f"test.external.{free_port()}"
    env = dev_env | {
        "DISTCOUNT_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "DISTCOUNT_DATABASE_URL": services.database_url,
        "DISTCOUNT_TOPIC": topic,
        "DISTCOUNT_PARTITIONS": "2",
        "DISTCOUNT_METRICS_INTERVAL_MS": "200",
    }

    try:
        up = run_cli("dev", "up", env=env)

        assert up.returncode == 0, up.stdout + up.stderr
        assert "kafka: started" not in up.stdout
        assert "postgres: started" not in up.stdout
        status = run_cli("dev", "status", env=env)
        assert status.returncode == 0, status.stdout
        rows = [line.split() for line in status.stdout.splitlines()[1:5]]
        assert [(r[0], r[1], r[2], r[3]) for r in rows[:2]] == [
            ("kafka", "-", "healthy", "external"),
            ("postgres", "-", "healthy", "external"),
        ]
        assert [(r[0], r[2], r[3]) for r in rows[2:]] == [
            ("ingress", "healthy", "local"),
            ("aggregator", "healthy", "local"),
        ]

        # the stack's services print metrics on the console; `dev metrics --follow` shows them
        follow = subprocess.Popen(
            [sys.executable, "-m", "distcount_cli", "dev", "metrics", "--follow"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            # once it shows the latest blocks, what comes next is printed as it comes
            started = {"ingress": re.compile(r"metrics of the ingress, last")}
            assert _read_until(follow, started, timeout_s=30) == {"ingress"}
            port = env["DISTCOUNT_HTTP_PORT"]
            answer = httpx.post(f"http://127.0.0.1:{port}/increment", json={"key": "m", "value": 1})
            assert answer.status_code == 202
            wanted = {
                "count": re.compile(r"ingress.requests\{route:increment,status:202\}\s+1 \("),
                # every event is timed under `dev up`: one request shows
                "timing": re.compile(r"ingress.request.duration\{route:increment\}\s+n=1  p50"),
                "aggregator": re.compile(r"metrics of the aggregator, last"),
            }
            found = _read_until(follow, wanted, timeout_s=30)
            assert found == set(wanted), f"missing {set(wanted) - found}"
        finally:
            follow.terminate()
            follow.wait(10)
            assert follow.stdout is not None
            follow.stdout.close()
    finally:
        run_cli("dev", "down", env=env)
    topics = asyncio.run(_topics(services.kafka_bootstrap))
    assert topics[topic] == 2
    assert topics[f"{topic}.dlq"] == 2
    assert re.search(r"migrations: (already up to date|0001_initial)", up.stdout)
