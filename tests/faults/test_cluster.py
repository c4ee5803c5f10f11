"""`distcount dev up --brokers 3`: a three-node Kafka cluster of the test's own (its own state
folder and ports), the stack's real ingress and aggregator in front of and behind it, and steady
HTTP load throughout, every increment under a key of its own.

Brokers die by SIGKILL and come back through `dev up`, which starts only what is missing. With
one broker gone (any, then the leader of a partition) increments are accepted again once the
cluster has moved on without it; with two gone, fewer than min.insync.replicas, every answer is
503, never 202, and never late. Each test ends by checking every increment: each one answered
202 counted exactly once, none counted twice, a batch whole or not at all, and the ingress and
the aggregator still the processes they were (nothing but the brokers was restarted).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from distcount_store import connect
from tests.integration.conftest import clean_environ, free_ports
from tests.integration.pipeline import Pipeline, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.devstack,
    pytest.mark.faults,
    pytest.mark.cluster,
]

BROKERS = ("kafka", "kafka-2", "kafka-3")
TOPIC = "distcount.increments"  # as `dev up` creates it, with 6 partitions
PARTITIONS = 6
GROUP = "distcount-aggregator"
PRODUCE_TIMEOUT_S = 5.0  # DISTCOUNT_PRODUCE_TIMEOUT_MS's default, which the stack runs with
# An answer later than its deadline by more than this is a request the ingress let hang (the
# slack is for a two-core machine running three brokers and the load).
ANSWER_SLACK_S = 5.0
# From a broker's death to increments accepted again: the controller fences it after
# broker.session.timeout.ms (9 s), and the producers then find the new leaders.
FAILOVER_BOUND_S = 60.0
# From `dev up` returning to increments accepted again after two brokers were away.
RECOVERY_BOUND_S = 90.0
# Long enough for every producer of the ingress to have met the outage, and given up on it.
QUORUM_LOST_S = 20.0


# -- the stack -------------------------------------------------------------------------------


def _cluster_ports() -> tuple[int, int]:
    """A broker port and a controller port such that the three nodes' six ports (they follow
    each other in steps of two) are free; below the kernel's ephemeral range, which the free
    ports of other tests come from."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000, 2)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + 2 * len(BROKERS)):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base, base + 1
    raise AssertionError("no six free ports in a row below 32000")


