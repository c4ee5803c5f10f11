"""What every benchmark shares: child processes with logs, a private topic and database per
run, interleaved rounds, timing, the machine's description, progress lines, and reports.

A benchmark script builds its sides on this and keeps only what it measures and how it reads.
Start at `_rounds.py` (the shape of a run) and `_report.py` (what it leaves behind).
"""

from harness._cli import at_least, parser, run
from harness._console import Progress, describe, say
from harness._consume import ConsumeRun, compare_reads, reads_tables, relay, run_reader
from harness._flushed import POLL_S, STORED_OFFSETS, add_prefill_options, wait_until_flushed
from harness._kafka import prefill, settled_total
from harness._machine import QUIET_BELOW, background_busy, machine_line
from harness._openloop import OpenLoop, OpenLoopRun, drive, served
from harness._process import BENCH_DIR, PYTHON, Child, Line, child_env
from harness._report import Limit, Session, by_side, error_lines, fmt, median, pct, table, verdict
from harness._rounds import Rounds, side_order
from harness._services import Private, load_ingress, private_stack, spawn_service
from harness._stack import Database, Endpoints, fresh_database, postgres_facts, suffix
from harness._statsd import StatsdDrain, add_tally, counted
from harness._timing import Meter, share
from harness._wrk import LoadResult, Wrk, add_wrk_options, check_wrk_options, serve_and_load

__all__ = [
    "BENCH_DIR",
    "POLL_S",
    "PYTHON",
    "QUIET_BELOW",
    "STORED_OFFSETS",
    "Child",
    "ConsumeRun",
    "Database",
    "Endpoints",
    "Limit",
    "Line",
    "LoadResult",
    "Meter",
    "OpenLoop",
    "OpenLoopRun",
    "Private",
    "Progress",
    "Rounds",
    "Session",
    "StatsdDrain",
    "Wrk",
    "add_prefill_options",
    "add_tally",
    "add_wrk_options",
    "at_least",
    "background_busy",
    "by_side",
    "check_wrk_options",
    "child_env",
    "compare_reads",
    "counted",
    "describe",
    "drive",
    "error_lines",
    "fmt",
    "fresh_database",
    "load_ingress",
    "machine_line",
    "median",
    "parser",
    "pct",
    "postgres_facts",
    "prefill",
    "private_stack",
    "reads_tables",
    "relay",
    "run",
    "run_reader",
    "say",
    "serve_and_load",
    "served",
    "settled_total",
    "share",
    "side_order",
    "spawn_service",
    "suffix",
    "table",
    "verdict",
    "wait_until_flushed",
]
