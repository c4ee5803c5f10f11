"""A flush that drops a large state hands its memory back: the decoder's memory of values is
forgotten and the C heap trimmed; a small flush, or one that failed, does neither."""

from __future__ import annotations

import os
from typing import Any

import pytest

from distcount_aggregator import DeadLetters, PartitionState
from distcount_aggregator import _checkpoint as checkpoint
from distcount_metrics import AggregatorMetrics
from distcount_store import DatabaseUnavailable, Fenced, PartitionFlush, Written


class _Consumer:
    async def commit(self, offsets: Any) -> None:
        return None

    def assignment(self) -> set[Any]:
        return set()


class _Database:
    def __init__(self, outcome: Written | Fenced | BaseException | None = None) -> None:
        self.outcome = outcome
        self.flushes: list[PartitionFlush] = []

    async def flush(self, flush: PartitionFlush) -> Fenced | Written:
        self.flushes.append(flush)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        if self.outcome is None:
            return Written(sum(len(bucket) for bucket in flush.deltas.values()))
        return self.outcome


def _state(partition: int, entries: int) -> PartitionState:
    state = PartitionState(partition, stored_offset=0)
    state.deltas = {0: {f"k{i}": 1 for i in range(entries)}}
    state.folded_until = state.position = entries
    return state


@pytest.fixture
def released(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def release_memory() -> bool:
        calls.append("trim")
        return True

    monkeypatch.setattr(checkpoint, "RELEASE_AFTER_ENTRIES", 10)
    monkeypatch.setattr(checkpoint, "release_memory", release_memory)
    return calls


def _checkpointer(database: _Database, calls: list[str]) -> checkpoint.Checkpointer:
    return checkpoint.Checkpointer(
        "g",
        _Consumer(),
        database,  # type: ignore[arg-type]
        DeadLetters(None, "dead"),
        AggregatorMetrics(),
        forget=lambda: calls.append("forget"),
    )


async def test_a_flush_dropping_a_large_state_forgets_then_trims(released: list[str]) -> None:
    checkpointer = _checkpointer(_Database(), released)
    # two partitions that add up to the bound
    states = [_state(0, 6), _state(1, 4)]
    assert await checkpointer.flush(states, "t", "memory")
    assert released == ["forget", "trim"]
    assert all(not s.deltas for s in states)
    await checkpointer.close()


async def test_a_small_flush_releases_nothing(released: list[str]) -> None:
    checkpointer = _checkpointer(_Database(), released)
    assert await checkpointer.flush([_state(0, 9)], "t", "tick")
    assert released == []
    await checkpointer.close()


async def test_a_fenced_flush_drops_its_state_and_releases_it(released: list[str]) -> None:
    checkpointer = _checkpointer(_Database(Fenced(None)), released)
    state = _state(0, 10)
    assert await checkpointer.flush([state], "t", "tick")
    assert not state.deltas
    assert released == ["forget", "trim"]
    await checkpointer.close()


async def test_a_failed_flush_keeps_its_state_and_releases_nothing(released: list[str]) -> None:
    checkpointer = _checkpointer(_Database(DatabaseUnavailable("PostgreSQL is down")), released)
    state = _state(0, 10)
    assert not await checkpointer.flush([state], "t", "tick")
    assert state.entries == 10
    assert released == []
    await checkpointer.close()


def test_release_memory_asks_glibc_and_nothing_else() -> None:
    glibc = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    assert checkpoint.release_memory() is glibc
