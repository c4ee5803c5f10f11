"""`dev up --brokers N`: each node's configuration and ports, the count a state folder keeps,
and what is refused before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distcount_config import load, load_dev
from distcount_devstack import DevStackError, Stack
from distcount_devstack._cluster import (
    MAX_BROKERS,
    KafkaCluster,
    broker_name,
    brokers_to_run,
    check_brokers,
    is_broker,
)
from distcount_devstack._kafka import KafkaNode
from distcount_devstack._state import StackState


def _properties(node: KafkaNode) -> dict[str, str]:
    node.write_config()
    lines = node.config.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def test_nodes_follow_the_first_in_steps_of_two_ports(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, 3, 9092, 9093)
    nodes = cluster.nodes
    assert list(nodes) == ["kafka", "kafka-2", "kafka-3"]
    assert [(n.port, n.controller_port) for n in nodes.values()] == [
        (9092, 9093),
        (9094, 9095),
        (9096, 9097),
    ]
    assert [n.home for n in nodes.values()] == [tmp_path / name for name in nodes]
    assert cluster.bootstrap == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"


def test_each_node_is_one_voter_of_the_quorum_and_keeps_three_copies(tmp_path: Path) -> None:
    nodes = list(KafkaCluster(tmp_path, 3, 9092, 9093).nodes.values())
    seen = [_properties(node) for node in nodes]
    assert [p["node.id"] for p in seen] == ["1", "2", "3"]
    voters = "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    assert {p["controller.quorum.voters"] for p in seen} == {voters}
    for properties in seen:
        assert properties["process.roles"] == "broker,controller"
        assert properties["offsets.topic.replication.factor"] == "3"
        assert properties["transaction.state.log.replication.factor"] == "3"
        assert properties["transaction.state.log.min.isr"] == "2"
        assert properties["default.replication.factor"] == "3"
        assert properties["min.insync.replicas"] == "2"
    assert seen[1]["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert seen[1]["log.dirs"] == str(tmp_path / "kafka-2" / "data")


def test_a_single_node_is_configured_as_it_always_was(tmp_path: Path) -> None:
    alone = _properties(KafkaNode(tmp_path / "kafka", 9092, 9093))
    assert alone["node.id"] == "1"
    assert alone["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert alone["offsets.topic.replication.factor"] == "1"
    assert alone["transaction.state.log.min.isr"] == "1"
    assert alone["min.insync.replicas"] == "1"
    assert _properties(KafkaCluster(tmp_path, 1, 9092, 9093).nodes["kafka"]) == alone


def test_five_nodes_keep_three_copies() -> None:
    properties = _properties(KafkaCluster(Path("/nonexistent"), 5, 9092, 9093).nodes["kafka-5"])
    assert properties["default.replication.factor"] == "3"
    assert properties["min.insync.replicas"] == "2"
    assert properties["controller.quorum.voters"].count("@") == 5


def test_nodes_share_the_cluster_id_of_the_formatted_one(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, 3, 9092, 9093)
    fresh = cluster.cluster_id()
    assert fresh != cluster.cluster_id()  # none formatted: a new one each time
    data = cluster.nodes["kafka-2"].data_dir
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("version=1\ncluster.id=Abc123\nnode.id=2\n")
    assert cluster.cluster_id() == "Abc123"


def test_the_stacks_own_nodes_are_not_another_kafka(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, 3, 9092, 9093)
    assert cluster.serves("127.0.0.1:9092")
    assert cluster.serves("localhost:9094, 127.0.0.1:9096")
    assert cluster.serves(cluster.bootstrap)
    assert not cluster.serves("127.0.0.1:9098")
    assert not cluster.serves("127.0.0.1:9092,kafka.example:9092")


def test_ports_that_clash_are_refused_naming_what_moves_them(tmp_path: Path) -> None:
    KafkaCluster(tmp_path, 3, 9092, 9093).check_ports({5432: "x", 3333: "y"})
    with pytest.raises(DevStackError, match="broker port would be 9094, which is taken by kafka'"):
        KafkaCluster(tmp_path, 3, 9092, 9094).check_ports({})
    with pytest.raises(DevStackError, match="taken by DISTCOUNT_DEV_POSTGRES_PORT"):
        KafkaCluster(tmp_path, 2, 5430, 5431).check_ports({5432: "DISTCOUNT_DEV_POSTGRES_PORT"})
    with pytest.raises(DevStackError, match="65536, which is no port"):
        KafkaCluster(tmp_path, 2, 65534, 65000).check_ports({})


@pytest.mark.parametrize("count", [0, MAX_BROKERS + 1, -1, True])
def test_a_count_out_of_bounds_is_refused(count: int) -> None:
    with pytest.raises(DevStackError, match=f"from 1 to {MAX_BROKERS}"):
        check_brokers(count)


def test_names() -> None:
    assert [broker_name(i) for i in (1, 2, 3)] == ["kafka", "kafka-2", "kafka-3"]
    assert is_broker("kafka")
    assert is_broker("kafka-3")
    assert not is_broker("kafka-1")
    assert not is_broker("postgres")
    assert not is_broker("ingress-2")


def test_the_count_comes_from_the_option_else_the_state_else_one(tmp_path: Path) -> None:
    assert brokers_to_run(None, None, tmp_path) == 1
    assert brokers_to_run(None, 3, tmp_path) == 3
    assert brokers_to_run(3, None, tmp_path) == 3
    # no data yet: whatever was recorded may change
    assert brokers_to_run(1, 3, tmp_path) == 1


def test_another_count_is_refused_once_the_data_exists(tmp_path: Path) -> None:
    (tmp_path / "kafka-2" / "data").mkdir(parents=True)
    assert brokers_to_run(3, 3, tmp_path) == 3
    assert brokers_to_run(None, 3, tmp_path) == 3
    with pytest.raises(DevStackError, match="is a cluster of 3 brokers") as refused:
        brokers_to_run(1, 3, tmp_path)
    assert "dev down --purge" in str(refused.value)


def test_a_state_folder_from_before_clusters_holds_one_broker(tmp_path: Path) -> None:
    (tmp_path / "kafka" / "data").mkdir(parents=True)
    assert brokers_to_run(None, None, tmp_path) == 1
    with pytest.raises(DevStackError, match="is a cluster of 1 broker,"):
        brokers_to_run(3, None, tmp_path)


def test_the_state_records_the_count(tmp_path: Path) -> None:
    state = StackState(tmp_path)
    state.save()
    assert "kafka_brokers" not in json.loads(state.file.read_text())
    assert StackState.load(tmp_path).kafka_brokers is None
    state.kafka_brokers = 1
    state.save()
    assert json.loads(state.file.read_text())["format"] == 2
    state.kafka_brokers = 3
    state.save()
    # a distcount from before clusters refuses the folder rather than run node 1 alone
    assert json.loads(state.file.read_text())["format"] == 3
    assert StackState.load(tmp_path).kafka_brokers == 3


@pytest.mark.parametrize("value", ["3", 0, True, 2.5])
def test_a_broken_count_is_refused(tmp_path: Path, value: object) -> None:
    (tmp_path / "stack.json").write_text(
        json.dumps({"format": 3, "processes": {}, "kafka_brokers": value})
    )
    with pytest.raises(DevStackError, match="kafka_brokers"):
        StackState.load(tmp_path)


async def test_status_has_a_row_per_node(tmp_path: Path) -> None:
    # nothing listens on these: each row is stopped at once
    environ = {
        "DISTCOUNT_DEV_DIR": str(tmp_path),
        "DISTCOUNT_DEV_KAFKA_PORT": "1",
        "DISTCOUNT_DEV_POSTGRES_PORT": "2",
    }
    stack = Stack(load(environ), load_dev(environ), say=lambda _: None)
    state = StackState(tmp_path)
    state.kafka_brokers = 3
    state.save()
    rows = await stack.status()
    assert [row.name for row in rows][:4] == ["kafka", "kafka-2", "kafka-3", "postgres"]
    assert [row.endpoint for row in rows][:3] == ["127.0.0.1:1", "127.0.0.1:3", "127.0.0.1:5"]
    assert not any(row.running for row in rows)
    assert stack.kafka_bootstrap == "127.0.0.1:1,127.0.0.1:3,127.0.0.1:5"


async def test_brokers_with_an_external_kafka_are_refused(tmp_path: Path) -> None:
    environ = {
        "DISTCOUNT_DEV_DIR": str(tmp_path),
        "DISTCOUNT_KAFKA_BOOTSTRAP": "kafka.example:9092",
    }
    stack = Stack(load(environ), load_dev(environ), say=lambda _: None)
    with pytest.raises(DevStackError, match="--brokers sets the nodes of the stack's own Kafka"):
        await stack.up(brokers=3)


def test_the_stacks_own_bootstrap_is_no_external_kafka(tmp_path: Path) -> None:
    state = StackState(tmp_path)
    state.kafka_brokers = 3
    state.save()
    environ = {
        "DISTCOUNT_DEV_DIR": str(tmp_path),
        "DISTCOUNT_KAFKA_BOOTSTRAP": "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096",
    }
    stack = Stack(load(environ), load_dev(environ), say=lambda _: None)
    assert not stack.external_kafka
