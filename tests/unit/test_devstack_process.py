"""The local stack's processes through psutil: recognised by pid and start time, records of state
folders written before psutil still read, stopped by signal; and the one wait helper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distcount_devstack import DevStackError
from distcount_devstack._process import (
    ProcessRecord,
    is_alive,
    is_pid_alive,
    processes_in,
    spawn,
    stop,
    wait_started,
)
from distcount_devstack._state import StackState
from distcount_devstack._wait import wait_until

_SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
# ignores SIGTERM, as a stuck server might
_STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', "
    "flush=True); time.sleep(60)",
]


def _kernel_start_ticks(pid: int) -> int:
    """What the state folders made before psutil recorded: /proc's start time in clock ticks."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rindex(")") + 2 :].split()[19])


# -- records -----------------------------------------------------------------------------------


def test_a_record_knows_its_own_process() -> None:
    record = ProcessRecord.of(os.getpid())
    assert is_alive(record)
    assert ProcessRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_a_reused_pid_is_not_taken_for_the_process_recorded() -> None:
    record = ProcessRecord.of(os.getpid())
    assert not is_alive(ProcessRecord(record.pid, record.started_s - 5.0))


def test_a_pid_nobody_has_is_not_alive() -> None:
    assert not is_alive(ProcessRecord(2**22 + 12345, 1.0))  # past Linux's largest pid
    assert not is_pid_alive(2**22 + 12345)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="records of /proc's ticks")
def test_a_record_from_before_psutil_still_names_its_process() -> None:
    legacy = {"pid": os.getpid(), "start_ticks": _kernel_start_ticks(os.getpid())}
    record = ProcessRecord.from_json(legacy)
    assert is_alive(record)
    assert record.started_s == pytest.approx(ProcessRecord.of(os.getpid()).started_s, abs=0.05)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="records of /proc's ticks")
def test_a_state_folder_from_before_psutil_still_loads(tmp_path: Path) -> None:
    entry = {"pid": os.getpid(), "start_ticks": _kernel_start_ticks(os.getpid())}
    (tmp_path / "stack.json").write_text(json.dumps({"format": 1, "processes": {"kafka": entry}}))
    state = StackState.load(tmp_path)
    assert is_alive(state.processes["kafka"])
    state.save()  # written in today's format, still naming the same process
    assert json.loads((tmp_path / "stack.json").read_text())["format"] == 2
    assert is_alive(StackState.load(tmp_path).processes["kafka"])


@pytest.mark.parametrize(
    "entry",
    [
        {"pid": 12},
        {"start_ticks": 5},
        {"pid": "12", "started_s": 1.0},
        {"pid": 3, "started_s": True},
    ],
)
def test_a_broken_entry_is_refused(entry: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="lacks"):
        ProcessRecord.from_json(entry)


# -- start and stop ----------------------------------------------------------------------------


async def test_spawn_then_stop(tmp_path: Path) -> None:
    record = spawn(_SLEEP, tmp_path / "sleep.log")
    assert is_alive(record)
    started = time.monotonic()

    assert await stop(record, timeout_s=10) is False  # ended on SIGTERM, not killed

    assert not is_alive(record)
    assert time.monotonic() - started < 5


async def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    record = spawn(_STUBBORN, log)
    assert await wait_until(lambda: "ready" in log.read_text(), 10)

    assert await stop(record, timeout_s=0.5) is True

    assert not is_alive(record)


async def test_stopping_what_has_ended_does_nothing(tmp_path: Path) -> None:
    record = spawn([sys.executable, "-c", "pass"], tmp_path / "brief.log")
    assert await wait_until(lambda: not is_alive(record), 10)  # a zombie counts as ended
    assert await stop(record, timeout_s=1) is False


def test_spawn_names_what_it_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(DevStackError, match="cannot start /nonexistent/server"):
        spawn(["/nonexistent/server"], tmp_path / "x.log")


def test_a_process_is_found_by_its_working_directory(tmp_path: Path) -> None:
    folder = tmp_path.resolve()
    with subprocess.Popen(_SLEEP, cwd=folder) as process:
        try:
            assert process.pid in processes_in(folder)
        finally:
            process.kill()
    assert process.pid not in processes_in(folder)


async def test_wait_started_quotes_the_log_of_a_process_that_exits(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    code = "print('FATAL: no such setting'); raise SystemExit(1)"
    record = spawn([sys.executable, "-c", code], log)

    async def never() -> bool:
        return False

    with pytest.raises(DevStackError) as info:
        await wait_started("the server", record, [log], ready=never, timeout_s=30, where="here")
    assert f"the server exited during startup; the end of {log}:" in str(info.value)
    assert "FATAL: no such setting" in str(info.value)


async def test_wait_started_names_the_log_of_a_process_too_slow(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    record = spawn(_SLEEP, log)

    async def never() -> bool:
        return False

    try:
        with pytest.raises(DevStackError) as info:
            await wait_started(
                "the server", record, [log], ready=never, timeout_s=0.3, where="on port 1"
            )
    finally:
        await stop(record, timeout_s=5)
    assert f"(pid {record.pid}) did not answer on port 1 within 0 s; see {log}" in str(info.value)


# -- the wait helper ---------------------------------------------------------------------------


async def test_wait_until_answers_at_once_when_done() -> None:
    started = time.monotonic()
    assert await wait_until(lambda: True, timeout_s=10)
    assert time.monotonic() - started < 0.05


async def test_wait_until_keeps_looking_until_done() -> None:
    looks: list[float] = []

    async def third_time() -> bool:
        looks.append(time.monotonic())
        return len(looks) == 3

    assert await wait_until(third_time, timeout_s=10)
    assert len(looks) == 3
    # the pauses grow
    assert looks[2] - looks[1] > looks[1] - looks[0]


async def test_wait_until_gives_up_at_its_deadline() -> None:
    started = time.monotonic()
    assert not await wait_until(lambda: False, timeout_s=0.4)
    assert 0.4 <= time.monotonic() - started < 0.8


async def test_wait_until_stops_when_told_there_is_no_point() -> None:
    def gone() -> None:
        raise DevStackError("it exited")

    with pytest.raises(DevStackError, match="it exited"):
        await wait_until(lambda: False, timeout_s=10, give_up=gone)
