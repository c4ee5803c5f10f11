"""`distcount dev up --ingress-workers 2 --aggregators 2` on a private stack of its own: both
ingress processes take connections on the one port, the two aggregators split the topic's
partitions, every increment answered 202 is counted once, also when an aggregator is killed, and
`dev status`, `dev up` and `dev down` handle each process."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil
import pytest

from distcount_store import connect
from tests.integration.conftest import CliRunner
from tests.integration.pipeline import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.devstack]

INGRESS = ("ingress", "ingress-2")
AGGREGATORS = ("aggregator", "aggregator-2")
PARTITIONS = set(range(6))  # the topic's, as `dev up` creates it
_ASSIGNED = re.compile(r"assigned partitions \[([\d, ]*)\]")


def _rows(status_output: str) -> dict[str, tuple[str, str]]:
    """name -> (pid, state), in order, from the `dev status` table."""
    rows = {}
    for line in status_output.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("state folder"):
            rows[fields[0]] = (fields[1], fields[2])
    return rows


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _assigned(state: Path, name: str) -> set[int] | None:
    """The partitions the aggregator `name` was last assigned, by its log; None before any."""
    try:
        text = (state / name / f"{name}.log").read_text(errors="replace")
    except FileNotFoundError:
        return None
    found = _ASSIGNED.findall(text)
    if not found:
        return None
    return {int(p) for p in found[-1].split(",") if p.strip()}


def _connections_per_process(port: int, pids: list[int], n: int) -> dict[int, int]:
    """Open `n` connections to `port`, each answered once, and count, while they are open,
    those each of `pids` holds."""
    with ExitStack() as stack:
        for _ in range(n):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            sock.sendall(f"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert sock.recv(64).startswith(b"HTTP/1.1 200"), "the ingress did not answer"
        return {
            pid: sum(
                1
                for c in psutil.Process(pid).net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
            )
            for pid in pids
        }


async def _post(
    base: str, keys: list[str], n: int, seed: int, midway: Callable[[], None] | None = None
) -> dict[str, int]:
    """`n` increments, 16 at a time, each worker on a connection of its own; what each key was
    given (every answer a 202). `midway` is called once half of them are answered."""
    rng = random.Random(seed)
    increments = [(rng.choice(keys), rng.randint(1, 9)) for _ in range(n)]
    pending = iter(increments)
    statuses: list[int] = []

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for key, value in pending:
                answer = await client.post("/increment", json={"key": key, "value": value})
                statuses.append(answer.status_code)
                if midway is not None and len(statuses) == n // 2:
                    midway()

    await asyncio.gather(*(worker() for _ in range(16)))
    assert statuses.count(202) == n, sorted(set(statuses))
    given: dict[str, int] = {}
    for key, value in increments:
        given[key] = given.get(key, 0) + value
    return given


async def _totals(database_url: str, keys: list[str]) -> dict[str, int]:
    conn = await connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT key, value FROM counter_totals WHERE key = ANY($1::text[])", keys
        )
    finally:
        await conn.close()
    return {row["key"]: int(row["value"]) for row in rows}


def _merge(*given: dict[str, int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in given:
        for key, value in one.items():
            total[key] = total.get(key, 0) + value
    return total


async def _counted(database_url: str, expected: dict[str, int], what: str) -> None:
    async def exact() -> bool:
        return await _totals(database_url, list(expected)) == expected

    try:
        await wait_for(exact, 60, what)
    except AssertionError:
        got = await _totals(database_url, list(expected))
        wrong = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
        raise AssertionError(f"{what}: (counted, given) per key: {wrong}") from None


async def _kill_during_writes(
    base: str, keys: list[str], victim: int, state: Path, survivor: str
) -> dict[str, int]:
    """Increments posted, `victim` (an aggregator) killed with SIGKILL halfway through; returns
    once the `survivor` holds every partition."""
    given = await _post(base, keys, 2000, seed=2, midway=lambda: os.kill(victim, signal.SIGKILL))

    async def took_over() -> bool:
        return _assigned(state, survivor) == PARTITIONS

    await wait_for(took_over, 45, f"the {survivor} to take every partition")
    return given


def _up_two_and_two(run_cli: CliRunner, env: dict[str, str], state: Path) -> dict[str, int]:
    """`dev up --ingress-workers 2 --aggregators 2`, checked; the pids by name."""
    up = run_cli("dev", "up", "--ingress-workers", "2", "--aggregators", "2", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    status = run_cli("dev", "status", env=env)
    assert status.returncode == 0, status.stdout
    rows = _rows(status.stdout)
    assert list(rows) == ["kafka", "postgres", *INGRESS, *AGGREGATORS]
    assert {s for _, s in rows.values()} == {"healthy"}
    pids = {name: int(pid) for name, (pid, _) in rows.items()}
    # each has a log of its own
    for name in (*INGRESS, *AGGREGATORS):
        assert f"{name}: started (pid {pids[name]}); log in {state / name}" in up.stdout
    return pids


def _restart_the_missing_one(run_cli: CliRunner, env: dict[str, str], pids: dict[str, int]) -> int:
    """`dev up` without counts, after aggregator-2 was killed: it starts that one alone (as
    many as run, the crashed one included); its new pid."""
    again = run_cli("dev", "up", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    started = re.findall(r"^([\w-]+): started", again.stdout, re.MULTILINE)
    assert started == ["aggregator-2"], again.stdout
    rows = _rows(run_cli("dev", "status", env=env).stdout)
    assert list(rows) == ["kafka", "postgres", *INGRESS, *AGGREGATORS]
    assert {n: pid for n, (pid, _) in rows.items() if n != "aggregator-2"} == {
        n: str(pid) for n, pid in pids.items() if n != "aggregator-2"
    }
    return int(rows["aggregator-2"][0])


def _down_stops_all(run_cli: CliRunner, env: dict[str, str], pids: dict[str, int]) -> None:
    down = run_cli("dev", "down", env=env)
    assert down.returncode == 0, down.stderr
    for name in (*INGRESS, *AGGREGATORS):
        assert f"{name}: stopping pid {pids[name]}" in down.stdout
    deadline = time.monotonic() + 30
    while not all(_gone(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [name for name, pid in pids.items() if not _gone(pid)] == []
    stopped = run_cli("dev", "status", env=env)
    assert stopped.returncode == 3
    # a stopped stack shows one of each, as it would start again
    assert _rows(stopped.stdout) == dict.fromkeys(
        ["kafka", "postgres", "ingress", "aggregator"], ("-", "stopped")
    )


def test_two_ingress_workers_and_two_aggregators(
    run_cli: CliRunner, dev_env: dict[str, str]
) -> None:
    state = Path(dev_env["DISTCOUNT_DEV_DIR"])
    port = int(dev_env["DISTCOUNT_HTTP_PORT"])
    base = f"http://127.0.0.1:{port}"
    url = f"postgresql://distcount:distcount@127.0.0.1:{dev_env['DISTCOUNT_DEV_POSTGRES_PORT']}"
    database_url = f"{url}/distcount"
    env = dev_env | {"DISTCOUNT_FLUSH_INTERVAL_MS": "300", "DISTCOUNT_METRICS_INTERVAL_MS": "500"}
    keys = [f"scale-{i}" for i in range(24)]
    try:
        pids = _up_two_and_two(run_cli, env, state)

        # both ingress processes listen on the one port, and the kernel gives each connections
        held = _connections_per_process(port, [pids[n] for n in INGRESS], 32)
        assert all(held.values()), held
        assert sum(held.values()) == 32, held

        # the two aggregators split the partitions
        async def split() -> bool:
            one, two = (_assigned(state, name) for name in AGGREGATORS)
            return bool(one and two and not one & two and one | two == PARTITIONS)

        asyncio.run(wait_for(split, 45, "the aggregators to split the partitions"))

        # every 202 counted once, whichever ingress took it and whichever aggregator folded it
        first = asyncio.run(_post(base, keys, 1000, seed=1))
        asyncio.run(_counted(database_url, first, "the increments to be counted"))
        metrics = run_cli("dev", "metrics", env=env)
        assert metrics.returncode == 0, metrics.stderr
        assert metrics.stdout.count("metrics of the ingress, last") == 2
        assert metrics.stdout.count("metrics of the aggregator, last") == 2

        # an aggregator killed mid-stream: the other takes its partitions, and counts exactly
        second = asyncio.run(
            _kill_during_writes(base, keys, pids["aggregator-2"], state, "aggregator")
        )
        asyncio.run(_counted(database_url, _merge(first, second), "the survivor to count"))
        killed = _rows(run_cli("dev", "status", env=env).stdout)
        assert killed["aggregator-2"] == ("-", "stopped")
        assert killed["aggregator"][1] == "healthy"

        pids["aggregator-2"] = _restart_the_missing_one(run_cli, env, pids)
        _down_stops_all(run_cli, env, pids)
        assert json.loads((state / "stack.json").read_text())["processes"] == {}
    finally:
        purge = run_cli("dev", "down", "--purge", env=dev_env)
    assert purge.returncode == 0, purge.stderr
