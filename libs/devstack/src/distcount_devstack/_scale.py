"""How many processes of each service `dev up` runs, and what each is called.

The first process of a service keeps the service's own name (`ingress`, `aggregator`: what a
stack of one of each has always called them, its state entry, log folder and `dev status` row);
the others are numbered from 2 (`ingress-2`, `aggregator-3`). The counts a stack runs are not
stored apart: they are read back from the processes recorded in `stack.json`, where a process
that crashed keeps its entry (so `dev up` restarts it) until `dev down` or a smaller count
removes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from distcount_devstack._errors import DevStackError

INGRESS: Final = "ingress"
AGGREGATOR: Final = "aggregator"
SERVICES: Final = (INGRESS, AGGREGATOR)
# Far past what one machine gains from (see the README's local stack), yet bounded: each
# process holds its own connections to Kafka and PostgreSQL.
MAX_PROCESSES: Final = 16
# the command-line option that sets each service's count, for messages
OPTIONS: Final = {INGRESS: "--ingress-workers", AGGREGATOR: "--aggregators"}


def instance_name(service: str, index: int) -> str:
    """The name of the `index`-th process (from 1) of `service`."""
    return service if index == 1 else f"{service}-{index}"


def instance_names(service: str, count: int) -> list[str]:
    return [instance_name(service, index) for index in range(1, count + 1)]


def parse_instance(name: str) -> tuple[str, int] | None:
    """(service, index) of a process name `instance_name` gives; None for any other name (the
    broker's, PostgreSQL's)."""
    if name in SERVICES:
        return name, 1
    service, dash, number = name.rpartition("-")
    if not dash or service not in SERVICES or not number.isdigit() or number != str(int(number)):
        return None
    index = int(number)
    return (service, index) if index >= 2 else None


def recorded_counts(names: Iterable[str]) -> dict[str, int]:
    """Per service, the highest index among `names` (those of the recorded processes); 0 for a
    service none of them is."""
    counts = dict.fromkeys(SERVICES, 0)
    for name in names:
        parsed = parse_instance(name)
        if parsed is not None:
            service, index = parsed
            counts[service] = max(counts[service], index)
    return counts


def check_count(service: str, count: int) -> int:
    """`count`, when it is a number of processes `dev up` runs of `service`."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PROCESSES:
        raise DevStackError(
            f"{OPTIONS[service]} must be a whole number from 1 to {MAX_PROCESSES}, not {count!r}"
        )
    return count


@dataclass(frozen=True)
class Scale:
    """What `dev up --ingress-workers N --aggregators M` asks; None: as the stack runs now."""

    ingress_workers: int | None = None
    aggregators: int | None = None

    def __post_init__(self) -> None:
        for service, count in self._asked().items():
            if count is not None:
                check_count(service, count)

    def _asked(self) -> dict[str, int | None]:
        return {INGRESS: self.ingress_workers, AGGREGATOR: self.aggregators}

    def counts(self, recorded: Iterable[str]) -> dict[str, int]:
        """Per service, how many processes to run: the count asked, else as many as `recorded`
        (the names of the processes in the state) holds, else 1."""
        now = recorded_counts(recorded)
        return {
            service: asked if asked is not None else max(1, now[service])
            for service, asked in self._asked().items()
        }


def wanted_names(counts: Mapping[str, int]) -> list[str]:
    """The process names of `counts`, each service's in order."""
    return [name for service in SERVICES for name in instance_names(service, counts[service])]


def extra_names(recorded: Iterable[str], counts: Mapping[str, int]) -> list[str]:
    """Those of `recorded` that are processes of a service beyond its count: to stop."""
    extra = []
    for name in recorded:
        parsed = parse_instance(name)
        if parsed is not None and parsed[1] > counts[parsed[0]]:
            extra.append(name)
    return sorted(extra, key=lambda n: parse_instance(n) or (n, 0))
