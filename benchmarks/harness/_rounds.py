"""Interleaved repetition: R rounds, each running every side once, so that slow drift (page
cache, the broker's JIT, other load) hits all sides alike; and what to do when a round fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from harness._console import describe, say

R = TypeVar("R")


def side_order(sides: Sequence[str], index: int, *, alternate: bool = False) -> Sequence[str]:
    """The sides of round `index` (from 1): as given, or reversed in even rounds when
    `alternate` (so that each side runs first as often as the other)."""
    return sides if not alternate or index % 2 else list(reversed(sides))


@dataclass
class Rounds(Generic[R]):
    """The results of the rounds played so far, in the order they were measured, and the error
    that stopped the rounds early (then the report holds the results measured before it)."""

    results: list[R] = field(default_factory=list)
    error: str | None = None
    set_aside: int = 0  # rounds played again because other processes disturbed them

    async def play(
        self,
        repeat: int,
        round_: Callable[[int], AsyncIterator[R]],
        *,
        disturbed: Callable[[list[R]], bool] | None = None,
        max_extra: int = 0,
    ) -> Rounds[R]:
        """Rounds 1, 2, ... until `repeat` of them count. `round_(index)` yields each side's
        result as soon as it is measured, so a round that fails half-way keeps its first half.
        A round `disturbed` says was skewed by other processes is played again, at most
        `max_extra` times in all; the caller's `disturbed` marks its results as it sees fit."""
        index = counted = 0
        try:
            while counted < repeat:
                index += 1
                this: list[R] = []
                async for result in round_(index):
                    this.append(result)
                    self.results.append(result)
                if disturbed is not None and self.set_aside < max_extra and disturbed(this):
                    self.set_aside += 1
                    say(f"round {index} was disturbed by other processes: run again")
                else:
                    counted += 1
        except Exception as exc:  # report what was measured, and why the rest was not
            self.error = describe(exc)
            say(f"stopped early: {exc}")
        return self
