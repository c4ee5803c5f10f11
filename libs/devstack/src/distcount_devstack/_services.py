"""distcount's own services (ingress, aggregator) as processes of the local stack."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path

from distcount_devstack._errors import DevStackError
from distcount_devstack._process import (
    ProcessRecord,
    is_alive,
    last_words,
    listens_on,
    spawn,
    wait_started,
)
from distcount_devstack._scale import INGRESS
from distcount_devstack._wait import wait_until
from distcount_metrics import console_blocks

# the end of a log worth reading for the latest metrics block
_METRICS_TAIL_BYTES = 256 * 1024


class ServiceNode:
    """One process of a service: `name` is its own (`ingress`, `ingress-2`), `service` what it
    runs (`ingress`); its log is `<home>/<name>.log`."""

    def __init__(self, name: str, home: Path, service: str | None = None) -> None:
        self.name = name
        self.service = service if service is not None else name
        self.home = home
        self.log = home / f"{name}.log"

    def start(self, extra_env: Mapping[str, str]) -> ProcessRecord:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.service == INGRESS:
            # its port shared with the stack's other ingress processes
            extra_env = {**extra_env, "DISTCOUNT_HTTP_REUSE_PORT": "on"}
        argv = [sys.executable, "-m", "distcount_cli", self.service]
        return spawn(argv, self.log, extra_env=extra_env)

    def metrics_blocks(self) -> list[str]:
        """The console metrics blocks near the end of the service's log, oldest first."""
        try:
            with self.log.open("rb") as log:
                size = log.seek(0, 2)
                log.seek(max(0, size - _METRICS_TAIL_BYTES))
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        return console_blocks(text)

    async def wait_alive(self, record: ProcessRecord, settle_s: float) -> None:
        """A service that fails on its settings or connections exits within its first seconds."""
        if await wait_until(lambda: not is_alive(record), settle_s):
            raise DevStackError(f"the {self.name} exited during startup; {last_words([self.log])}")

    async def wait_http(self, record: ProcessRecord, port: int, timeout_s: float) -> None:
        """Until this very process listens on `port` (which others may share) and the port
        answers."""

        async def ready() -> bool:
            return listens_on(record, port) and await http_ok("127.0.0.1", port, "/health/live")

        await wait_started(
            f"the {self.name}",
            record,
            [self.log],
            ready=ready,
            timeout_s=timeout_s,
            where=f"on port {port}",
        )


async def http_ok(host: str, port: int, path: str, timeout_s: float = 2.0) -> bool:
    """True when GET `path` answers 200."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout_s)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
    parts = status.split()
    return len(parts) >= 2 and parts[1] == b"200"
