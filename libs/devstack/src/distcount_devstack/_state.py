"""The git-ignored state folder: data of each component and `stack.json`, the processes started
and how many Kafka nodes the stack's cluster has."""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from distcount_devstack._errors import DevStackError
from distcount_devstack._process import ProcessRecord

# 2 records each process's start in seconds after boot; 1, still read, in clock ticks. 3 is 2
# with a cluster of several Kafka nodes, which a distcount from before clusters must not take
# for its single broker (it would restart node 1 as a quorum of its own)
_FORMAT = 2
_CLUSTER_FORMAT = 3
_READABLE_FORMATS = (1, 2, 3)


def _broken(folder: Path, why: str) -> DevStackError:
    return DevStackError(
        f"the state folder {folder} is damaged: {why}. Run `distcount dev down --purge` to "
        "delete it and start afresh (this deletes the local Kafka and PostgreSQL data)"
    )


class StackState:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.file = folder / "stack.json"
        self.processes: dict[str, ProcessRecord] = {}
        # None: never recorded (a stack from before clusters, or one that never ran Kafka)
        self.kafka_brokers: int | None = None

    @classmethod
    def load(cls, folder: Path) -> StackState:
        state = cls(folder)
        if folder.exists() and not folder.is_dir():
            raise _broken(folder, "it is not a folder")
        if not state.file.exists():
            return state
        try:
            data = json.loads(state.file.read_text())
            if not isinstance(data, dict) or data.get("format") not in _READABLE_FORMATS:
                raise ValueError(f"unknown format in {state.file.name}")
            processes = data.get("processes", {})
            if not isinstance(processes, dict):
                raise ValueError("'processes' is not an object")
            state.processes = {
                str(name): ProcessRecord.from_json(entry) for name, entry in processes.items()
            }
            brokers = data.get("kafka_brokers")
            if brokers is not None and (
                isinstance(brokers, bool) or not isinstance(brokers, int) or brokers < 1
            ):
                raise ValueError(f"'kafka_brokers' is not a number of brokers: {brokers!r}")
            state.kafka_brokers = brokers
        except (OSError, ValueError) as exc:
            raise _broken(folder, f"{state.file.name} cannot be read ({exc})") from exc
        return state

    def check_data(self, kafka_data: Iterable[Path], postgres_data: Path) -> None:
        """Folders that exist but were never completed cannot be reused."""
        for folder in kafka_data:
            if folder.exists() and not (folder / "meta.properties").is_file():
                raise _broken(self.folder, f"{folder} holds no formatted Kafka storage")
        if postgres_data.exists() and not (postgres_data / "PG_VERSION").is_file():
            raise _broken(self.folder, f"{postgres_data} is not a PostgreSQL data folder")

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        several = self.kafka_brokers is not None and self.kafka_brokers > 1
        data: dict[str, object] = {
            "format": _CLUSTER_FORMAT if several else _FORMAT,
            "processes": {k: v.to_json() for k, v in sorted(self.processes.items())},
        }
        if self.kafka_brokers is not None:
            data["kafka_brokers"] = self.kafka_brokers
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.file)

    def purge(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def locked(folder: Path, say: Callable[[str], None]) -> Iterator[None]:
    """One `distcount dev` command at a time per state folder."""
    if folder.exists() and not folder.is_dir():
        raise _broken(folder, "it is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another `distcount dev` command on {folder}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