@dataclass
class ClusterStack:
    env: dict[str, str]
    state: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['DISTCOUNT_HTTP_PORT']}"

    @property
    def bootstrap(self) -> str:
        base = int(self.env["DISTCOUNT_DEV_KAFKA_PORT"])
        return ",".join(f"127.0.0.1:{base + 2 * i}" for i in range(len(BROKERS)))

    @property
    def database_url(self) -> str:
        """The services' role: it may read what the tests look at."""
        port = self.env["DISTCOUNT_DEV_POSTGRES_PORT"]
        return f"postgresql://distcount:distcount@127.0.0.1:{port}/distcount"

    def cli(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "distcount_cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def up(self, *args: str) -> list[str]:
        """`dev up`, checked; the names of the processes it started."""
        up = self.cli("dev", "up", *args)
        assert up.returncode == 0, up.stdout + up.stderr
        return re.findall(r"^([\w-]+): started", up.stdout, re.MULTILINE)

    def pids(self) -> dict[str, int]:
        """The processes `stack.json` records, by name."""
        processes = json.loads((self.state / "stack.json").read_text())["processes"]
        return {name: int(entry["pid"]) for name, entry in processes.items()}

    def kill(self, *names: str) -> None:
        """SIGKILL to the processes `names`, which this stack started; returns once they are
        gone."""
        pids = self.pids()
        for name in names:
            os.kill(pids[name], signal.SIGKILL)
        for name in names:
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pids[name])
                deadline = time.monotonic() + 30
                while process.status() != psutil.STATUS_ZOMBIE:
                    assert time.monotonic() < deadline, f"{name} outlived SIGKILL"
                    time.sleep(0.05)

    async def partitions(self) -> dict[str, list[dict[str, Any]]]:
        """Every topic's partitions (internal ones too), as the cluster describes them."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            described = await admin.describe_topics(await admin.list_topics())
        finally:
            await admin.close()
        return {t["topic"]: t["partitions"] for t in described}

    async def leader_of(self, partition: int) -> str:
        """The name of the node that leads `partition` of the topic."""
        for described in (await self.partitions())[TOPIC]:
            if described["partition"] == partition:
                node = described["leader"]
                assert isinstance(node, int), described
                assert node >= 1, described
                return BROKERS[node - 1]
        raise AssertionError(f"the topic has no partition {partition}")

    async def wait_fully_replicated(self) -> None:
        """Until every partition of every topic has all three copies in sync again: a node
        that came back has caught up, and the next one killed leaves two."""

        async def in_sync() -> bool:
            try:
                topics = await self.partitions()
            except Exception:  # a metadata request that meets a node still starting
                return False
            return bool(topics) and all(
                len(p["isr"]) == len(BROKERS) for partitions in topics.values() for p in partitions
            )

        await wait_for(in_sync, 120, "every partition to have its three copies in sync")


@pytest.fixture(scope="module")
def cluster_stack() -> Iterator[ClusterStack]:
    # not under pytest's tmp_path: PostgreSQL runs as another user when the tests run as root
    parent = Path(tempfile.mkdtemp(prefix="distcount-cluster-"))
    parent.chmod(0o755)
    kafka, controller = _cluster_ports()
    postgres, http = free_ports(2)
    env = clean_environ()
    env.update(
        DISTCOUNT_DEV_DIR=str(parent / "state"),
        DISTCOUNT_DEV_KAFKA_PORT=str(kafka),
        DISTCOUNT_DEV_KAFKA_CONTROLLER_PORT=str(controller),
        DISTCOUNT_DEV_POSTGRES_PORT=str(postgres),
        DISTCOUNT_HTTP_PORT=str(http),
        DISTCOUNT_DEV_STOP_TIMEOUT_S="20",
        DISTCOUNT_FLUSH_INTERVAL_MS="300",
    )
    stack = ClusterStack(env, parent / "state")
    try:
        started = stack.up("--brokers", "3")
        assert sorted(started) == sorted([*BROKERS, "postgres", "ingress", "aggregator"])
        yield stack
    finally:
        try:
            down = stack.cli("dev", "down", "--purge")
            assert down.returncode == 0, down.stdout + down.stderr
        finally:
            _kill_leftovers(stack)
            shutil.rmtree(parent, ignore_errors=True)


def _kill_leftovers(stack: ClusterStack) -> None:
    """Whatever `dev down` failed to stop, by the pids this stack recorded."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        for pid in stack.pids().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- the load ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    sent_s: float  # time.monotonic() when the request was sent
    answered_s: float
    batch: bool
    status: int | None  # None: no HTTP answer at all
    increments: tuple[tuple[str, int], ...]
    detail: str  # the body of an answer other than 202, or the transport error


@dataclass
class Load:
    """Singles to POST /increment and, one request in ten, batches of five to /increments,
    each increment under a key of its own: the end tells exactly which were counted, and how
    often."""

    url: str
    prefix: str  # of every key, apart from those of the other tests on the same stack
    concurrency: int = 8
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.concurrency)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def sent_since(self, since_s: float) -> list[Answer]:
        return [a for a in self.answers if a.sent_s >= since_s]

    async def wait_accepted(self, since_s: float, timeout_s: float, what: str) -> float:
        """Until a request sent after `since_s` is answered 202; when that answer came."""

        async def accepted() -> bool:
            return any(a.status == 202 for a in self.sent_since(since_s))

        try:
            await wait_for(accepted, timeout_s, what)
        except AssertionError as exc:
            answers = self.sent_since(since_s)
            details = {(a.status, a.detail[:200]) for a in answers}
            raise AssertionError(f"{exc}; {len(answers)} answers: {details}") from None
        return min(a.answered_s for a in self.sent_since(since_s) if a.status == 202)

    async def _worker(self, worker: int) -> None:
        rng = random.Random(worker)
        # the client waits well past the ingress's deadline: a hang shows as a late answer
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as client:
            for request in itertools.count():
                if self._stop.is_set():
                    return
                batch = rng.randrange(10) == 0
                increments = tuple(
                    (f"{self.prefix}-{worker}-{request}-{i}", rng.randint(1, 9))
                    for i in range(5 if batch else 1)
                )
                items = [{"key": key, "value": value} for key, value in increments]
                sent_s = time.monotonic()
                try:
                    if batch:
                        response = await client.post("/increments", json={"increments": items})
                    else:
                        response = await client.post("/increment", json=items[0])
                    status: int | None = response.status_code
                    detail = "" if status == 202 else response.text
                except httpx.HTTPError as exc:
                    status, detail = None, repr(exc)
                self.answers.append(
                    Answer(sent_s, time.monotonic(), batch, status, increments, detail)
                )
                if status != 202:
                    await asyncio.sleep(0.05)


