"""`distcount dev up | status | down` on a private stack of its own (its own folder and ports)."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from distcount_devstack._postgres import find_bindir, server_user
from distcount_store import connect
from tests.conftest import Services
from tests.integration.conftest import CliRunner, free_port
from tests.integration.pipeline import wait_for

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
        # flushes often, for the increment counted below
        up = run_cli("dev", "up", env=dev_env | {"DISTCOUNT_FLUSH_INTERVAL_MS": "300"})
        assert up.returncode == 0, up.stdout + up.stderr
        assert "postgres: created role distcount for the services" in up.stdout

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
        assert f"export DISTCOUNT_HTTP_PORT={dev_env['DISTCOUNT_HTTP_PORT']}" in env_lines
        assert asyncio.run(_topics(bootstrap)) == {
            "distcount.increments": 6,
            "distcount.increments.dlq": 6,
        }
        url = _services_and_migrations_have_roles_of_their_own(dev_env, env_lines)
        migrated = run_cli("migrate", env=dev_env)  # the local stack's, as its superuser
        assert (
            migrated.stdout == "already up to date\ngranted role distcount what the services need\n"
        )

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
        assert "created role" not in again.stdout
        assert "role distcount granted" in again.stdout  # again, which changes nothing
        assert "kafka: started" not in again.stdout
        second = _pids(run_cli("dev", "status", env=dev_env).stdout)
        assert second["kafka"] == first["kafka"]
        assert second["ingress"] == first["ingress"]
        for restarted in ("postgres", "aggregator"):
            assert second[restarted][0] != first[restarted][0]
            assert second[restarted][1] == "healthy"

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


def _services_and_migrations_have_roles_of_their_own(
    env: dict[str, str], env_lines: list[str]
) -> str:
    """The two URLs of `dev status --env`, checked; returns the services' URL."""
    db_port = env["DISTCOUNT_DEV_POSTGRES_PORT"]
    url = f"postgresql://distcount:distcount@127.0.0.1:{db_port}/distcount"
    admin_url = f"postgresql://distcount_admin:distcount_admin@127.0.0.1:{db_port}/distcount"
    assert f"export DISTCOUNT_DATABASE_URL={url}" in env_lines
    assert f"export DISTCOUNT_MIGRATE_DATABASE_URL={admin_url}" in env_lines
    asyncio.run(_the_services_role_changes_no_schema(url, admin_url))
    _counted_through_the_stack(env, admin_url)
    return url


async def _the_services_role_changes_no_schema(url: str, admin_url: str) -> None:
    """The services' URL is a plain role that may not change the schema; the migrations' URL is
    the superuser's."""
    conn = await connect(url)
    try:
        assert await conn.fetchval(
            "SELECT NOT (rolsuper OR rolcreatedb OR rolcreaterole) FROM pg_roles "
            "WHERE rolname = current_user"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE intruder (id int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DROP TABLE counter_events")
    finally:
        await conn.close()
    admin = await connect(admin_url)
    try:
        assert await admin.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert (
            await admin.fetchval(
                "SELECT tableowner FROM pg_tables WHERE tablename = 'counter_events'"
            )
            == urlsplit(admin_url).username
        )
    finally:
        await admin.close()


def _counted_through_the_stack(env: dict[str, str], admin_url: str) -> None:
    """HTTP in, the stack's aggregator flushing as the services' role, the total out."""
    base = f"http://127.0.0.1:{env['DISTCOUNT_HTTP_PORT']}"
    answer = httpx.post(f"{base}/increment", json={"key": "roles", "value": 3}, timeout=10)
    assert answer.status_code == 202, answer.text
    token = answer.json()["data"]["token"]

    async def counted() -> bool:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            return (await client.get(f"/writes/{token}")).status_code == 200

    asyncio.run(wait_for(counted, 60, "the stack's aggregator to flush the increment"))
    got = httpx.get(f"{base}/counters/roles", params={"after": token}, timeout=15).json()
    assert (got["data"]["value"], got["data"]["complete"]) == (3, True)
    # the row the services' role flushed, counted by the schema's owner
    assert asyncio.run(_events(admin_url)) == 1


async def _events(admin_url: str) -> int:
    conn = await connect(admin_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM counter_events"))
    finally:
        await conn.close()


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


def _cluster_from_before_the_roles_split(home: Path) -> None:
    """The PostgreSQL of a state folder made before the services had a role of their own: its
    bootstrap superuser is `distcount`, and there is no roles file."""
    user = server_user()
    home.mkdir(parents=True)
    pwfile = home / "pwfile"
    pwfile.write_text("distcount\n")
    if user is not None:
        shutil.chown(home, user, user)
        shutil.chown(pwfile, user, user)
    subprocess.run(
        [
            str(find_bindir() / "initdb"),
            f"--pgdata={home / 'data'}",
            "--username=distcount",
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--no-locale",
        ],
        capture_output=True,
        user=user,
        timeout=300,
        check=True,
    )
    pwfile.unlink()


def test_a_state_folder_from_before_the_roles_split_still_works(
    run_cli: CliRunner, dev_env: dict[str, str], services: Services
) -> None:
    state = Path(dev_env["DISTCOUNT_DEV_DIR"])
    _cluster_from_before_the_roles_split(state / "postgres")
    # the session's broker, so that only PostgreSQL and the services start here
    env = dev_env | {
        "DISTCOUNT_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "DISTCOUNT_TOPIC": f"test.legacy.{free_port()}",
        "DISTCOUNT_PARTITIONS": "1",
    }
    try:
        up = run_cli("dev", "up", env=env)

        assert up.returncode == 0, up.stdout + up.stderr
        hints = [line for line in up.stdout.splitlines() if "hint" in line]
        assert hints == [
            "postgres: hint: this state folder predates the services' own role, so they log in "
            "as the superuser distcount; `distcount dev down --purge` (which deletes the local "
            "data) gives the stack separate roles"
        ]
        assert "created role" not in up.stdout
        status = run_cli("dev", "status", env=env)
        assert status.returncode == 0, status.stdout
        env_lines = run_cli("dev", "status", "--env", env=env).stdout.splitlines()
        url = f"postgresql://distcount:distcount@127.0.0.1:{env['DISTCOUNT_DEV_POSTGRES_PORT']}"
        assert f"export DISTCOUNT_DATABASE_URL={url}/distcount" in env_lines
        assert f"export DISTCOUNT_MIGRATE_DATABASE_URL={url}/distcount" in env_lines
        # as does `distcount migrate` on the local stack
        migrated = run_cli("migrate", env=env)
        assert (migrated.returncode, migrated.stdout) == (0, "already up to date\n")
    finally:
        purge = run_cli("dev", "down", "--purge", env=env)
    assert purge.returncode == 0, purge.stderr
