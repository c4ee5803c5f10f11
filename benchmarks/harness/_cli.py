"""The command line every benchmark shares: its options, their checks, and how it is run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

import uvloop


def parser(description: str, *, repeat: int, repeat_help: str) -> argparse.ArgumentParser:
    """A parser with the options of every interleaved benchmark: --repeat and --wait-quiet-s."""
    new = argparse.ArgumentParser(description=description)
    new.add_argument("--repeat", type=int, default=repeat, help=repeat_help)
    new.add_argument(
        "--wait-quiet-s",
        type=float,
        default=60.0,
        help="before each run, wait up to this long for other processes to leave the CPU idle",
    )
    return new


def at_least(
    parser: argparse.ArgumentParser, args: argparse.Namespace, minimum: int, *names: str
) -> None:
    """Exit with a usage error unless every option `names` (as spelt on the command line) is
    at least `minimum`."""
    low = [name for name in names if getattr(args, name[2:].replace("-", "_")) < minimum]
    if low:
        parser.error(f"{', '.join(low)} must be at least {minimum}")


def run(main: Callable[[], Coroutine[Any, Any, int]], *, on_uvloop: bool = False) -> NoReturn:
    """Run `main` to its exit status: 0 PASS, 1 FAIL, 2 when it could not measure (an error
    before any run, such as no broker, is printed with its traceback: exit status 1 would read
    as FAIL), 130 after Ctrl-C (once the topic and the database of the run are removed: the
    context managers unwind on the way out)."""
    loop_factory = uvloop.new_event_loop if on_uvloop else None
    status = 130
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as r:
        try:
            status = r.run(main())
        except Exception:
            traceback.print_exc()
            status = 2
    raise SystemExit(status)
