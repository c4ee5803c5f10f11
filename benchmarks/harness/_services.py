"""distcount's own services as benchmark sides: `distcount ingress` and `distcount aggregator`,
each a child process on the run's private topic and database, logging in as the services' role."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness._kafka import fresh_topic, settled_total
from harness._process import PYTHON, Child, Line, child_env
from harness._stack import Database, Endpoints, fresh_database
from harness._wrk import LoadResult, Wrk, serve_and_load


@dataclass(frozen=True)
class Private:
    """The private topic and database of one benchmark run, on the stack's endpoints."""

    endpoints: Endpoints
    database: Database
    topic: str

    def env(self, settings: Mapping[str, str]) -> dict[str, str]:
        """This process's environment for a service: the private topic and database (as the
        services' role), plus `settings` (more DISTCOUNT_ variables). The owner's URL is left
        out: the services never need it."""
        env = child_env(
            {
                "DISTCOUNT_KAFKA_BOOTSTRAP": self.endpoints.kafka_bootstrap,
                "DISTCOUNT_DATABASE_URL": self.database.url,
                "DISTCOUNT_TOPIC": self.topic,
                **settings,
            }
        )
        env.pop("DISTCOUNT_MIGRATE_DATABASE_URL", None)
        return env


@contextlib.asynccontextmanager
async def private_stack(
    endpoints: Endpoints, prefix: str, partitions: int
) -> AsyncIterator[Private]:
    """A fresh topic `<prefix>.<stamp>.<random>` and a fresh database `<prefix>_<random>` (dots
    made underscores), both removed on the way out."""
    async with (
        fresh_topic(endpoints.kafka_bootstrap, prefix, partitions) as topic,
        fresh_database(endpoints, prefix.replace(".", "_")) as database,
    ):
        yield Private(endpoints, database, topic)


async def spawn_service(
    command: str,
    env: Mapping[str, str],
    log_path: Path,
    on_line: Callable[[Line], None] | None = None,
) -> Child:
    """`python -m distcount_cli <command>`: what `distcount <command>` runs."""
    return await Child.spawn(
        f"distcount {command}",
        [PYTHON, "-m", "distcount_cli", command],
        env,
        log_path,
        on_line=on_line,
    )


async def load_ingress(
    side: str,
    index: int,
    private: Private,
    wrk: Wrk,
    log_dir: Path,
    *,
    settings: Mapping[str, str] | None = None,
) -> LoadResult:
    """`distcount ingress` under wrk, producing to the private topic, with `settings` (more
    DISTCOUNT_ variables); the records the topic gained are checked against the 2xx answers."""
    log = log_dir / f"run{index}-{side.replace(' ', '-')}.log"

    async def spawn(port: int) -> Child:
        more = {"DISTCOUNT_HTTP_HOST": "127.0.0.1", "DISTCOUNT_HTTP_PORT": str(port)}
        return await spawn_service("ingress", private.env({**more, **(settings or {})}), log)

    async def count_records() -> int:
        return await settled_total(private.endpoints.kafka_bootstrap, private.topic)

    return await serve_and_load(side, index, spawn, wrk, count_records)
