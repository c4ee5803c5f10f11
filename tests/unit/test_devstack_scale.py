"""`dev up --ingress-workers N --aggregators M`: the counts it accepts, the processes' names,
what it reads back from the state folder, and the shared port the ingress processes listen on."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from distcount_cli._main import MAX_DEV_PROCESSES, _parser
from distcount_config import load, load_dev
from distcount_devstack import DevStackError, Stack
from distcount_devstack._process import ProcessRecord, listens_on, port_in_use
from distcount_devstack._scale import (
    MAX_PROCESSES,
    Scale,
    check_count,
    extra_names,
    instance_names,
    parse_instance,
    recorded_counts,
    wanted_names,
)
from distcount_ingress._serve import shared_socket

# -- names -------------------------------------------------------------------------------------


def test_the_first_process_keeps_the_services_own_name() -> None:
    assert instance_names("ingress", 1) == ["ingress"]
    assert instance_names("aggregator", 3) == ["aggregator", "aggregator-2", "aggregator-3"]
    assert wanted_names({"ingress": 2, "aggregator": 1}) == ["ingress", "ingress-2", "aggregator"]


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("ingress", ("ingress", 1)),
        ("ingress-2", ("ingress", 2)),
        ("aggregator-16", ("aggregator", 16)),
        ("kafka", None),
        ("postgres", None),
        ("ingress-1", None),  # the first is `ingress`
        ("ingress-0", None),
        ("ingress-02", None),
        ("ingress-x", None),
        ("ingress-", None),
        ("compactor-2", None),
    ],
)
def test_a_process_name_is_read_back(name: str, parsed: tuple[str, int] | None) -> None:
    assert parse_instance(name) == parsed


def test_the_counts_recorded_are_the_highest_index_of_each_service() -> None:
    recorded = ["kafka", "postgres", "ingress", "ingress-3", "aggregator"]
    assert recorded_counts(recorded) == {"ingress": 3, "aggregator": 1}
    assert recorded_counts(["kafka"]) == {"ingress": 0, "aggregator": 0}


# -- counts ------------------------------------------------------------------------------------


def test_counts_left_unset_are_those_that_run_else_one() -> None:
    assert Scale().counts([]) == {"ingress": 1, "aggregator": 1}
    running = ["ingress", "ingress-2", "aggregator", "aggregator-2", "aggregator-3"]
    assert Scale().counts(running) == {"ingress": 2, "aggregator": 3}
    assert Scale(aggregators=1).counts(running) == {"ingress": 2, "aggregator": 1}
    assert Scale(4, 2).counts(running) == {"ingress": 4, "aggregator": 2}


def test_the_processes_beyond_the_counts_are_stopped() -> None:
    recorded = ["kafka", "aggregator-3", "ingress", "aggregator", "aggregator-2", "ingress-2"]
    assert extra_names(recorded, {"ingress": 1, "aggregator": 1}) == [
        "aggregator-2",
        "aggregator-3",
        "ingress-2",
    ]
    assert extra_names(recorded, {"ingress": 2, "aggregator": 3}) == []


@pytest.mark.parametrize("count", [0, -1, MAX_PROCESSES + 1, True])
def test_a_count_out_of_bounds_is_refused(count: int) -> None:
    with pytest.raises(DevStackError, match=r"--aggregators must be a whole number from 1 to 16"):
        Scale(aggregators=count)
    with pytest.raises(DevStackError, match=r"--ingress-workers must be"):
        check_count("ingress", count)


def test_the_bounds_are_the_commands_own() -> None:
    assert MAX_DEV_PROCESSES == MAX_PROCESSES
    assert check_count("ingress", 1) == 1
    assert check_count("ingress", MAX_PROCESSES) == MAX_PROCESSES


def test_the_command_reads_the_counts() -> None:
    plain = _parser().parse_args(["dev", "up"])
    assert (plain.ingress_workers, plain.aggregators) == (None, None)
    scaled = _parser().parse_args(["dev", "up", "--ingress-workers", "3", "--aggregators", "2"])
    assert (scaled.ingress_workers, scaled.aggregators) == (3, 2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ingress-workers", "0"], "argument --ingress-workers: must be from 1 to 16, not 0"),
        (["--aggregators", "17"], "argument --aggregators: must be from 1 to 16, not 17"),
        (["--aggregators", "two"], "argument --aggregators: not a whole number: 'two'"),
    ],
)
def test_the_command_refuses_counts_out_of_bounds(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(["dev", "up", *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# -- the stack -----------------------------------------------------------------------------------


def _stack(state: Path) -> Stack:
    environ = {"DISTCOUNT_DEV_DIR": str(state)}
    return Stack(load(environ), load_dev(environ), say=lambda _: None)


def test_up_refuses_a_bad_count_before_it_starts_anything(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with pytest.raises(DevStackError, match="--ingress-workers"):
        asyncio.run(_stack(state).up(ingress_workers=0))
    assert not state.exists()


def test_the_service_processes_are_those_recorded(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    assert list(stack.services) == ["ingress", "aggregator"]
    me = ProcessRecord.of(os.getpid()).to_json()
    processes = dict.fromkeys(("kafka", "ingress", "ingress-3", "aggregator"), me)
    (tmp_path / "stack.json").write_text(json.dumps({"format": 2, "processes": processes}))
    services = stack.services
    assert list(services) == ["ingress", "ingress-2", "ingress-3", "aggregator"]
    assert services["ingress-2"].service == "ingress"
    assert services["ingress-2"].log == tmp_path / "ingress-2" / "ingress-2.log"


def test_up_refuses_more_ingress_processes_on_a_port_that_is_not_shared(tmp_path: Path) -> None:
    """An ingress from before --ingress-workers listens without SO_REUSEPORT: `dev up` cannot
    add one, and says what to do before it starts anything."""
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        port = int(plain.getsockname()[1])
        # this process stands for every server of the stack, the ingress holding the port
        me = ProcessRecord.of(os.getpid()).to_json()
        processes = dict.fromkeys(("kafka", "postgres", "ingress", "aggregator"), me)
        (tmp_path / "stack.json").write_text(json.dumps({"format": 2, "processes": processes}))
        environ = {"DISTCOUNT_DEV_DIR": str(tmp_path), "DISTCOUNT_HTTP_PORT": str(port)}
        stack = Stack(load(environ), load_dev(environ), say=lambda _: None)

        with pytest.raises(DevStackError, match=rf"port {port} on 127.0.0.1 cannot be shared"):
            asyncio.run(stack.up(ingress_workers=2))
    assert json.loads((tmp_path / "stack.json").read_text())["processes"] == processes


# -- the shared port -----------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, int]]:
    """A socket listening on a free port of 127.0.0.1, not shared (no SO_REUSEPORT)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock, int(sock.getsockname()[1])


def test_a_port_held_without_sharing_cannot_be_joined(listener: tuple[socket.socket, int]) -> None:
    _, port = listener
    assert port_in_use(port)
    assert port_in_use(port, shared=True)


def test_ingress_sockets_share_their_port() -> None:
    """Two servers on the socket DISTCOUNT_HTTP_REUSE_PORT gives the ingress (as `dev up` runs
    each ingress process) listen on one port; only another that shares it may join them."""

    async def two_servers() -> tuple[int, bool, bool, bool]:
        loop = asyncio.get_running_loop()
        first = await loop.create_server(asyncio.Protocol, sock=shared_socket("127.0.0.1", 0))
        port = int(first.sockets[0].getsockname()[1])
        second = await loop.create_server(asyncio.Protocol, sock=shared_socket("127.0.0.1", port))
        me = ProcessRecord.of(os.getpid())
        try:
            return port, listens_on(me, port), port_in_use(port, shared=True), port_in_use(port)
        finally:
            first.close()
            second.close()

    with asyncio.Runner() as runner:
        port, listening, joinable_refused, plain_refused = runner.run(two_servers())
    assert listening
    assert not joinable_refused
    assert plain_refused
    assert not listens_on(ProcessRecord.of(os.getpid()), port)
