"""What `distcount dev status` says of each piece of the stack: running, and answering."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from distcount_devstack._process import ProcessRecord, is_alive


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    endpoint: str
    origin: str  # "local" (started by `dev up`) or "external"
    problems: tuple[str, ...] = ()  # what makes it unhealthy, when it can tell


async def component_status(
    name: str,
    record: ProcessRecord | None,
    external: bool,
    endpoint: str,
    probe: Callable[[], Awaitable[bool]],
) -> ComponentStatus:
    """`external`: one the environment points at, whose process is not the stack's."""
    if external:
        record = None
    running = external or (record is not None and is_alive(record))
    return ComponentStatus(
        name=name,
        pid=record.pid if record is not None and running else None,
        running=running,
        healthy=running and await probe(),
        endpoint=endpoint,
        origin="external" if external else "local",
    )


async def always() -> bool:
    """The probe of a piece that serves nothing to ask: running is healthy."""
    return True
