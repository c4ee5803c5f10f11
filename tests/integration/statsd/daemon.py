"""Etsy's statsd (0.9.0, from npm) on free ports, with a backend of ours (jsonl_backend.js, beside
this module) that appends every flush to a file, and what those flushes add up to.

The daemon is installed once, with npm, into the user's cache
(`$XDG_CACHE_HOME/distcount/statsd-0.9.0`, else `~/.cache/distcount/statsd-0.9.0`). Without node
and npm, or when the install fails, the tests that use it fail: they are part of the suite CI runs.
"""

from __future__ import annotations

import asyncio
import contextlib
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

import pytest

STATSD_VERSION: Final = "0.9.0"
BACKEND: Final = Path(__file__).resolve().parent / "jsonl_backend.js"
NPM_TIMEOUT_S: Final = 300
DAEMON_FLUSH_MS: Final = 250
WAIT_S: Final = 30


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


def install_statsd() -> StatsdInstall:
    """node, and the daemon: installed with npm the first time."""
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


@contextlib.contextmanager
def running_daemon(install: StatsdInstall, workdir: Path) -> Iterator[StatsdDaemon]:
    """The daemon on free ports, ready, flushing every DAEMON_FLUSH_MS into
    `workdir`/flushes.jsonl; stopped on leaving."""
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
            [install.node, str(install.stats_js), str(config_file)],
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
