"""Detached processes, tracked by pid and start time so a reused pid is never taken for ours."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    start_ticks: int

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start_ticks": self.start_ticks}

    @classmethod
    def from_json(cls, data: object) -> ProcessRecord:
        if not isinstance(data, dict):
            raise ValueError("a process entry is not an object")
        pid, ticks = data.get("pid"), data.get("start_ticks")
        if not isinstance(pid, int) or not isinstance(ticks, int) or pid <= 0:
            raise ValueError("a process entry lacks pid or start_ticks")
        return cls(pid, ticks)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses; the rest follows the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def is_alive(record: ProcessRecord) -> bool:
    fields = _stat_fields(record.pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return int(fields[19]) == record.start_ticks


def spawn(
    argv: Sequence[str | Path],
    log_path: Path,
    extra_env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> ProcessRecord:
    """Start `argv` in a session of its own, output appended to `log_path`, outliving us.

    A short-lived shell starts it in the background and exits at once, so the process is
    nobody's child here: no zombie is left behind and nothing has to wait for it.
    """
    with log_path.open("ab") as log:
        # the shell's stdout is the log, which its child inherits; the pid comes back on stderr
        result = subprocess.run(
            ["/bin/sh", "-c", '"$@" </dev/null 2>&1 & echo $! >&2', "sh", *map(str, argv)],
            env=None if extra_env is None else {**os.environ, **extra_env},
            stdout=log,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            user=user,
            check=True,
            timeout=30,
        )
    pid = int(result.stderr.strip())
    ticks = start_ticks(pid)
    if ticks is None:
        raise OSError(f"{argv[0]} exited at once; see {log_path}")
    return ProcessRecord(pid, ticks)


def is_pid_alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def wait_for_processes_in(folder: Path, timeout_s: float) -> None:
    """Wait until no live process has `folder` as its working directory (orphans of a crash)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = False
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cwd = (proc / "cwd").readlink()
            except OSError:
                continue
            if cwd == folder and is_pid_alive(int(proc.name)):
                busy = True
                break
        if not busy:
            return
        time.sleep(0.2)


def stop(
    record: ProcessRecord, timeout_s: float, first_signal: signal.Signals = signal.SIGTERM
) -> bool:
    """`first_signal`, then SIGKILL after `timeout_s`. True when it had to be killed."""
    if not is_alive(record):
        return False
    os.kill(record.pid, first_signal)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(record):
            return False
        time.sleep(0.1)
    os.kill(record.pid, signal.SIGKILL)
    while is_alive(record):
        time.sleep(0.05)
    return True


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
