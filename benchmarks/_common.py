"""What the benchmark scripts share: the stack's endpoints, a fresh topic and a fresh database per
run (removed again at the end), child processes with time-stamped output, and the report files.

Nothing here touches the dev data: every run works in a topic and a database of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from distcount_store import find_migrations, migrate, redact

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
PYTHON = str(ROOT / ".venv" / "bin" / "python")

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_DATABASE_URL = "postgresql://distcount:distcount@127.0.0.1:5432/distcount"

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_STARTED = time.monotonic()


def say(line: str) -> None:
    """One progress line, stamped with the seconds since the script started."""
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {line}", flush=True)


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    # the database the scripts connect to for CREATE / DROP DATABASE; they create their own
    database_url: str = field(repr=False)

    @classmethod
    def from_env(cls) -> Endpoints:
        bootstrap = os.environ.get("DISTCOUNT_KAFKA_BOOTSTRAP", "").strip() or DEFAULT_BOOTSTRAP
        url = os.environ.get("DISTCOUNT_DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
        hosts = [server.rsplit(":", 1)[0].strip("[]") for server in bootstrap.split(",")]
        hosts.append(urlsplit(url).hostname or "")
        for host in hosts:
            if host not in _LOOPBACK:
                raise SystemExit(
                    f"refusing to benchmark against {host!r}: benchmarks send traffic to this "
                    "machine only (127.0.0.1)"
                )
        return cls(bootstrap, url)

    def database(self, name: str) -> str:
        return urlunsplit(urlsplit(self.database_url)._replace(path=f"/{name}"))


def random_suffix() -> str:
    return secrets.token_hex(4)


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


# -- Kafka ----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_topic(bootstrap: str, prefix: str, partitions: int) -> AsyncIterator[str]:
    """A new topic with `partitions` partitions, deleted on the way out (by a client of its own,
    as a long run may outlive a broker restart)."""
    name = f"{prefix}.{utc_stamp().lower()}.{random_suffix()}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await asyncio.wait_for(admin.start(), 30)
    try:
        response = await asyncio.wait_for(admin.create_topics([NewTopic(name, partitions, 1)]), 60)
    finally:
        await admin.close()
    try:
        for topic, code, message in response.topic_errors:
            if code != 0:
                raise RuntimeError(f"creating topic {topic} failed: {message} (code {code})")
        await _wait_for_leaders(bootstrap, name, partitions)
        say(f"created topic {name} ({partitions} partitions)")
        yield name
    finally:
        await _delete_topic(bootstrap, name)


async def _delete_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    try:
        await asyncio.wait_for(admin.start(), 30)
        await asyncio.wait_for(admin.delete_topics([name]), 60)
        say(f"deleted topic {name}")
    except Exception as exc:  # cleanup must not hide the benchmark's own error
        say(f"could not delete topic {name}: {type(exc).__name__}: {exc}")
    finally:
        await admin.close()


async def _wait_for_leaders(bootstrap: str, topic: str, partitions: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ends = await end_offsets(bootstrap, topic)
        except Exception:
            ends = {}
        if len(ends) == partitions:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"topic {topic} has no leaders for its {partitions} partitions after 30 s")


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """partition -> end offset (the offset the next record will get)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await asyncio.wait_for(consumer.start(), 30)
    try:
        parts = await asyncio.wait_for(_partitions_for(consumer, topic), 30)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await asyncio.wait_for(consumer.end_offsets(tps), 30)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def _partitions_for(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(100):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        await consumer._client.force_metadata_update()  # no public way to ask for a topic
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no metadata for topic {topic}")


# -- PostgreSQL -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_database(endpoints: Endpoints, prefix: str = "bench") -> AsyncIterator[str]:
    """CREATE DATABASE <prefix>_<random>, migrated; dropped (WITH FORCE) on the way out.

    Each statement gets a connection of its own: one held open through a long run may be gone
    by its end (a PostgreSQL restart), and the database must be dropped all the same."""
    name = f"{prefix}_{random_suffix()}"
    await _admin(endpoints, f'CREATE DATABASE "{name}"')
    try:
        url = endpoints.database(name)
        applied = await migrate(url, find_migrations(ROOT / "migrations"))
        say(f"created database {name} ({len(applied)} migrations applied)")
        yield url
    finally:
        for attempt in range(1, 6):
            try:
                await _admin(endpoints, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                say(f"dropped database {name}")
                break
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                say(f"could not drop database {name} (attempt {attempt}/5): {exc}")
                await asyncio.sleep(2.0)


async def _admin(endpoints: Endpoints, statement: str) -> None:
    conn = await asyncpg.connect(endpoints.database_url, timeout=10)
    try:
        await conn.execute(statement, timeout=60)
    finally:
        await conn.close()


async def postgres_facts(database_url: str) -> dict[str, str]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        facts = {"server_version": str(await conn.fetchval("SHOW server_version"))}
        for setting in ("synchronous_commit", "fsync", "shared_buffers", "max_wal_size"):
            facts[setting] = str(await conn.fetchval(f"SHOW {setting}"))
        return facts
    finally:
        await conn.close()


# -- child processes ------------------------------------------------------------------------------


@dataclass
class Line:
    at: float  # time.monotonic() when the line arrived
    stream: str
    text: str


@dataclass
class Child:
    """A child process whose stdout and stderr lines are time-stamped as they arrive and kept in
    a log file. `spawned_at` is time.monotonic() just before the process was created."""

    name: str
    process: asyncio.subprocess.Process
    spawned_at: float
    log_path: Path
    lines: list[Line] = field(default_factory=list)
    on_line: Callable[[Line], None] | None = None
    _readers: list[asyncio.Task[None]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        env: dict[str, str],
        log_path: Path,
        on_line: Callable[[Line], None] | None = None,
    ) -> Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        spawned_at = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C to the script does not reach it twice
        )
        child = cls(name, process, spawned_at, log_path, on_line=on_line)
        assert process.stdout is not None
        assert process.stderr is not None
        child._readers = [
            asyncio.create_task(child._read(process.stdout, "out")),
            asyncio.create_task(child._read(process.stderr, "err")),
        ]
        return child

    async def _read(self, stream: asyncio.StreamReader, label: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as log:
            while True:
                raw = await stream.readline()
                if not raw:
                    break
                line = Line(time.monotonic(), label, raw.decode(errors="replace").rstrip("\n"))
                self.lines.append(line)
                log.write(f"{line.at - self.spawned_at:9.3f} {label} {line.text}\n")
                if self.on_line is not None:
                    self.on_line(line)
                self._changed.set()

    async def wait_for_line(self, predicate: Callable[[str], bool], timeout_s: float) -> Line:
        """The first line (already seen or still to come) for which `predicate` holds."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if predicate(line.text):
                    return line
            seen = len(self.lines)
            if self.process.returncode is not None and all(r.done() for r in self._readers):
                raise RuntimeError(
                    f"{self.name} exited with status {self.process.returncode}; "
                    f"see {self.log_path}\n{self.tail()}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no awaited line within {timeout_s:.0f} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    def tail(self, count: int = 20) -> str:
        return "\n".join(f"  {line.text}" for line in self.lines[-count:])

    def running(self) -> bool:
        return self.process.returncode is None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the process itself so far (Linux /proc), None if gone."""
        return proc_cpu_seconds(self.process.pid)

    async def stop(self, timeout_s: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM, then SIGKILL after `timeout_s`; (exit status, seconds it took)."""
        started = time.monotonic()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                say(f"{self.name} did not stop within {timeout_s:.0f} s of SIGTERM: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await asyncio.wait_for(self.process.wait(), 10)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._readers), 10)
        return self.process.returncode, time.monotonic() - started


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_between(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The fraction of all cores that was busy between two cpu_jiffies() readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else None


QUIET_BELOW = 0.15


async def background_busy(wait_quiet_s: float = 0.0) -> float | None:
    """How busy the machine is (fraction of all cores, sampled over a second) with nothing of
    this benchmark running. Another process that takes CPU now (another benchmark, a test suite)
    skews every figure of the run: wait up to `wait_quiet_s` for it to calm down, then go on
    with a warning."""
    deadline = time.monotonic() + wait_quiet_s
    announced = False
    while True:
        before = cpu_jiffies()
        await asyncio.sleep(1.0)
        busy = busy_between(before, cpu_jiffies())
        if busy is None or busy < QUIET_BELOW:
            return busy
        if time.monotonic() >= deadline:
            say(
                f"WARNING: the machine is {busy:.0%} busy before the run starts: other "
                "processes share the cores, and the figures of this run are skewed by them"
            )
            return busy
        if not announced:
            say(
                f"the machine is {busy:.0%} busy with other processes: waiting up to "
                f"{wait_quiet_s:.0f} s for it to calm down"
            )
            announced = True


def proc_cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def child_env(overrides: dict[str, str]) -> dict[str, str]:
    """This process's environment with `overrides`; DISTCOUNT_* values set here win."""
    env = dict(os.environ)
    env.update(overrides)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- reports --------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_facts() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return "-" if value is None else str(value)

    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(name: str, stamp: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / f"{name}-{stamp}.json"
    md_path = RESULTS_DIR / f"{name}-{stamp}.md"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(markdown + "\n", encoding="utf-8")
    print()
    print(markdown, flush=True)
    print()
    say(f"wrote {json_path.relative_to(ROOT)} and {md_path.relative_to(ROOT)}")
    return json_path, md_path


def redacted(url: str) -> str:
    return redact(url)


def error_lines(error: str | None) -> list[str]:
    """The report's note when a benchmark stopped before its last run."""
    if error is None:
        return []
    return ["", f"**The benchmark stopped early: {error}.** Only the runs above were measured."]


def failed_report(
    title: str, meta: dict[str, Any], runs: list[dict[str, Any]], lines: list[str], error: str
) -> tuple[dict[str, Any], str]:
    """The report of a benchmark that measured no complete pair of runs."""
    data = {**meta, "runs": runs, "summary": {"verdict": "ERROR", "error": error}}
    md = [
        f"# {title}, {meta['stamp']}",
        "",
        f"**ERROR: no complete pair of runs; {error}.** No ratio is claimed.",
        "",
        *lines,
    ]
    return data, "\n".join(md)
