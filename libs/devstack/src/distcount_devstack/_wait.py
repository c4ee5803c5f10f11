"""The one way the local stack waits for something (a port, a process, a server's answer): look,
and look again after a pause that grows, until a deadline."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Final

from distcount_core import Backoff

# Most waits end within a second (a process that stops, a server on a warm machine): look often
# at first, then no more than once a second.
_FIRST_PAUSE_S: Final = 0.05
_LONGEST_PAUSE_S: Final = 1.0


async def wait_until(
    done: Callable[[], bool | Awaitable[bool]],
    timeout_s: float,
    *,
    give_up: Callable[[], None] | None = None,
) -> bool:
    """Whether `done` said yes within `timeout_s`. It is asked at once, then after each pause;
    `give_up`, called before each look, raises when waiting on is pointless (the process
    awaited has exited)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pauses = Backoff(_FIRST_PAUSE_S, _LONGEST_PAUSE_S, factor=1.5, jitter=0.0)
    while True:
        if give_up is not None:
            give_up()
        answer = done()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return True
        left = deadline - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(pauses.next_s(), left))
