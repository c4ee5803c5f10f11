"""Child processes whose output lines are time-stamped as they arrive and kept in a log file:
every side of a benchmark that runs as a process of its own is one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness._console import say
from harness._machine import proc_cpu_seconds

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / "benchmarks"
PYTHON = sys.executable


@dataclass
class Line:
    at: float  # time.monotonic() when the line arrived
    stream: str  # "out" or "err"
    text: str


@dataclass
class Child:
    """A running child process. `spawned_at` is time.monotonic() just before it was created,
    the start of every side's clock."""

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
        env: Mapping[str, str],
        log_path: Path,
        on_line: Callable[[Line], None] | None = None,
    ) -> Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        spawned_at = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
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
                raise self.exited()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no awaited line within {timeout_s:.0f} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    def first_line(self, predicate: Callable[[str], bool]) -> Line | None:
        return next((line for line in self.lines if predicate(line.text)), None)

    def since_spawn(self, line: Line | None) -> float | None:
        return None if line is None else line.at - self.spawned_at

    def exited(self) -> RuntimeError:
        """The error to raise when the child stopped before it should have."""
        return RuntimeError(
            f"{self.name} exited with status {self.process.returncode}; see {self.log_path}\n"
            + "\n".join(f"  {line.text}" for line in self.lines[-20:])
        )

    def running(self) -> bool:
        return self.process.returncode is None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the process itself so far, None if it is gone."""
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


def child_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with `overrides`, which win."""
    env = dict(os.environ)
    env.update(overrides)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
