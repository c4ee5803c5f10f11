"""`distcount`, the one console script; it reads the environment once, through distcount_config.

`distcount dev` needs the local stack (distcount-devstack, the `dev` extra), which a production
install leaves out: it is imported only when a `dev` command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import sys
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from distcount_cli import _client, _compact, _logs, _operator, _reads, _token
from distcount_config import DevSettings, Settings, load, load_dev
from distcount_core import DistcountError
from distcount_store import find_migrations, migrate, service_role

if TYPE_CHECKING:
    from distcount_devstack import Stack

EXIT_ERROR = 1
EXIT_BAD_INPUT = 2  # as argparse exits for arguments it cannot parse
EXIT_UNHEALTHY = 3
SERVICES = ("ingress", "aggregator")
# the most processes of one service `dev up` runs (as distcount_devstack's MAX_PROCESSES)
MAX_DEV_PROCESSES = 16
NO_DEV_STACK = (
    "`distcount dev` runs the local stack, which this install leaves out: install the `dev` "
    "extra (pip install 'distcount-cli[dev]'), or, in a checkout, the `dev` group (`uv sync`, "
    "which `uv run` does unless given --no-dev)"
)

log = logging.getLogger("distcount")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distcount",
        description="Counters at very high write rates: HTTP and Kafka in, PostgreSQL out.",
    )
    parser.add_argument("--version", action="version", version=f"distcount {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser(
        "dev", help="the local stack: Kafka, PostgreSQL and the services (the `dev` extra)"
    )
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    up = dev_commands.add_parser("up", help="start whatever is not running yet, then migrate")
    up.add_argument(
        "--ingress-workers",
        type=_process_count,
        metavar="N",
        help="ingress processes, sharing DISTCOUNT_HTTP_PORT (1 to "
        f"{MAX_DEV_PROCESSES}; default: as many as run now, else 1)",
    )
    up.add_argument(
        "--aggregators",
        type=_process_count,
        metavar="M",
        help=f"aggregator processes, in the one consumer group (1 to {MAX_DEV_PROCESSES}; "
        "default: as many as run now, else 1)",
    )
    up.add_argument(
        "--brokers",
        type=int,
        metavar="B",
        help="Kafka nodes, each a broker and a controller (1 to 5; 3 survives losing one); "
        "fixed once the local Kafka exists (default: as it was made, else 1)",
    )
    down = dev_commands.add_parser("down", help="stop what `up` started; the data is kept")
    down.add_argument("--purge", action="store_true", help="also delete the state folder")
    status = dev_commands.add_parser("status", help="each process with its pid and health")
    status.add_argument(
        "--env", action="store_true", help="print export lines for every endpoint instead"
    )
    metrics = dev_commands.add_parser(
        "metrics", help="the latest metrics the stack's ingress and aggregator printed"
    )
    metrics.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new ones until Ctrl-C"
    )

    commands.add_parser(
        "migrate",
        help="apply the SQL migrations that are missing, then grant the services' role its "
        "privileges",
    )
    commands.add_parser("ingress", help="run the HTTP ingress (port DISTCOUNT_HTTP_PORT)")
    commands.add_parser("aggregator", help="run one aggregator of the consumer group")
    _add_reads(commands)
    incr = commands.add_parser("incr", help="increment a counter (produced to Kafka directly)")
    incr.add_argument("key")
    incr.add_argument("value", nargs="?", default="1", help="a non-zero integer (default 1)")
    commands.add_parser(
        "stalls", help="partitions whose counting stopped at a batch that cannot be decoded"
    )
    skip = commands.add_parser(
        "skip",
        help="move a stalled partition past the batch it cannot decode (recorded, never silent)",
    )
    skip.add_argument("partition", type=int, help="the stalled partition")
    skip.add_argument(
        "--to", dest="to_offset", type=int, required=True, help="the first offset to count again"
    )
    skip.add_argument(
        "--reason", required=True, help="why: kept with the skipped range in skipped_ranges"
    )
    _compact.add_parser(commands)
    token = commands.add_parser("token", help="bearer tokens for the ingress's access control")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    token_commands.add_parser("new", help="print a fresh random token and the hash of it")
    return parser


def _process_count(text: str) -> int:
    """How many processes of a service `dev up` runs (the local stack checks the bound too)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= MAX_DEV_PROCESSES:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_DEV_PROCESSES}, not {count}")
    return count


