"""The stack's processes, through psutil: started detached, recognised by pid and start time (so a
reused pid is never taken for ours), stopped by signal.

A process is recorded with the time it started, counted from the machine's boot, as the kernel
keeps it: that count does not move when the clock is set. (After a reboot, a recorded pid could
name a new process started at the very same moment after boot: too unlikely to guard against.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil

from distcount_devstack._errors import DevStackError
from distcount_devstack._wait import wait_until

# Two readings of one process's start agree to float rounding, far within this; the kernel gives
# a pid again only once its counter has gone all the way round, which takes far longer.
_SAME_START_S: Final = 0.05
# SIGKILL ends a process at once, unless the kernel is stuck on its behalf
_KILLED_WITHIN_S: Final = 30.0

# Popen objects of the processes this one started: kept so that none is collected (and warned
# about) while its process still runs; they are left running on purpose.
_started: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    started_s: float  # seconds after the machine's boot

    def to_json(self) -> dict[str, float]:
        return {"pid": self.pid, "started_s": self.started_s}

    @classmethod
    def from_json(cls, data: object) -> ProcessRecord:
        if not isinstance(data, dict):
            raise ValueError("a process entry is not an object")
        pid, started, ticks = data.get("pid"), data.get("started_s"), data.get("start_ticks")
        if not isinstance(pid, int) or pid <= 0:
            raise ValueError("a process entry lacks its pid")
        if isinstance(started, int | float) and not isinstance(started, bool):
            return cls(pid, float(started))
        if isinstance(ticks, int):
            # written before psutil: the kernel's start time in clock ticks after boot
            return cls(pid, ticks / os.sysconf("SC_CLK_TCK"))
        raise ValueError("a process entry lacks its start time")

    @classmethod
    def of(cls, pid: int) -> ProcessRecord:
        try:
            return cls(pid, _started_s(psutil.Process(pid)))
        except psutil.Error as exc:
            raise DevStackError(f"process {pid} cannot be looked at: {exc}") from exc


def _started_s(process: psutil.Process) -> float:
    # rounded: the kernel counts in clock ticks, and a JSON file reads better without float noise
    return round(process.create_time() - psutil.boot_time(), 3)


def running(record: ProcessRecord) -> psutil.Process | None:
    """The process of `record`, if it still runs (a zombie has ended)."""
    # a child of this process that ended is reaped here, not left a zombie
    _started[:] = [child for child in _started if child.poll() is None]
    try:
        process = psutil.Process(record.pid)
        if abs(_started_s(process) - record.started_s) > _SAME_START_S:
            return None  # the pid was given to another process
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:  # gone, or not ours to look at
        return None
    return process


def is_alive(record: ProcessRecord) -> bool:
    return running(record) is not None


def is_pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def spawn(
    argv: Sequence[str | Path], log_path: Path, extra_env: Mapping[str, str] | None = None
) -> ProcessRecord:
    """Start `argv` in a session of its own (a Ctrl-C in the terminal does not reach it), its
    output appended to `log_path`, to outlive this process."""
    try:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(arg) for arg in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if extra_env is None else {**os.environ, **extra_env},
                start_new_session=True,
            )
    except OSError as exc:
        raise DevStackError(f"cannot start {argv[0]}: {exc}") from exc
    _started.append(process)
    return ProcessRecord.of(process.pid)


async def wait_started(
    what: str,
    record: ProcessRecord,
    logs: Sequence[Path],
    *,
    ready: Callable[[], Awaitable[bool]],
    timeout_s: float,
    where: str,
) -> None:
    """Until `ready` says the process of `record` serves; a `DevStackError` that quotes the
    first of its `logs` with something in it when it exits first, or that names the first one
    when `timeout_s` passes."""

    def exited() -> None:
        if not is_alive(record):
            raise DevStackError(f"{what} exited during startup; {last_words(logs)}")

    if not await wait_until(ready, timeout_s, give_up=exited):
        raise DevStackError(
            f"{what} (pid {record.pid}) did not answer {where} within {timeout_s:.0f} s; "
            f"see {logs[0]}"
        )


def last_words(logs: Sequence[Path]) -> str:
    """The end of the first of `logs` that has something in it."""
    for log in logs:
        text = tail(log)
        if text:
            return f"the end of {log}:\n{text}"
    return f"{logs[0]} is empty"


def processes_in(folder: Path) -> list[int]:
    """The live processes whose working directory is `folder` (a server's orphans after a
    crash), those this user may look at."""
    found = []
    for process in psutil.process_iter(["cwd", "status"]):
        cwd, status = process.info["cwd"], process.info["status"]
        if cwd is not None and Path(cwd) == folder and status != psutil.STATUS_ZOMBIE:
            found.append(process.pid)
    return found


async def stop(
    record: ProcessRecord, timeout_s: float, first_signal: signal.Signals = signal.SIGTERM
) -> bool:
    """`first_signal`, then SIGKILL after `timeout_s`; True when it had to be killed."""
    process = running(record)
    if process is None:
        return False
    try:
        process.send_signal(first_signal)
        if await wait_until(lambda: not is_alive(record), timeout_s):
            return False
        process.kill()
    except psutil.NoSuchProcess:
        return False
    if not await wait_until(lambda: not is_alive(record), _KILLED_WITHIN_S):
        raise DevStackError(
            f"process {record.pid} did not end within {_KILLED_WITHIN_S:.0f} s of SIGKILL; the "
            "machine may be short of memory, or stuck on a disk"
        )
    return True


def port_in_use(port: int, host: str = "127.0.0.1", *, shared: bool = False) -> bool:
    """Whether binding `port` fails; `shared`: as a process that shares it with SO_REUSEPORT
    would bind it, which only listeners that share it too (and run as the same user) allow."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def listens_on(record: ProcessRecord, port: int) -> bool:
    """Whether the process of `record` has a TCP socket listening on `port`."""
    process = running(record)
    if process is None:
        return False
    try:
        connections = process.net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections
    )


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
