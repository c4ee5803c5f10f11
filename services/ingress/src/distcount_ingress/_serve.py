"""The process: build the publisher and the pool once, serve HTTP with uvicorn on uvloop.

Shutdown (SIGINT, SIGTERM): uvicorn stops accepting and finishes the requests in progress, then
the lifespan's exit flushes the producers and closes the database pool. It must happen there:
uvicorn raises the captured signal again once `serve()` returns.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import uvicorn
import uvloop
from starlette.applications import Starlette

from distcount_config import ConfigError, Settings
from distcount_ingress._app import create_app
from distcount_ingress._protocol import guarded_protocol
from distcount_ingress._publisher import KafkaPublisher
from distcount_ingress._totals import PostgresTotals
from distcount_metrics import ingress_metrics
from distcount_store import Database

log = logging.getLogger("distcount.ingress")

# How long startup waits for Kafka before serving anyway (answering 503 until it connects).
_STARTUP_WAIT_S = 5.0
# Connections to PostgreSQL are opened on first use (min_size=0): the ingress takes increments
# while PostgreSQL is down, and only reads answer 503.
_POOL_MAX_SIZE = 10
_CONNECT_TIMEOUT_S = 5.0
# Under load thousands of requests wait on Kafka at once, each a chain of coroutine frames and
# futures; with the default thresholds (700, 10, 10) the cycle collector walks them over and
# over, which measured as a third of the CPU a request costs. Reference counting frees nearly
# everything a request allocates; the collector is only needed for the odd cycle.
_GC_THRESHOLDS = (50_000, 20, 10)
# file descriptors beside the clients' connections: the listening socket, Kafka's and
# PostgreSQL's connections, logs, and connections closing at any moment
_SPARE_FDS = 256
# an idle keep-alive connection is closed after this (uvicorn's default)
_KEEP_ALIVE_S = 5


async def serve(settings: Settings) -> None:
    """Serve until SIGINT, SIGTERM or cancellation, on the running loop (`run` gives uvloop)."""
    allow_open_files(settings.http_max_connections + _SPARE_FDS)
    publisher = KafkaPublisher(settings)
    metrics = ingress_metrics(settings.metrics)
    metrics.watch_inflight_sends(lambda: publisher.inflight_sends)
    database = await Database.open(
        settings.database_url,
        min_size=0,
        max_size=_POOL_MAX_SIZE,
        connect_timeout_s=_CONNECT_TIMEOUT_S,
    )
    totals = PostgresTotals(database, settings.group_id, settings.topic)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        publisher.start()
        if not await publisher.wait_started(_STARTUP_WAIT_S):
            log.warning("Kafka does not answer yet: increments get 503 until it does")
        try:
            async with metrics.reporting():
                yield
        finally:
            await _close(publisher, database)

    app = create_app(settings, publisher, totals, metrics=metrics, lifespan=lifespan)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
        # httptools, with deadlines for headers and bodies and a cap on connections
        http=guarded_protocol(
            settings.http_header_timeout_s,
            settings.http_body_timeout_s,
            settings.http_max_connections,
        ),
        ws="none",
        timeout_keep_alive=_KEEP_ALIVE_S,
        lifespan="on",
        access_log=False,
        # uvicorn's lines go through the process's own handler, in its format (text or JSON)
        log_config=None,
        log_level=settings.log_level,
        # requests still waiting at shutdown get at most their own deadline, and a little more
        timeout_graceful_shutdown=settings.produce_timeout_ms // 1000 + 5,
    )
    server = uvicorn.Server(config)
    sockets = None
    if settings.http_reuse_port:
        sockets = [shared_socket(settings.http_host, settings.http_port)]
    serving = asyncio.ensure_future(server.serve(sockets=sockets))
    try:
        with collect_garbage_rarely():
            await asyncio.shield(serving)
    except asyncio.CancelledError:
        # cancelled by an embedding program (or a test): shut down as on SIGTERM
        server.should_exit = True
        await serving
        raise
    finally:
        await _close(
            publisher, database
        )  # again, for a startup that failed before the lifespan ran


def shared_socket(host: str, port: int) -> socket.socket:
    """A listening address bound with SO_REUSEPORT (DISTCOUNT_HTTP_REUSE_PORT): every process
    bound so to the same address gets a share of its connections, as the kernel spreads them."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("DISTCOUNT_HTTP_REUSE_PORT=on needs SO_REUSEPORT, which this system lacks")
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def allow_open_files(needed: int) -> None:
    """Raise the soft limit on open files to `needed` if it is lower, within the hard limit;
    a hard limit below it is a startup error, not connections refused by accept() later."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            f"DISTCOUNT_HTTP_MAX_CONNECTIONS={needed - _SPARE_FDS} needs {needed} open files, "
            f"and this process may open at most {hard} (`ulimit -Hn`): lower the setting or "
            "raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    log.info("raised the limit on open files from %d to %d", soft, needed)


@contextmanager
def collect_garbage_rarely() -> Iterator[None]:
    """Run the cyclic collector far less often while serving (the benchmark's bare server too)."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()  # what startup built lives as long as the process: out of the collector's way
    gc.set_threshold(*_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def _close(publisher: KafkaPublisher, database: Database) -> None:
    await publisher.close()
    await database.close()


def run(settings: Settings) -> None:
    """Block in `serve(settings)` on a uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings))
