"""The services' metrics as a real StatsD daemon receives them: Etsy's statsd (0.9.0, from npm)
listens on a free UDP port, the real ingress and aggregator report to it in plain StatsD and in
DogStatsD, and a backend of ours (statsd/jsonl_backend.js) appends every flush to a file that
these tests read.

The daemon is installed once, with npm, into the user's cache
(`$XDG_CACHE_HOME/distcount/statsd-0.9.0`, else `~/.cache/distcount/statsd-0.9.0`). Without node
and npm, or when the install fails, the tests fail: they are part of the suite CI runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx
import pytest

from distcount_metrics import CATALOG, PREFIX, Kind, Metric
from distcount_metrics import _catalog as m
from distcount_store import connect
from tests.integration.pipeline import Pipeline

pytestmark = pytest.mark.integration

STATSD_VERSION: Final = "0.9.0"
BACKEND: Final = Path(__file__).resolve().parent / "statsd" / "jsonl_backend.js"
NPM_TIMEOUT_S: Final = 300
DAEMON_FLUSH_MS: Final = 250
SERVICE_INTERVAL_MS: Final = 200
COMPONENTS: Final = ("ingress", "aggregator")  # the process gauges' tag values
WAIT_S: Final = 30

INCREMENTS: Final = 40
# one key, so some of the pipeline's three partitions stay empty: their lag is reported too
KEYS: Final = ("apples",)
INVALID_BODIES: Final = ({"key": "", "value": 1}, {"key": "apples", "value": 0})


# -- the daemon's output ------------------------------------------------------------------------


@dataclass
class Flushed:
    """What the daemon's flushes add up to, read from the backend's file."""

    flushes: int = 0
    counters: dict[str, float] = field(default_factory=dict)  # summed over the flushes
    gauges: dict[str, float] = field(default_factory=dict)  # the latest value of each
    timers: dict[str, list[float]] = field(default_factory=dict)  # every observation
    timer_counts: dict[str, float] = field(default_factory=dict)  # summed over the flushes

    @classmethod
    def read(cls, path: Path) -> Flushed:
        flushed = cls()
        try:
            text = path.read_text()
        except FileNotFoundError:
            return flushed
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # still being written: left for the next read
            flush = json.loads(line)
            flushed.flushes += 1
            for key, value in flush["counters"].items():
                flushed.counters[key] = flushed.counters.get(key, 0) + value
            flushed.gauges.update(flush["gauges"])
            for key, values in flush["timers"].items():
                flushed.timers.setdefault(key, []).extend(values)
            for key, count in flush["timer_counters"].items():
                flushed.timer_counts[key] = flushed.timer_counts.get(key, 0) + count
        return flushed

    def describe(self) -> str:
        """The keys received so far, for failure messages."""

        def keys(section: dict[str, float]) -> str:
            return "\n".join(f"    {key} = {value}" for key, value in sorted(section.items()))

        return (
            f"{self.flushes} flushes; counters (summed):\n{keys(self.counters)}\n"
            f"  gauges (latest):\n{keys(self.gauges)}\n"
            f"  timers (observations):\n{keys(self.timer_counts)}"
        )


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class StatsdDaemon:
    process: subprocess.Popen[bytes]
    port: int  # UDP, for metrics
    mgmt_port: int  # TCP, the management console
    output: Path  # the backend's file
    log: Path  # the daemon's stdout and stderr
    probes: int = 0

    def flushed(self) -> Flushed:
        return Flushed.read(self.output)

    def log_tail(self) -> str:
        try:
            return tail(self.log.read_text(errors="replace"))
        except FileNotFoundError:
            return "(no log)"

    def send(self, line: str) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(line.encode("ascii"), ("127.0.0.1", self.port))

    def failure(self, what: str, detail: str = "") -> str:
        return f"{what}\n{detail}{self.log_section()}"

    def log_section(self) -> str:
        return f"\n--- statsd daemon's log ({self.log}), last lines ---\n{self.log_tail()}"

    def check_alive(self, what: str) -> None:
        if (code := self.process.poll()) is not None:
            pytest.fail(
                self.failure(f"the statsd daemon exited (code {code}) while waiting for {what}"),
                pytrace=False,
            )

    def health_up(self) -> bool:
        """The management console answers `health` with `health: up`."""
        try:
            with socket.create_connection(("127.0.0.1", self.mgmt_port), timeout=1) as sock:
                sock.sendall(b"health\n")
                answer = b""
                while b"\n" not in answer:
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    answer += chunk
        except OSError:
            return False
        return answer.strip() == b"health: up"

    def wait_ready(self, timeout_s: float) -> None:
        """Until the management port answers and a counter sent over UDP comes back through
        the backend: then both ends work."""
        deadline = time.monotonic() + timeout_s
        what = "the management port to answer `health: up`"
        while not self.health_up():
            self._check_deadline(deadline, timeout_s, what)
            time.sleep(0.05)
        what = "a probe counter sent over UDP to come back through the backend's file"
        while "probe.ready" not in self.flushed().counters:
            self.send("probe.ready:1|c")
            self._check_deadline(deadline, timeout_s, what)
            time.sleep(0.1)

    def _check_deadline(self, deadline: float, timeout_s: float, what: str) -> None:
        self.check_alive(what)
        if time.monotonic() > deadline:
            pytest.fail(
                self.failure(f"the statsd daemon was not ready after {timeout_s:.0f} s: {what}"),
                pytrace=False,
            )

    async def wait_for(
        self,
        shortfalls: Callable[[Flushed], list[str]],
        what: str,
        context: Callable[[], str] = lambda: "",
        poke: Callable[[], None] = lambda: None,
        timeout_s: float = WAIT_S,
    ) -> Flushed:
        """Reads the flushes until `shortfalls` finds nothing missing; `poke` runs each time."""
        deadline = time.monotonic() + timeout_s
        while True:
            flushed = self.flushed()
            missing = shortfalls(flushed)
            if not missing:
                return flushed
            self.check_alive(what)
            if time.monotonic() > deadline:
                detail = "\n".join(
                    ["still missing:", *(f"  {line}" for line in missing), flushed.describe()]
                )
                pytest.fail(
                    self.failure(f"timed out after {timeout_s:.0f} s waiting for {what}", detail)
                    + context(),
                    pytrace=False,
                )
            poke()
            await asyncio.sleep(0.1)

    async def everything_received(self) -> Flushed:
        """The flushes once everything sent to the daemon before this call is in them: a probe
        sent now queues behind it, so its coming back through the backend marks the end."""
        self.probes += 1
        name = f"probe.end{self.probes}"

        def shortfalls(flushed: Flushed) -> list[str]:
            return [] if name in flushed.counters else [f"the probe counter {name}"]

        self.send(f"{name}:1|c")
        return await self.wait_for(
            shortfalls,
            "a probe counter sent last to come back",
            poke=lambda: self.send(f"{name}:1|c"),
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- installing and starting the daemon ---------------------------------------------------------


@dataclass(frozen=True)
class StatsdInstall:
    node: str
    stats_js: Path


def _install_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "distcount" / f"statsd-{STATSD_VERSION}"


def _stats_js(root: Path) -> Path:
    return root / "node_modules" / "statsd" / "stats.js"


def _installed(root: Path) -> bool:
    try:
        package = json.loads((root / "node_modules" / "statsd" / "package.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(package.get("version") == STATSD_VERSION and _stats_js(root).is_file())


def _npm_install(root: Path) -> None:
    """statsd into `root`, installed beside it first and moved in whole, so that an install cut
    short never looks like a finished one."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            f"npm is not on PATH: it is needed once to install statsd {STATSD_VERSION} into "
            f"{root} (install Node.js with npm, e.g. `apt-get install nodejs npm`)",
            pytrace=False,
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would stay with the installed folder
    try:
        # a package.json of its own, so that npm installs here and not into a parent project
        (staging / "package.json").write_text('{"name": "distcount-statsd", "private": true}\n')
        command = [
            npm,
            "install",
            "--prefix",
            str(staging),
            "--no-audit",
            "--no-fund",
            # modern-syslog, the one optional dependency, is a native build the tests do not use
            "--omit=optional",
            "--ignore-scripts",
            f"statsd@{STATSD_VERSION}",
        ]
        shown = " ".join(command)
        try:
            result = subprocess.run(
                command,
                cwd=staging,
                env={**os.environ, "NPM_CONFIG_UPDATE_NOTIFIER": "false"},
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{shown}` did not finish in {NPM_TIMEOUT_S} s", pytrace=False)
        if result.returncode != 0 or not _installed(staging):
            pytest.fail(
                f"`{shown}` failed (exit code {result.returncode}), so statsd "
                f"{STATSD_VERSION} is not installed into {root}:\n"
                f"{tail(result.stdout + result.stderr, 40)}",
                pytrace=False,
            )
        if root.exists() and not _installed(root):
            shutil.rmtree(root)  # what a different kind of install left
        try:
            staging.rename(root)
        except OSError:
            if not _installed(root):  # not another session's install finishing first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@pytest.fixture(scope="session")
def statsd_install() -> StatsdInstall:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            f"node is not on PATH: these tests run the statsd {STATSD_VERSION} daemon "
            "(install Node.js with npm, e.g. `apt-get install nodejs npm`)",
            pytrace=False,
        )
    root = _install_dir()
    if not _installed(root):
        _npm_install(root)
    return StatsdInstall(node, _stats_js(root))


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def statsd_daemon(statsd_install: StatsdInstall, tmp_path: Path) -> Iterator[StatsdDaemon]:
    """The daemon on free ports, flushing every DAEMON_FLUSH_MS into statsd/flushes.jsonl."""
    workdir = tmp_path / "statsd"
    workdir.mkdir()
    port, mgmt_port = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    output = workdir / "flushes.jsonl"
    config = {
        "address": "127.0.0.1",
        "port": port,
        "mgmt_address": "127.0.0.1",
        "mgmt_port": mgmt_port,
        "flushInterval": DAEMON_FLUSH_MS,
        "backends": [str(BACKEND)],
        "jsonl": {"path": str(output)},
        "automaticConfigReload": False,
    }
    config_file = workdir / "config.js"
    config_file.write_text(json.dumps(config, indent=2) + "\n")  # JSON is a JS object literal
    log = workdir / "daemon.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [statsd_install.node, str(statsd_install.stats_js), str(config_file)],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    daemon = StatsdDaemon(process, port, mgmt_port, output, log)
    try:
        daemon.wait_ready(WAIT_S)
        yield daemon
    finally:
        daemon.stop()


# -- metric names as the daemon files them ------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    reporter: str  # DISTCOUNT_METRICS
    constant_tags: tuple[tuple[str, str], ...] = ()  # DISTCOUNT_METRICS_TAGS, as pairs
    # the README's example, as the daemon files it
    readme_example: str = ""

    def settings(self, port: int) -> dict[str, str]:
        """The services' DISTCOUNT_* settings (without the prefix) for the daemon on `port`."""
        settings = {
            "metrics": self.reporter,
            "statsd_host": "127.0.0.1",
            "statsd_port": str(port),
            "metrics_interval_ms": str(SERVICE_INTERVAL_MS),
            "metrics_sample_rate": "1",
        }
        if self.constant_tags:
            settings["metrics_tags"] = ",".join(f"{k}:{v}" for k, v in self.constant_tags)
        return settings

    def key(self, metric: Metric, **tags: str | int) -> str:
        """The key Etsy's daemon files `metric` under, with these tag values.

        Plain StatsD: the values as last segments of the name, in the catalog's order. DogStatsD:
        the daemon turns `|#route:increment,env:test` into `;route=increment;env=test`.
        """
        assert sorted(tags) == sorted(metric.tags), (metric.full_name, metric.tags, tags)
        values = [str(tags[name]) for name in metric.tags]
        if self.reporter == "statsd":
            return ".".join([metric.full_name, *values])
        pairs = [*zip(metric.tags, values, strict=True), *self.constant_tags]
        return metric.full_name + "".join(f";{name}={value}" for name, value in pairs)

    def metric_of(self, key: str) -> Metric | None:
        """The catalog's metric a key the daemon received stands for, if its name and tags are
        what that metric's are."""
        for metric in CATALOG:
            if self.reporter == "statsd":
                if key == metric.full_name and not metric.tags:
                    return metric
                rest = key.removeprefix(metric.full_name + ".")
                values = rest.split(".")
                if rest != key and len(values) == len(metric.tags) and all(values):
                    return metric
            else:
                name, *pairs = key.split(";")
                names = [pair.partition("=")[0] for pair in pairs]
                expected = [*metric.tags, *(tag for tag, _ in self.constant_tags)]
                if name == metric.full_name and names == expected:
                    return metric
        return None


STATSD: Final = Dialect("statsd", readme_example="distcount.ingress.requests.increment.202")
DOGSTATSD: Final = Dialect(
    "dogstatsd",
    constant_tags=(("env", "test"),),
    readme_example="distcount.ingress.requests;route=increment;status=202;env=test",
)


def wrong_keys(flushed: Flushed, dialect: Dialect) -> list[str]:
    """Keys under the distcount prefix that are no catalog metric of the section's kind."""
    sections: list[tuple[Kind, dict[str, float]]] = [
        (Kind.COUNTER, flushed.counters),
        (Kind.GAUGE, flushed.gauges),
        (Kind.TIMER, flushed.timer_counts),
    ]
    wrong = []
    for kind, section in sections:
        for key in section:
            if not key.startswith(PREFIX + "."):
                continue  # the daemon's own, and the probes
            metric = dialect.metric_of(key)
            if metric is None or metric.kind is not kind:
                found = "no catalog metric" if metric is None else f"a {metric.kind}"
                wrong.append(f"{key} (received as a {kind}, but {found})")
    return wrong


# -- the tests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    counters: dict[str, int]  # summed over the flushes, exactly
    timer_counts: dict[str, int]  # observations, exactly (the sample rate is 1)
    timers: list[str]  # at least one observation
    gauges: list[str]  # received at least once

    def shortfalls(self, flushed: Flushed) -> list[str]:
        missing = [
            f"counter {key}: {flushed.counters.get(key, 0)} of {n}"
            for key, n in self.counters.items()
            if flushed.counters.get(key, 0) < n
        ]
        missing += [
            f"timer {key}: {flushed.timer_counts.get(key, 0)} observations of {n}"
            for key, n in self.timer_counts.items()
            if round(flushed.timer_counts.get(key, 0), 3) < n
        ]
        missing += [f"timer {key}" for key in self.timers if not flushed.timers.get(key)]
        missing += [f"gauge {key}" for key in self.gauges if key not in flushed.gauges]
        return missing


def expected_metrics(dialect: Dialect, partitions: int) -> Expected:
    key = dialect.key
    return Expected(
        counters={
            key(m.REQUESTS, route="increment", status=202): INCREMENTS,
            key(m.REQUESTS, route="increment", status=422): len(INVALID_BODIES),
            key(m.REQUESTS, route="unmatched", status=404): 1,
            key(m.RECORDS_IN): INCREMENTS + 1,  # the malformed record is fetched too
            key(m.DEAD_LETTERS): 1,
        },
        timer_counts={
            # refused requests are timed too
            key(m.REQUEST_DURATION, route="increment"): INCREMENTS + len(INVALID_BODIES),
            key(m.PRODUCE_DURATION, path="single"): INCREMENTS,
            # one record drawn from each fetch, standing for all of its records: the malformed
            # one too, once its partition's flush commits
            key(m.DELAY): INCREMENTS + 1,
        },
        timers=[key(m.FLUSH_DURATION, reason="tick"), key(m.FLUSH_ROWS)],
        gauges=[
            *(key(m.MEMORY_RSS, component=component) for component in COMPONENTS),
            *(key(m.LOOP_LAG, component=component) for component in COMPONENTS),
            key(m.INFLIGHT_SENDS),
            key(m.LIVE_ENTRIES),
            *(key(m.CONSUMER_LAG, partition=p) for p in range(partitions)),
        ],
    )


async def drive(pipeline: Pipeline, url: str) -> dict[str, int]:
    """Increments, refused ones, an unknown path and a malformed record; the totals expected."""
    totals: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for i in range(INCREMENTS):
            key, value = KEYS[i % len(KEYS)], i % 3 + 1
            response = await client.post("/increment", json={"key": key, "value": value})
            assert response.status_code == 202, response.text
            totals[key] = totals.get(key, 0) + value
        for body in INVALID_BODIES:
            response = await client.post("/increment", json=body)
            assert response.status_code == 422, (body, response.text)
        response = await client.get("/no/such/path")
        assert response.status_code == 404, response.text
    # straight to the topic, past the ingress's validation: the aggregator dead-letters it
    await pipeline.produce([(b"malformed", b"not json")])
    return totals


async def event_rows(pipeline: Pipeline) -> int:
    conn = await connect(pipeline.database_url)
    try:
        rows: int = await conn.fetchval("SELECT count(*) FROM counter_events")
    finally:
        await conn.close()
    return rows


def services_logs(pipeline: Pipeline) -> Callable[[], str]:
    def read() -> str:
        return "".join(
            f"\n--- {name}.log, last lines ---\n{tail(pipeline.log(name))}"
            for name in ("ingress", "aggregator")
        )

    return read


@pytest.mark.parametrize("dialect", [STATSD, DOGSTATSD], ids=lambda d: d.reporter)
async def test_the_services_metrics_reach_a_real_statsd_daemon(
    pipeline: Pipeline, statsd_daemon: StatsdDaemon, dialect: Dialect
) -> None:
    key = dialect.key
    # the names below are built by `key`; one of them spelled out as the README shows it
    assert key(m.REQUESTS, route="increment", status=202) == dialect.readme_example

    settings = dialect.settings(statsd_daemon.port)
    pipeline.start("aggregator", "aggregator", **settings)
    url = await pipeline.start_ingress(**settings)
    totals = await drive(pipeline, url)
    await pipeline.wait_caught_up()
    assert await pipeline.totals() == totals
    # the lag of a partition that never held a record is reported all the same
    ends = await pipeline.end_offsets()
    assert any(ends[p] == 0 for p in range(pipeline.partitions)), f"no partition is empty: {ends}"

    # while the services run, their ticks bring it all
    expected = expected_metrics(dialect, pipeline.partitions)
    logs = services_logs(pipeline)
    await statsd_daemon.wait_for(
        expected.shortfalls, "the services' metrics to reach the daemon", context=logs
    )

    # stopped, each service reports a last time; a probe sent after that marks the end
    await asyncio.to_thread(pipeline.stop_all)
    flushed = await statsd_daemon.everything_received()
    context = flushed.describe() + statsd_daemon.log_section() + logs()

    # counts are exact: nothing lost, nothing counted twice
    assert {k: flushed.counters.get(k) for k in expected.counters} == expected.counters, context
    # a delay drawn from a fetch of n records stands for n of them (rate 1/n, written with six
    # decimals): the daemon's scaled count comes within a hair of the records
    got_counts = {k: round(flushed.timer_counts.get(k, 0), 3) for k in expected.timer_counts}
    assert got_counts == expected.timer_counts, context
    assert flushed.counters.get("statsd.bad_lines_seen") == 0, context
    assert wrong_keys(flushed, dialect) == [], context

    # the rows of every committed flush are the rows written
    assert sum(flushed.timers[key(m.FLUSH_ROWS)]) == await event_rows(pipeline), context
    assert all(delay >= 0 for delay in flushed.timers[key(m.DELAY)]), context

    # gauges: real memory figures, and everything settled once the pipeline stopped
    for component in COMPONENTS:
        assert flushed.gauges[key(m.MEMORY_RSS, component=component)] > 0, context
        assert flushed.gauges[key(m.LOOP_LAG, component=component)] >= 0, context
    settled = [
        key(m.INFLIGHT_SENDS),
        key(m.LIVE_ENTRIES),
        *(key(m.CONSUMER_LAG, partition=p) for p in range(pipeline.partitions)),
    ]
    assert {k: flushed.gauges.get(k) for k in settled} == dict.fromkeys(settled, 0), context

    for name in ("ingress", "aggregator"):
        log = pipeline.log(name)
        assert "metrics were not reported" not in log, tail(log)
        assert "cannot reach StatsD" not in log, tail(log)
