"""`distcount compact`: merge old rows of the event log into coarser buckets (DISTCOUNT_ROLLUP),
once or, with `--schedule`, every DISTCOUNT_COMPACT_INTERVAL_MS, showing its progress.

The work itself is `distcount_store.compaction`; this module runs it, reports it, and stops it
between two chunks on SIGINT or SIGTERM (each chunk is one transaction, so stopping anywhere else
would only throw a chunk's work away).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from distcount_config import RollupTier, Settings
from distcount_core import Backoff
from distcount_store import (
    CHUNK_ROWS,
    DatabaseUnavailable,
    Merged,
    TierRange,
    compaction,
    compaction_lock,
    connect,
)

EXIT_INTERRUPTED = 130
# a redrawn status line on a terminal; elsewhere (a log file, a pipe) at most a line this often
_LINE_EVERY_S = 1.0

log = logging.getLogger("distcount.compact")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    compact = commands.add_parser(
        "compact",
        help="merge old rows of the event log into coarser buckets (DISTCOUNT_ROLLUP); totals "
        "and history at those steps stay the same",
    )
    compact.add_argument(
        "--schedule",
        action="store_true",
        help="keep running, compacting every DISTCOUNT_COMPACT_INTERVAL_MS, until SIGTERM",
    )
    compact.add_argument(
        "--chunk-rows",
        type=_positive,
        default=CHUNK_ROWS,
        help=f"rows one transaction merges at most (default {CHUNK_ROWS:,})",
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.rollup:
        print(
            "nothing to compact: DISTCOUNT_ROLLUP is none (its default is none when "
            "DISTCOUNT_BUCKET_MS does not divide an hour)"
        )
        return 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        if args.schedule:
            await _every(settings, args.chunk_rows, stop)
            return 0
        report = Report(_print, live=sys.stdout.isatty())
        finished = await _pass(settings, args.chunk_rows, report, stop)
        return 0 if finished else EXIT_INTERRUPTED
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _every(settings: Settings, chunk_rows: int, stop: asyncio.Event) -> None:
    """A pass every interval, timed from the start of the previous one; while PostgreSQL is
    away, passes are retried on the backoff schedule instead."""
    interval_s = settings.compact_interval_ms / 1000
    backoff = Backoff(1.0, min(60.0, interval_s))
    log.info("compacting every %s s (DISTCOUNT_COMPACT_INTERVAL_MS)", f"{interval_s:g}")
    while not stop.is_set():
        started = time.monotonic()
        try:
            await _pass(settings, chunk_rows, Report(log.info, live=False), stop)
        except DatabaseUnavailable as exc:
            log.warning("compaction paused, PostgreSQL is unavailable: %s", exc)
            await backoff.sleep(stop)
            continue
        backoff.reset()
        wait_s = interval_s - (time.monotonic() - started)
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
    log.info("compaction stopped")


async def _pass(settings: Settings, chunk_rows: int, report: Report, stop: asyncio.Event) -> bool:
    """One pass over the tiers; whether it went to the end (else a stop came first)."""
    conn = await connect(settings.database_url)
    try:
        async with compaction_lock(conn, report.waiting, stop) as held:
            if not held:
                report.say("stopped while waiting for the other compactor: nothing was done")
                return False
            report.begin(settings.rollup)
            tiers_done = 0
            async for event in compaction(conn, settings.rollup, chunk_rows=chunk_rows):
                if isinstance(event, Merged):
                    report.merged(event)
                else:
                    report.tier_done(event.range)
                    tiers_done += 1
                if stop.is_set():
                    break
            # a stop that came with the last tier's end stopped nothing
            finished = tiers_done == len(settings.rollup)
            report.end(stopped=not finished)
            return finished
    finally:
        await conn.close()


@dataclass
class Report:
    """What a pass says as it goes: a line per chunk (at most one a second) or, on a terminal,
    one status line redrawn in place; a line per tier and one for the pass."""

    say: Callable[[str], None]
    live: bool  # a terminal: redraw the status line instead of adding lines
    clock: Callable[[], float] = time.monotonic
    started: float = 0.0
    rows_in: int = 0
    rows_out: int = 0
    tier_in: int = 0
    tier_out: int = 0
    tier_started: float = 0.0
    last_line: float = field(default=float("-inf"))
    drawn: bool = False

    def waiting(self, pid: int | None) -> None:
        holder = f" (server pid {pid})" if pid is not None else ""
        self.say(f"another compactor is running{holder}: waiting for it to finish")

    def begin(self, tiers: tuple[RollupTier, ...]) -> None:
        self.started = self.tier_started = self.clock()
        coarsest_first = ", ".join(str(tier) for tier in reversed(tiers))
        self.say(f"compacting counter_events: tiers {coarsest_first} (coarsest first)")

    def merged(self, chunk: Merged) -> None:
        self.rows_in += chunk.rows_in
        self.rows_out += chunk.rows_out
        self.tier_in += chunk.rows_in
        self.tier_out += chunk.rows_out
        now = self.clock()
        line = (
            f"{chunk.range.tier}: {_when(chunk.start)} to {_when(chunk.end)} "
            f"{chunk.done():4.0%}, {self.rows_in:,} rows merged into {self.rows_out:,}, "
            f"{self._rate(self.rows_in, self.started):,.0f} rows/s, "
            f"{_tier_width(chunk.range)} buckets left: {chunk.buckets_left():,}"
        )
        if self.live:
            print(f"\r\033[K{line}", end="", flush=True)
            self.drawn = True
        elif now - self.last_line >= _LINE_EVERY_S:
            self.say(line)
            self.last_line = now

    def tier_done(self, tr: TierRange) -> None:
        self._end_status_line()
        where = f"before {_when(tr.cutoff)}"
        if tr.floor is not None:
            where = f"from {_when(tr.floor)} {where}"
        if self.tier_in:
            took = self.clock() - self.tier_started
            self.say(
                f"{tr.tier}: {self.tier_in:,} rows merged into {self.tier_out:,} in {took:.1f} s "
                f"({self._rate(self.tier_in, self.tier_started):,.0f} rows/s); every row {where} "
                f"is in buckets of {_tier_width(tr)} or wider"
            )
        else:
            self.say(f"{tr.tier}: nothing to merge {where}")
        self.tier_in = self.tier_out = 0
        self.tier_started = self.clock()

    def end(self, stopped: bool) -> None:
        self._end_status_line()
        took = self.clock() - self.started
        done = (
            f"{self.rows_in:,} rows merged into {self.rows_out:,} in {took:.1f} s "
            f"({self._rate(self.rows_in, self.started):,.0f} rows/s)"
        )
        if stopped:
            self.say(f"stopped between two chunks: {done}; the next run goes on from there")
        else:
            self.say(f"compacted: {done}")

    def _rate(self, rows: int, since: float) -> float:
        elapsed = self.clock() - since
        return rows / elapsed if elapsed > 0 else 0.0

    def _end_status_line(self) -> None:
        if self.drawn:
            print(flush=True)
            self.drawn = False


def _print(line: str) -> None:
    print(line, flush=True)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _tier_width(tr: TierRange) -> str:
    # the tiers come from the settings: RollupTier, written `<width>@<age>`
    return str(tr.tier).partition("@")[0]


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