def _check_answers(answers: list[Answer]) -> None:
    """Each answer a 202 or a 503, within its deadline: anything else is the ingress's bug."""
    wrong = [a for a in answers if a.status not in (202, 503)]
    assert not wrong, f"{len(wrong)} answers neither 202 nor 503, such as {wrong[:3]}"
    late = [a for a in answers if a.answered_s - a.sent_s > PRODUCE_TIMEOUT_S + ANSWER_SLACK_S]
    assert not late, f"{len(late)} answers past the deadline, such as {late[:3]}"


async def _check_counted(stack: ClusterStack, load: Load) -> dict[str, int]:
    """Every 202 counted once; a 503 counted once or not at all (Kafka may have written what
    it did not acknowledge in time), a batch whole; how many 503s were counted, by kind."""
    pipeline = Pipeline(stack.bootstrap, stack.database_url, TOPIC, GROUP, stack.state, PARTITIONS)
    await pipeline.wait_caught_up(timeout_s=180)
    conn = await connect(stack.database_url)
    try:
        rows = await conn.fetch(
            "SELECT key, value FROM counter_totals WHERE starts_with(key, $1)", f"{load.prefix}-"
        )
    finally:
        await conn.close()
    totals = {row["key"]: int(row["value"]) for row in rows}
    sent = {key for answer in load.answers for key, _ in answer.increments}
    assert not set(totals) - sent, "counted keys no request sent"
    late = {"single": 0, "batch": 0}
    for answer in load.answers:
        expected = [value for _, value in answer.increments]
        counted = [totals.get(key) for key, _ in answer.increments]
        if answer.status == 202:
            assert counted == expected, answer
        elif counted == expected:
            late["batch" if answer.batch else "single"] += 1
        else:
            assert counted == [None] * len(counted), answer
    return late


# -- the tests --------------------------------------------------------------------------------


async def test_a_broker_and_then_a_partitions_leader_killed_under_load(
    cluster_stack: ClusterStack,
) -> None:
    stack = cluster_stack
    services = {name: pid for name, pid in stack.pids().items() if name not in BROKERS}
    await stack.wait_fully_replicated()
    load = Load(stack.url, "one")
    load.start()
    failovers: list[float] = []
    try:
        await load.wait_accepted(time.monotonic(), 60, "the first increment to be accepted")
        await asyncio.sleep(3)
        for round_ in range(2):
            # any node first; then the one that leads a partition at that moment
            victim = "kafka-3" if round_ == 0 else await stack.leader_of(0)
            killed_s = time.monotonic()
            await asyncio.to_thread(stack.kill, victim)
            # the two others carry on: increments accepted again while it is away
            accepted_s = await load.wait_accepted(
                killed_s, FAILOVER_BOUND_S, f"an increment accepted with {victim} gone"
            )
            failovers.append(accepted_s - killed_s)
            await asyncio.sleep(2)
            started = await asyncio.to_thread(stack.up)
            assert started == [victim], f"`dev up` started {started}, not just {victim}"
            await stack.wait_fully_replicated()
            await load.wait_accepted(time.monotonic(), 60, f"increments after {victim} is back")
            await asyncio.sleep(3)
    finally:
        await load.stop()

    _check_answers(load.answers)
    late = await _check_counted(stack, load)
    accepted = sum(1 for a in load.answers if a.status == 202)
    refused = sum(1 for a in load.answers if a.status == 503)
    print(
        f"accepted again {[round(s, 1) for s in failovers]} s after each kill; "
        f"{len(load.answers)} requests, {accepted} accepted, {refused} refused, "
        f"refused yet counted: {late}"
    )
    assert accepted > 100
    # recovered on their own: neither service died, nor was restarted
    assert {name: pid for name, pid in stack.pids().items() if name not in BROKERS} == services