def _add_reads(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The commands that read through the ingress's HTTP API (DISTCOUNT_INGRESS_URL)."""
    get = commands.add_parser("get", help="print a counter's total (through the ingress)")
    get.add_argument("key")
    history = commands.add_parser(
        "history", help="a counter's sums per step over a time range (through the ingress)"
    )
    history.add_argument("key")
    history.add_argument(
        "--from",
        dest="start",
        type=_reads.moment,
        metavar="TIME",
        help="an ISO 8601 time with its zone, or epoch milliseconds (default: an hour before --to)",
    )
    history.add_argument(
        "--to", dest="end", type=_reads.moment, metavar="TIME", help="as --from (default: now)"
    )
    history.add_argument(
        "--step", metavar="DURATION", help="such as 1m, 1h, 1d (units ms, s, m, h, d; default 1m)"
    )
    top = commands.add_parser(
        "top", help="the counters with the largest sums over a recent window (through the ingress)"
    )
    top.add_argument("--window", metavar="DURATION", help="such as 5m or 1h (default 5m)")
    top.add_argument("--limit", type=int, metavar="N", help="how many (1 to 100, default 10)")
    for command in (get, history, top):
        command.add_argument(
            "--json", action="store_true", help="print one JSON object, as the HTTP API answers"
        )


class DevStackMissing(DistcountError):
    """`distcount dev` was asked of an install without the local stack."""


def _version() -> str:
    try:
        return version("distcount-cli")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(version unknown: distcount-cli is not installed)"


def _dev_stack(settings: Settings, dev: DevSettings) -> Stack:
    """The local stack, or the error that says how to install it."""
    try:
        from distcount_devstack import Stack  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if exc.name != "distcount_devstack":
            raise  # installed, but broken: its own trace says more than a message could
        raise DevStackMissing(NO_DEV_STACK) from None
    return Stack(settings, dev, say=_say)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    # readiness probes expect refused connections while a broker starts; the client logs each
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    settings: Settings | None = None
    try:
        settings = load()
        _configure_logging(args.command, settings)
        sys.exit(_run(args, settings))
    except DistcountError as exc:  # every error of the project's own: a message, no trace
        _report(settings, f"error: {exc}")
        # the ingress refused an argument: as argparse exits for one it cannot parse
        sys.exit(EXIT_BAD_INPUT if _invalid_input(exc) else EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)


def _invalid_input(exc: DistcountError) -> bool:
    """Whether the ingress refused an argument of the command. The client is imported only by
    the commands that read through it (see _reads), so none other can meet its errors."""
    client = sys.modules.get("distcount_client")
    return client is not None and isinstance(exc, client.InvalidInput)


def _say(line: str) -> None:
    print(line, flush=True)


def _report(settings: Settings | None, problem: str) -> None:
    """What ends the command: the CLI's own line on standard error, or, when the logs are JSON,
    a log record, so that a log pipeline reads nothing but JSON."""
    if settings is not None and settings.log_format == "json":
        log.error(problem)
    else:
        print(f"distcount: {_logs.hide(problem)}", file=sys.stderr)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "dev":
        return _dev(args, _dev_stack(settings, load_dev()))
    if args.command in SERVICES:
        return _serve(args.command, settings)
    if args.command == "token":
        return _token.new()
    return asyncio.run(_command(args, settings))


async def _command(args: argparse.Namespace, settings: Settings) -> int:
    """The commands that run once and end: each one coroutine."""
    match args.command:
        case "get" | "history" | "top":
            return await _read(args, settings)
        case "incr":
            return await _client.incr(settings, args.key, args.value)
        case "stalls":
            return await _operator.stalls(settings)
        case "skip":
            return await _operator.skip(settings, args.partition, args.to_offset, args.reason)
        case "compact":
            return await _compact.run(args, settings)
    return await _migrate(settings)


async def _read(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "history":
        return await _reads.history(
            settings, args.key, start=args.start, end=args.end, step=args.step, as_json=args.json
        )
    if args.command == "top":
        return await _reads.top(settings, args.window, args.limit, as_json=args.json)
    return await _reads.get(settings, args.key, as_json=args.json)


def _serve(service: str, settings: Settings) -> int:
    # each process imports only the service it runs (the aggregator needs no HTTP stack)
    if service == "ingress":
        import distcount_ingress  # noqa: PLC0415

        distcount_ingress.run(settings)
        return 0
    import distcount_aggregator  # noqa: PLC0415

    try:
        distcount_aggregator.run(settings)
    except distcount_aggregator.AggregatorError as exc:
        _report(settings, f"aggregator stopped: {exc}")
        return EXIT_ERROR
    return 0


def _dev(args: argparse.Namespace, stack: Stack) -> int:
    if args.dev_command == "up":
        asyncio.run(
            stack.up(
                ingress_workers=args.ingress_workers,
                aggregators=args.aggregators,
                brokers=args.brokers,
            )
        )
        print("the stack is up; `distcount dev status --env` prints its endpoints")
        return 0
    if args.dev_command == "down":
        asyncio.run(stack.down(purge=args.purge))
        return 0
    if args.dev_command == "metrics":
        return _print_metrics(stack, follow=args.follow)
    if args.env:
        print("\n".join(stack.env_lines()))
        return 0
    return _print_status(stack)


def _print_status(stack: Stack) -> int:
    rows = asyncio.run(stack.status())
    wide = max([10, *(len(row.name) for row in rows)])  # `aggregator-12` with the rest
    print(f"{'NAME':<{wide}} {'PID':>8}  {'STATE':<12} {'ORIGIN':<9} ENDPOINT")
    for row in rows:
        state = "healthy" if row.healthy else "unhealthy" if row.running else "stopped"
        pid = str(row.pid) if row.pid is not None else "-"
        print(f"{row.name:<{wide}} {pid:>8}  {state:<12} {row.origin:<9} {row.endpoint}")
    for row in rows:
        for problem in row.problems:
            print(f"{row.name}: {problem}")
    if any(row.problems for row in rows):
        print("see the README's Stalled partitions for what to do")
    print(f"state folder: {stack.dev.state_dir}")
    return 0 if all(row.healthy for row in rows) else EXIT_UNHEALTHY


def _print_metrics(stack: Stack, follow: bool) -> int:
    last: dict[str, str] = {}
    missing: set[str] = set()
    for round_ in itertools.count():
        for name, node in stack.services.items():
            blocks = node.metrics_blocks()
            if not blocks:
                missing.add(name)
                continue
            missing.discard(name)
            # what was printed last, and everything after it (or only the latest, at first)
            start = blocks.index(last[name]) + 1 if last.get(name) in blocks else len(blocks) - 1
            for block in blocks[start:]:
                print(block, flush=True)
            last[name] = blocks[-1]
        if round_ == 0:
            for name in sorted(missing):
                print(
                    f"the {name} has printed no metrics in {stack.services[name].log}: "
                    "`distcount dev up` runs it with DISTCOUNT_METRICS=console unless "
                    "DISTCOUNT_METRICS is set, and it prints every DISTCOUNT_METRICS_INTERVAL_MS",
                    file=sys.stderr,
                    flush=True,
                )
        if not follow:
            break
        time.sleep(1.0)
    return EXIT_ERROR if missing else 0


async def _migrate(settings: Settings) -> int:
    database_url, migrate_database_url = settings.database_url, settings.migrate_database_url
    dev = load_dev()
    if not dev.external_postgres:
        try:
            stack = _dev_stack(settings, dev)
        except DevStackMissing:
            pass  # no local stack installed: its default URLs are the settings' own
        else:
            # the local stack's database: as its superuser, which is the services' role itself
            # in a state folder made before the roles were split
            database_url, migrate_database_url = stack.database_url, stack.migrate_database_url
    role = service_role(database_url, migrate_database_url)
    applied = await migrate(
        migrate_database_url, find_migrations(settings.migrations_dir), grant_to=role
    )
    for migration in applied:
        print(f"applied {migration.version}_{migration.name}")
    if not applied:
        print("already up to date")
    if role is not None:
        print(f"granted role {role} what the services need")
    return 0


def _configure_logging(command: str, settings: Settings) -> None:
    service = command if command in SERVICES else "cli"
    _logs.configure(service, settings.log_format)
    log.setLevel(settings.log_level.upper())
    if service != "cli":
        # the Kafka client reports every refused connection while a broker is away; warnings
        # suffice (the commands that run once keep it quiet: readiness probes expect refusals)
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
