"""The local Kafka as `dev up` runs it: one node, or a cluster of several (`--brokers N`), each
node a broker and a controller on 127.0.0.1.

Node 1 keeps the single broker's name (`kafka`), folder and ports, so that a state folder from
before clusters holds a cluster of one. Node i, from 2, is `kafka-i`, in `<state>/kafka-i`, on
DISTCOUNT_DEV_KAFKA_PORT and DISTCOUNT_DEV_KAFKA_CONTROLLER_PORT plus 2(i - 1): 9094 and 9095,
9096 and 9097 next to the defaults 9092 and 9093.

How many nodes a cluster has is fixed when its storage is formatted (each node's configuration
names every controller of the quorum), so it is recorded in `stack.json`: a later `dev up` without
`--brokers` runs the same cluster again, and one that asks for another count is refused while its
data exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from distcount_devstack._errors import DevStackError
from distcount_devstack._kafka import KafkaNode, new_cluster_id, replication_factor

KAFKA: Final = "kafka"
# Three tolerates the loss of one node; five, of two. More only costs a development machine.
MAX_BROKERS: Final = 5
# a node's broker and controller ports are the pair after the previous node's
_PORT_STEP: Final = 2
_HOSTS: Final = ("127.0.0.1", "localhost")


def broker_name(index: int) -> str:
    """The process name of node `index` (from 1), as `stack.json` and `dev status` call it."""
    return KAFKA if index == 1 else f"{KAFKA}-{index}"


def is_broker(name: str) -> bool:
    return name in {broker_name(index) for index in range(1, MAX_BROKERS + 1)}


def check_brokers(count: int) -> int:
    """`count`, when it is a number of nodes `dev up` runs."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_BROKERS:
        raise DevStackError(
            f"--brokers must be a whole number from 1 to {MAX_BROKERS}, not {count!r}"
        )
    return count


@dataclass(frozen=True)
class KafkaCluster:
    """`brokers` nodes, numbered from 1, whose data lives under `state_dir`."""

    state_dir: Path
    brokers: int
    port: int
    controller_port: int

    @property
    def nodes(self) -> dict[str, KafkaNode]:
        voters = {index: self._ports(index)[1] for index in range(1, self.brokers + 1)}
        return {
            broker_name(index): KafkaNode(
                self.state_dir / broker_name(index),
                *self._ports(index),
                node_id=index,
                voters=voters,
            )
            for index in voters
        }

    def _ports(self, index: int) -> tuple[int, int]:
        step = _PORT_STEP * (index - 1)
        return self.port + step, self.controller_port + step

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes.values())

    @property
    def replication(self) -> int:
        return replication_factor(self.brokers)

    def serves(self, bootstrap: str) -> bool:
        """Whether every server `bootstrap` names is one of these nodes."""
        ours = {f"{host}:{node.port}" for host in _HOSTS for node in self.nodes.values()}
        return {server.strip() for server in bootstrap.split(",")} <= ours

    def cluster_id(self) -> str:
        """The id the formatted nodes share (a node whose storage was lost joins them again
        with it); a new one when none is formatted."""
        for node in self.nodes.values():
            found = node.cluster_id()
            if found is not None:
                return found
        return new_cluster_id()

    def check_ports(self, taken: dict[int, str]) -> None:
        """Every node's ports exist and are apart from each other and from `taken` (port ->
        the variable that sets it), which the other pieces of the stack listen on."""
        seen = dict(taken)
        for name, node in self.nodes.items():
            for port, what in ((node.port, "broker"), (node.controller_port, "controller")):
                clash = seen.get(port)
                if port > 65535 or clash is not None:
                    why = "is no port" if clash is None else f"is taken by {clash}"
                    raise DevStackError(
                        f"{name}'s {what} port would be {port}, which {why}: with --brokers "
                        f"{self.brokers}, the nodes after the first listen on the ports of "
                        "DISTCOUNT_DEV_KAFKA_PORT and DISTCOUNT_DEV_KAFKA_CONTROLLER_PORT plus "
                        "2, 4, …; move those"
                    )
                seen[port] = f"{name}'s {what} port"


def has_data(state_dir: Path) -> bool:
    """Whether any node, of any cluster size, left its storage in `state_dir`."""
    return any(
        (state_dir / broker_name(index) / "data").exists() for index in range(1, MAX_BROKERS + 1)
    )


def brokers_to_run(asked: int | None, recorded: int | None, state_dir: Path) -> int:
    """How many nodes `dev up` runs: `asked` (`--brokers`), else as many as `recorded` in the
    state, else one (a state folder from before clusters holds one); refused when it is not
    the count of a cluster whose data exists."""
    existing = recorded if recorded is not None else 1
    if asked is None:
        return existing
    check_brokers(asked)
    if asked != existing and has_data(state_dir):
        raise DevStackError(
            f"the local Kafka in {state_dir} is a cluster of {existing} "
            f"{'broker' if existing == 1 else 'brokers'}, and the number of its controllers is "
            f"fixed when it is created: to run {asked}, delete it with `distcount dev down "
            f"--purge` (which deletes the local Kafka and PostgreSQL data) and run `distcount "
            f"dev up --brokers {asked}`; or run `distcount dev up` without --brokers to keep it"
        )
    return asked