async def test_two_brokers_killed_leave_too_few_copies_and_every_answer_is_503(
    cluster_stack: ClusterStack,
) -> None:
    stack = cluster_stack
    services = {name: pid for name, pid in stack.pids().items() if name not in BROKERS}
    await stack.wait_fully_replicated()
    load = Load(stack.url, "two")
    load.start()
    try:
        await load.wait_accepted(time.monotonic(), 60, "the first increment to be accepted")
        await asyncio.sleep(3)
        victims = ("kafka", await stack.leader_of(0))
        if victims[1] == "kafka":
            victims = ("kafka", "kafka-2")
        await asyncio.to_thread(stack.kill, *victims)
        killed_s = time.monotonic()  # both are gone: nothing sent from now on can get 3 copies
        await asyncio.sleep(QUORUM_LOST_S)
        restart_s = time.monotonic()
        back = await asyncio.to_thread(stack.up)
        assert sorted(back) == sorted(victims), f"`dev up` started {back}, not just {victims}"
        back_s = time.monotonic()
        recovered_s = await load.wait_accepted(
            back_s, RECOVERY_BOUND_S, "an increment accepted after the brokers came back"
        )
        await stack.wait_fully_replicated()
        await asyncio.sleep(3)
    finally:
        await load.stop()

    # sent with both gone, answered before either was started again
    during = [a for a in load.sent_since(killed_s) if a.answered_s <= restart_s]
    assert during, "no request was answered while two brokers were away"
    wrongly = [a for a in during if a.status == 202]
    assert not wrongly, f"{len(wrongly)} increments accepted with one broker left: {wrongly[:3]}"
    _check_answers(load.answers)
    late = await _check_counted(stack, load)
    accepted = sum(1 for a in load.answers if a.status == 202)
    print(
        f"{len(during)} requests answered 503 while {' and '.join(victims)} were away; accepted "
        f"again {recovered_s - back_s:.1f} s after `dev up`; {len(load.answers)} requests, "
        f"{accepted} accepted; refused yet counted: {late}"
    )
    assert accepted > 50
    assert {name: pid for name, pid in stack.pids().items() if name not in BROKERS} == services


def test_dev_up_keeps_the_cluster_shape_and_dev_down_stops_every_broker(
    cluster_stack: ClusterStack,
) -> None:
    stack = cluster_stack
    status = stack.cli("dev", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = [line.split() for line in status.stdout.splitlines()[1:-1]]
    assert [row[0] for row in rows] == [*BROKERS, "postgres", "ingress", "aggregator"]
    assert {row[2] for row in rows} == {"healthy"}
    endpoints = {row[0]: row[4] for row in rows if row[0] in BROKERS}
    assert ",".join(endpoints.values()) == stack.bootstrap
    exports = stack.cli("dev", "status", "--env").stdout.splitlines()
    assert f"export DISTCOUNT_KAFKA_BOOTSTRAP={stack.bootstrap}" in exports

    # the shape is the cluster's: another count is refused, the same one changes nothing
    other = stack.cli("dev", "up", "--brokers", "1")
    assert other.returncode == 1
    assert "is a cluster of 3 brokers" in other.stderr, other.stderr
    assert stack.up("--brokers", "3") == []

    pids = stack.pids()
    down = stack.cli("dev", "down")
    assert down.returncode == 0, down.stdout + down.stderr
    for name in BROKERS:
        assert f"{name}: stopping pid {pids[name]}" in down.stdout
    assert [name for name in BROKERS if not _gone(pids[name])] == []
    # and without --brokers, `dev up` brings the same three back
    assert sorted(stack.up()) == sorted([*BROKERS, "postgres", "ingress", "aggregator"])
