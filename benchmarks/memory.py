"""The aggregator's memory: bytes per live (bucket, key) entry, and what a flush gives back.

Each run is a child process of its own (a clean baseline, nothing left from another run):

1. The aggregator's objects are built as it builds them: an `Aggregator` (no broker: nothing of
   its consumer is asked for before its loop runs), whose `RecordDecoder` and `Checkpointer`
   the run uses, over a `Database` pool. Then the baseline: RSS after `gc.collect()`, and the
   peak RSS counter reset (`/proc/self/clear_refs`).
2. Records are folded with `distcount_aggregator.fold` in fetches of `MAX_RECORDS_PER_FETCH`,
   until the state holds K keys x B buckets live entries: a bucket's records, one per key, then
   the next bucket's. A record is what `fold` reads of aiokafka's: `.offset`, `.timestamp`,
   `.value`, the value being `{"key":"k<i>","value":<n>}` in bytes of its own exact size, as
   aiokafka hands them (orjson's `dumps` returns bytes holding 4 KiB each, which would count
   the benchmark's own records against the aggregator). Only `fold` is timed.
3. RSS then; bytes per live entry = (RSS - baseline) / entries: the state and the decoder's
   memory of values seen (capped at `MAX_KNOWN_VALUES`), as the process holds them.
4. The flush, as the aggregator makes it at the memory bound: `Checkpointer.flush` (reason
   "memory"), into a private PostgreSQL database as the services' role (`--no-database`: a
   stand-in that accepts every flush), which commits and empties the state. RSS after it.
5. A second cycle: the same entries in the next buckets, folded and flushed (does the memory
   come back, is it reused, what does folding cost after a release).
6. RSS after `gc.collect()`, after an explicit `malloc_trim(0)` (glibc), and after the
   decoder's memory is cleared too and trimmed: what each could still give back.

Two sides, interleaved run by run: **release**, the aggregator as it is wired (a flush that
drops a large state calls the checkpointer's `forget`, if the aggregator gives it one, and
`release_memory`, both timed), and **keep**, where no flush releases anything (as before).

A traced run per scenario (tracemalloc on, which slows Python and adds to RSS, so apart)
splits the Python heap: the state's own bytes (what dropping it frees) and the rest (the
decoder's), and compares layouts of the same entries: the nested dicts `fold` builds, one
flat dict keyed by (bucket, key) tuples, and the nested dicts with every key interned (one
object per distinct key, and the table that makes it so).

Headline: the worst scenario's median bytes per live entry, **limit 150**; and RSS after the
first flush (release side) within **10 %** of what the entries took above the baseline. PASS
needs both and every check (entries, the sums, both flushes committed).

    .venv/bin/python benchmarks/memory.py [--layouts 100000x10,500000x2,1000000x1] [--repeat 3]
    .venv/bin/python benchmarks/memory.py --quick --no-database
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import sys
import time
import tracemalloc
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import asyncpg

import harness as h
from distcount_aggregator import (
    MAX_RECORDS_PER_FETCH,
    Aggregator,
    DeadLetters,
    PartitionState,
    _checkpoint,
    fold,
)
from distcount_codec import RecordDecoder
from distcount_config import load
from distcount_store import Database

BYTES = h.Limit(150.0, floor=False, unit=" B")
RETAINED = h.Limit(10.0, floor=False, unit=" %")
SIDES = ("release", "keep")
VALUES = ("ones", "varied")
QUICK = {"layouts": "20000x10,200000x1", "repeat": 1}
BUCKET_MS = 1000
FIRST_BUCKET_MS = 1_700_000_000_000
_RESULT = "result "
_PAGE = os.sysconf("SC_PAGE_SIZE")
_SCRIPT = Path(__file__).resolve()


def increment(key: int, bucket: int, values: str) -> int:
    """What record (key, bucket) adds: 1 ("ones", the usual counter), or 257 to 10,256
    ("varied": every sum an int object of its own, every record value new to the decoder)."""
    return 1 if values == "ones" else 257 + (key * 7919 + bucket * 104_729) % 10_000


# -- the child: one run ----------------------------------------------------------------------


class Record:
    """The fields of a consumer record that `fold` reads."""

    __slots__ = ("offset", "timestamp", "value")

    def __init__(self, offset: int, timestamp: int, value: bytes) -> None:
        self.offset = offset
        self.timestamp = timestamp
        self.value = value


def rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_rss() -> int:
    """VmHWM: the largest RSS since start, or since the last reset."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def libc_trim() -> bool:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (AttributeError, OSError):
        return False
    return True


class _Consumer:
    """What `Checkpointer` asks of the consumer after a committed flush: a lag-only commit."""

    async def commit(self, offsets: Any) -> None:
        return None

    def assignment(self) -> set[Any]:
        return set()


class _AcceptingDatabase:
    """`--no-database`: every flush commits, writing nothing."""

    async def flush(self, flush: Any) -> int:
        return sum(len(bucket) for bucket in flush.deltas.values())

    async def close(self) -> None:
        return None


class Figures:
    """The child's figures, in an array made before the baseline: a figure stored while a large
    state lives would be a new object in one of the holes of Python's arenas, and keep that
    arena (1 MiB) from going back to the system however much of it is freed later."""

    NAMES = (
        *("baseline_rss", "peak_reset", "forget_wired"),
        *(
            name
            for n in ("", "2")
            for name in (
                *(f"records{n}", f"rejected{n}", f"fold_s{n}", f"entries{n}", f"full{n}_rss"),
                *(f"sum_ok{n}", f"flush{n}_s", f"flush_ok{n}", f"after_flush{n}_rss"),
                f"peak{n}_rss",
            )
        ),
        *("release_s", "releases", "forget_s", "forgets", "known_values", "after_gc_rss"),
        *("trimmed", "trim_s", "after_trim_rss", "after_forget_trim_rss"),
    )
    SECONDS = frozenset(n for n in NAMES if n.endswith("_s") or n.startswith("fold_s"))
    FLAGS = frozenset(
        ("peak_reset", "forget_wired", "trimmed", "sum_ok", "sum_ok2", "flush_ok", "flush_ok2")
    )
    _INDEX: ClassVar[dict[str, int]] = {name: i for i, name in enumerate(NAMES)}

    def __init__(self) -> None:
        self.values = array("d", [0.0] * len(self.NAMES))

    def __setitem__(self, name: str, value: float) -> None:
        self.values[self._INDEX[name]] = value

    def __getitem__(self, name: str) -> float:
        return self.values[self._INDEX[name]]

    def add(self, name: str, value: float) -> None:
        self.values[self._INDEX[name]] += value

    def as_dict(self) -> dict[str, Any]:
        return {
            name: self._plain(name, value)
            for name, value in zip(self.NAMES, self.values, strict=True)
        }

    def _plain(self, name: str, value: float) -> Any:
        if name in self.SECONDS:
            return value
        return bool(value) if name in self.FLAGS else int(value)


def _wire(aggregator: Aggregator, side: str, figures: Figures) -> None:
    """keep: no flush releases anything (as before it was added); release: as the aggregator
    wires it, each step timed."""
    if side == "keep":
        setattr(_checkpoint, "RELEASE_AFTER_ENTRIES", sys.maxsize)  # noqa: B010 (a Final)
        return
    product = _checkpoint.release_memory

    def release() -> bool:
        started = time.perf_counter()
        try:
            return product()
        finally:
            figures.add("release_s", time.perf_counter() - started)
            figures.add("releases", 1)

    _checkpoint.release_memory = release
    checkpointer = aggregator._checkpointer
    forget = checkpointer._forget
    if forget is not None:

        def timed_forget() -> object:
            started = time.perf_counter()
            try:
                return forget()
            finally:
                figures.add("forget_s", time.perf_counter() - started)
                figures.add("forgets", 1)

        checkpointer._forget = timed_forget


def fold_all(
    spec: dict[str, Any],
    state: PartitionState,
    decoder: RecordDecoder,
    cycle: int,
    figures: Figures,
) -> None:
    """A bucket's records, one per key, then the next bucket's, folded a fetch at a time; the
    second cycle has the same keys and increments, in the next buckets, at the next offsets."""
    keys, buckets, values = spec["keys"], spec["buckets"], spec["values"]
    n = "" if cycle == 0 else "2"
    offset = state.position or 0
    batch: list[Record] = []
    for b in range(buckets):
        start = FIRST_BUCKET_MS + (cycle * buckets + b) * BUCKET_MS
        for i in range(keys):
            value = b'{"key":"k%d","value":%d}' % (i, increment(i, b, values))
            batch.append(Record(offset, start + i % BUCKET_MS, value))
            offset += 1
            if len(batch) == MAX_RECORDS_PER_FETCH or (b == buckets - 1 and i == keys - 1):
                started = time.perf_counter()
                figures.add(f"rejected{n}", len(fold(state, batch, BUCKET_MS, decoder)))
                figures.add(f"fold_s{n}", time.perf_counter() - started)
                batch = []
    figures[f"records{n}"] = keys * buckets


def _build(spec: dict[str, Any], database: Any) -> Aggregator:
    """The aggregator's objects as it builds them (no consumer or broker: nothing of theirs is
    asked for before the loop runs)."""
    settings = load(
        {
            "DISTCOUNT_TOPIC": spec["topic"],
            "DISTCOUNT_GROUP_ID": spec["group"],
            "DISTCOUNT_BUCKET_MS": str(BUCKET_MS),
        }
    )
    return Aggregator(
        settings, _Consumer(), database, DeadLetters(None, "dead"), end_offsets=_no_ends
    )


async def _no_ends(partitions: Any) -> dict[Any, int]:
    return {}


async def _warm_up(aggregator: Aggregator, topic: str) -> None:
    """Two small flushes of another partition, as a running aggregator has made before any
    large state: the driver's statements are prepared and cached (objects that live on) before
    the baseline, not while a large state is folded."""
    state = PartitionState(1, None)
    for cycle in range(2):
        records = [
            Record(cycle * 10 + i, FIRST_BUCKET_MS - BUCKET_MS, b'{"key":"warm%d","value":1}' % i)
            for i in range(10)
        ]
        fold(state, records, BUCKET_MS, aggregator._decoder)
        await aggregator._checkpointer.flush([state], topic, "tick")
    # the decoder then remembers as much as without the warm-up: its memory of values is
    # cleared whenever it reaches MAX_KNOWN_VALUES, so how much of it is left when the state
    # is flushed (up to the whole, at the layouts' default sizes) hangs on the count of values
    aggregator._decoder.known.clear()


async def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One run: baseline, two cycles of fold and flush, then what more could be freed."""
    traced = spec["traced"]
    figures = Figures()
    extra: dict[str, Any] = {"spec": spec}
    database: Any = _AcceptingDatabase()
    if spec["database_url"]:
        database = await Database.open(spec["database_url"], min_size=1, max_size=2)
    aggregator = _build(spec, database)
    _wire(aggregator, spec["side"], figures)
    figures["forget_wired"] = aggregator._checkpointer._forget is not None
    decoder, checkpointer = aggregator._decoder, aggregator._checkpointer
    await _warm_up(aggregator, spec["topic"])
    state = PartitionState(0, None)
    expected = sum(
        increment(i, b, spec["values"]) for b in range(spec["buckets"]) for i in range(spec["keys"])
    )
    gc.collect()
    figures["baseline_rss"] = rss()
    figures["peak_reset"] = reset_peak()
    if traced:
        tracemalloc.start()
    traced_base = tracemalloc.get_traced_memory()[0]
    for cycle, n in enumerate(("", "2")):
        fold_all(spec, state, decoder, cycle, figures)
        figures[f"entries{n}"] = state.entries
        figures[f"full{n}_rss"] = rss()
        figures[f"sum_ok{n}"] = sum(sum(b.values()) for b in state.deltas.values()) == expected
        if traced:
            extra |= _layouts(state.deltas, traced_base)
            # what dropping the state frees: its own bytes (keys the decoder still holds stay);
            # the flush that follows finds it empty: a traced run's figures are of the heap
            before = tracemalloc.get_traced_memory()[0]
            state.deltas = {}
            extra["traced_state_bytes"] = before - tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        ok = await checkpointer.flush([state], spec["topic"], "memory")
        figures[f"flush{n}_s"] = time.perf_counter() - started
        figures[f"flush_ok{n}"] = ok and not state.deltas and state.stored_offset == state.position
        figures[f"after_flush{n}_rss"] = rss()
        figures[f"peak{n}_rss"] = peak_rss()
        if traced:
            tracemalloc.stop()
            break
    await checkpointer.close()
    _freed_after(decoder, figures)
    await database.close()
    return figures.as_dict() | extra


def _freed_after(decoder: RecordDecoder, figures: Figures) -> None:
    """RSS after a full collection, after an explicit `malloc_trim(0)`, and after the
    decoder's memory of values is cleared too (what `forget` does in the flush) and trimmed."""
    figures["known_values"] = len(decoder.known)
    gc.collect()
    figures["after_gc_rss"] = rss()
    started = time.perf_counter()
    figures["trimmed"] = libc_trim()
    figures["trim_s"] = time.perf_counter() - started
    figures["after_trim_rss"] = rss()
    decoder.known.clear()
    libc_trim()
    figures["after_forget_trim_rss"] = rss()


def _layouts(deltas: dict[int, dict[str, int]], base: int) -> dict[str, Any]:
    """The Python heap at full state, and other layouts of the same entries (built from the
    state's own keys and values, so only their containers are new), each measured by what it
    adds to the traced memory."""
    full = tracemalloc.get_traced_memory()[0] - base
    nested_containers = sys.getsizeof(deltas) + sum(sys.getsizeof(b) for b in deltas.values())
    key_objects = {id(k): k for b in deltas.values() for k in b}
    distinct = {k for b in deltas.values() for k in b}
    int_objects = {id(v): v for b in deltas.values() for v in b.values() if not -5 <= v <= 256}
    out: dict[str, Any] = {
        "traced_full": full,
        "key_objects": len(key_objects),
        "distinct_keys": len(distinct),
        "int_objects": len(int_objects),
        "key_bytes": sum(sys.getsizeof(k) for k in key_objects.values()),
        "int_bytes": sum(sys.getsizeof(v) for v in int_objects.values()),
        "nested_container_bytes": nested_containers,
    }
    del key_objects, int_objects, distinct
    gc.collect()

    def adds(build: Any) -> int:
        before = tracemalloc.get_traced_memory()[0]
        made = build()
        size = tracemalloc.get_traced_memory()[0] - before
        del made
        return size

    out["flat_container_bytes"] = adds(
        lambda: {(s, k): v for s, b in deltas.items() for k, v in b.items()}
    )

    def interned() -> tuple[dict[str, str], dict[int, dict[str, int]]]:
        table: dict[str, str] = {}
        return table, {
            s: {table.setdefault(k, k): v for k, v in b.items()} for s, b in deltas.items()
        }

    out["interned_container_bytes"] = adds(interned)
    return out


def child_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = asyncio.run(child(spec))
    print(_RESULT + json.dumps(result), flush=True)


# -- the parent: the runs, interleaved, and the report ---------------------------------------


@dataclass
class Scenario:
    keys: int
    buckets: int
    values: str

    @property
    def name(self) -> str:
        return f"{self.keys:,} keys x {self.buckets} buckets, {self.values}"

    @property
    def entries(self) -> int:
        return self.keys * self.buckets


@dataclass
class RunResult:
    scenario: str
    side: str
    index: int
    traced: bool
    figures: dict[str, Any]
    busy_before: float | None
    seconds: float

    @property
    def entries(self) -> int:
        return int(self.figures.get("entries", 0))

    @property
    def rise(self) -> int:
        return int(self.figures["full_rss"] - self.figures["baseline_rss"])

    @property
    def bytes_per_entry(self) -> float:
        return self.rise / self.entries if self.entries else float("nan")

    @property
    def retained_pct(self) -> float:
        """What RSS keeps after the first flush, in % of what the entries took."""
        retained = self.figures["after_flush_rss"] - self.figures["baseline_rss"]
        return 100.0 * retained / self.rise if self.rise > 0 else float("nan")

    @property
    def released_ms(self) -> float | None:
        """The release's own time (`forget` and `malloc_trim`), per flush that released."""
        f = self.figures
        if not f.get("releases"):
            return None
        return 1000 * float(f["release_s"] + f["forget_s"]) / float(f["releases"])

    @property
    def correct(self) -> bool:
        f = self.figures
        cycles = [""] if self.traced else ["", "2"]
        return all(
            f.get(f"entries{n}") == f.get(f"records{n}")
            and f.get(f"rejected{n}") == 0
            and f.get(f"sum_ok{n}")
            and f.get(f"flush_ok{n}")
            for n in cycles
        )

    def as_dict(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"correct": self.correct}
        if not self.traced and self.figures:
            extra |= {
                "bytes_per_entry": self.bytes_per_entry,
                "retained_pct": self.retained_pct,
                "released_ms": self.released_ms,
            }
        return {**asdict(self), **extra}


async def run_child(
    args: argparse.Namespace,
    scenario: Scenario,
    side: str,
    index: int,
    *,
    traced: bool,
    database_url: str | None,
    log_dir: Path,
) -> RunResult:
    busy = await h.background_busy(args.wait_quiet_s)
    group = f"bench.memory.{h.suffix()}"
    spec = {
        **asdict(scenario),
        "side": side,
        "traced": traced,
        "database_url": database_url,
        "group": group,
        "topic": group,
    }
    label = f"{'traced' if traced else side}-{scenario.keys}x{scenario.buckets}-{scenario.values}"
    child = await h.Child.spawn(
        label,
        [h.PYTHON, str(_SCRIPT), "--child", json.dumps(spec)],
        h.child_env({}),
        log_dir / f"run{index}-{label}.log",
    )
    try:
        status = await asyncio.wait_for(child.process.wait(), args.timeout_s)
        seconds = time.monotonic() - child.spawned_at
    finally:
        await child.stop()
    line = child.first_line(lambda text: text.startswith(_RESULT))
    if status != 0 or line is None:
        raise child.exited()
    figures = json.loads(line.text.removeprefix(_RESULT))
    result = RunResult(scenario.name, side, index, traced, figures, busy, seconds)
    _say_run(result)
    return result


def _mb(size: float | None) -> str:
    return "-" if size is None else f"{size / 2**20:,.1f}"


def _say_run(r: RunResult) -> None:
    f = r.figures
    if r.traced:
        h.say(
            f"  traced {r.scenario}: {f['traced_full'] / r.entries:,.1f} B/entry traced, state's "
            f"own {f['traced_state_bytes'] / r.entries:,.1f} B/entry"
        )
        return
    released = "" if r.released_ms is None else f" (release {r.released_ms:,.1f} ms)"
    h.say(
        f"  run {r.index} {r.side:>7} {r.scenario}: {r.bytes_per_entry:,.1f} B/entry; RSS MB "
        f"{_mb(f['baseline_rss'])} -> {_mb(f['full_rss'])} -> {_mb(f['after_flush_rss'])} after "
        f"the flush{released}; cycle 2 {_mb(f['full2_rss'])} -> {_mb(f['after_flush2_rss'])}; "
        f"peak {_mb(f['peak2_rss'])}; then {_mb(f['after_gc_rss'])} after gc, "
        f"{_mb(f['after_trim_rss'])} after malloc_trim, {_mb(f['after_forget_trim_rss'])} with the "
        f"decoder's memory cleared; fold {f['fold_s']:.2f} s, {f['fold_s2']:.2f} s; flush "
        f"{f['flush_s']:.2f} s" + ("" if r.correct else " CHECK FAILED")
    )


async def measure(
    args: argparse.Namespace,
    scenarios: list[Scenario],
    database: h.Database | None,
    log_dir: Path,
    results: list[RunResult],
) -> None:
    owner = database.owner_url if database else None
    url = database.url if database else None
    for index in range(1, args.repeat + 1):
        for scenario in scenarios:
            for side in h.side_order(SIDES, index, alternate=True):
                results.append(
                    await run_child(
                        args, scenario, side, index, traced=False, database_url=url, log_dir=log_dir
                    )
                )
                if owner is not None:
                    await _truncate(owner)
    if args.traced:
        for scenario in scenarios:
            results.append(
                await run_child(
                    args, scenario, "release", 0, traced=True, database_url=None, log_dir=log_dir
                )
            )


async def _truncate(owner_url: str) -> None:
    conn = await asyncpg.connect(owner_url, timeout=10)
    try:
        await conn.execute("TRUNCATE counter_events, counter_totals", timeout=600)
    finally:
        await conn.close()


_AFTER = ("after_gc_rss", "after_trim_rss", "after_forget_trim_rss")
_RSS_FIGURES = (
    *("baseline_rss", "full_rss", "after_flush_rss", "full2_rss", "after_flush2_rss"),
    *("peak_rss", "peak2_rss", *_AFTER),
)


def _fig(runs: list[RunResult], key: str) -> float | None:
    return h.median([r.figures[key] for r in runs]) if runs else None


def _med(runs: list[RunResult], value: Any) -> float | None:
    values = [value(r) for r in runs]
    return h.median(values) if values else None


def report(
    session: h.Session,
    meta: dict[str, Any],
    scenarios: list[Scenario],
    results: list[RunResult],
    error: str | None,
) -> int:
    plain = [r for r in results if not r.traced]
    if not plain:
        return session.failed(meta, [], [], error or "no run")
    rows = []
    per: list[dict[str, Any]] = []
    for scenario in scenarios:
        for side in SIDES:
            runs = [r for r in plain if r.scenario == scenario.name and r.side == side]
            if not runs:
                continue
            released = [r.released_ms for r in runs if r.released_ms is not None]
            figures: dict[str, Any] = {
                "scenario": scenario.name,
                "side": side,
                "runs": len(runs),
                "bytes_per_entry": _med(runs, lambda r: r.bytes_per_entry),
                **{key: _fig(runs, key) for key in _RSS_FIGURES},
                "retained_pct": _med(runs, lambda r: r.retained_pct),
                "released_ms": h.median(released) if released else None,
                "forget_wired": all(r.figures["forget_wired"] for r in runs),
                "fold_records_per_s": _med(
                    runs, lambda r: r.figures["records"] / r.figures["fold_s"]
                ),
                "fold2_records_per_s": _med(
                    runs, lambda r: r.figures["records2"] / r.figures["fold_s2"]
                ),
                "flush_s": _fig(runs, "flush_s"),
                "correct": all(r.correct for r in runs),
            }
            per.append(figures)
            rows.append(
                [
                    scenario.name,
                    side,
                    len(runs),
                    f"{figures['bytes_per_entry']:,.1f}",
                    *(_mb(figures[key]) for key in ("baseline_rss", "full_rss", "after_flush_rss")),
                    f"{figures['retained_pct']:,.1f} %",
                    *(_mb(figures[key]) for key in ("full2_rss", "after_flush2_rss", "peak2_rss")),
                    *(_mb(figures[key]) for key in _AFTER),
                    "-" if figures["released_ms"] is None else f"{figures['released_ms']:,.1f}",
                    f"{figures['fold_records_per_s']:,.0f}",
                    f"{figures['fold2_records_per_s']:,.0f}",
                    f"{figures['flush_s']:,.2f}",
                    "ok" if figures["correct"] else "FAILED",
                ]
            )
    traced_rows = []
    for r in (r for r in results if r.traced):
        f, n = r.figures, r.entries
        interning_table = f["interned_container_bytes"] - f["nested_container_bytes"]
        traced_rows.append(
            [
                r.scenario,
                f"{f['traced_full'] / n:,.1f}",
                f"{f['traced_state_bytes'] / n:,.1f}",
                f"{(f['traced_full'] - f['traced_state_bytes']) / n:,.1f}",
                f"{f['nested_container_bytes'] / n:,.1f}",
                f"{f['key_objects']:,} ({f['key_bytes'] / n:,.1f})",
                f"{f['int_objects']:,} ({f['int_bytes'] / n:,.1f})",
                f"{f['flat_container_bytes'] / n:,.1f}",
                f"{f['distinct_keys']:,}",
                f"{interning_table / n:,.1f}",
            ]
        )
    release_side = [p for p in per if p["side"] == "release"]
    worst_bytes = max((p["bytes_per_entry"] for p in per), default=None)
    worst_retained = max((p["retained_pct"] for p in release_side), default=None)
    correct = all(r.correct for r in results)
    passed = (
        worst_bytes is not None
        and BYTES.passes(worst_bytes)
        and worst_retained is not None
        and RETAINED.passes(worst_retained)
        and correct
    )
    w = meta["workload"]
    flush_to = (
        "a private PostgreSQL database, as the services' role"
        if w["database"]
        else "a stand-in that accepts every flush (`--no-database`)"
    )
    md = [
        session.heading(),
        "",
        f"Machine: **{h.machine_line(session.machine)}**. Each run is a child process of its "
        f"own; {w['repeat']} runs a side per scenario, the sides alternating. Records are "
        f"folded by `fold` in fetches of {w['fetch_records']:,}, one record per entry "
        f'(`{{"key":"k<i>","value":<n>}}`, {BUCKET_MS:,} ms buckets), into the decoder and '
        'the checkpointer of an `Aggregator` as it builds them; the flush (reason "memory") is '
        f"`Checkpointer.flush` into {flush_to}; then a second cycle, the same entries in the "
        "next buckets. **release**: the aggregator as it is"
        + (
            " (its checkpointer clears the decoder's memory of values: `forget` is wired)"
            if all(p["forget_wired"] for p in per if p["side"] == "release")
            else " (its checkpointer is **not** given the decoder's `known.clear` as `forget`: "
            "only `malloc_trim` runs)"
        )
        + "; **keep**: no flush releases anything (as before). B/entry = (RSS at full state - "
        "baseline) / entries, the decoder's memory of values included. Retained = (RSS after the "
        "first flush - baseline) / (RSS at full state - baseline). The last three RSS columns "
        "are taken after both cycles: after `gc.collect()`, after an explicit `malloc_trim(0)`, "
        "and after clearing the decoder's memory then `malloc_trim(0)`: what each step could "
        "still give back. Release ms: the flush's own `forget` and `malloc_trim`. Peak: the "
        "process's highest RSS over both cycles (VmHWM). Medians.",
        "",
        h.table(
            [
                *("scenario", "side", "runs", "B/entry", "baseline MB", "full MB"),
                *("after flush MB", "retained", "cycle 2 full MB", "after flush 2 MB"),
                *("peak MB", "after gc MB", "after malloc_trim MB", "decoder cleared MB"),
                *("release ms", "fold 1 records/s", "fold 2 records/s", "flush s", "checks"),
            ],
            rows,
        ),
        "",
    ]
    if traced_rows:
        md += [
            "The Python heap (tracemalloc, a run apart), per live entry: all it grew by; the "
            "state's own (what dropping it frees); the rest (the decoder's memory of values); "
            "the nested dicts' tables; the key objects and int objects the state holds "
            "(ints from -5 to 256 are shared, free); the tables of one flat dict keyed by "
            "(bucket, key) tuples instead, tuples included; and what interning every key "
            "would add (its table) against the key objects it would save (key objects - "
            "distinct keys).",
            "",
            h.table(
                [
                    *("scenario", "traced B/entry", "state's own", "rest", "nested dicts"),
                    *("key objects (B/entry)", "int objects (B/entry)", "flat dict + tuples"),
                    *("distinct keys", "interning table"),
                ],
                traced_rows,
            ),
            "",
        ]
    md += [
        f"**Headline: worst {h.fmt(worst_bytes, 1)} bytes per live entry ({BYTES}); RSS after "
        f"the flush keeps at worst {h.fmt(worst_retained, 1)} % of the rise ({RETAINED}): "
        f"{h.verdict(passed, error)}**",
        *h.error_lines(error),
    ]
    summary = {
        "scenarios": per,
        "worst_bytes_per_entry": worst_bytes,
        "worst_retained_pct": worst_retained,
        "limits": {"bytes_per_entry": BYTES.value, "retained_pct": RETAINED.value},
        "verdict": h.verdict(passed, error),
        "error": error,
    }
    data = {**meta, "runs": [r.as_dict() for r in results], "summary": summary}
    return session.finish(data, "\n".join(md))


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start("memory", "Aggregator memory per live entry")
    scenarios = [
        Scenario(int(keys), int(buckets), values)
        for text in args.layouts.split(",")
        for keys, _, buckets in [text.lower().partition("x")]
        for values in args.values.split(",")
    ]
    h.say(f"memory benchmark: {', '.join(s.name for s in scenarios)}; {args.repeat} runs a side")
    results: list[RunResult] = []
    error: str | None = None
    log_dir = session.log_dir
    try:
        async with contextlib.AsyncExitStack() as stack:
            database = None
            if not args.no_database:
                endpoints = h.Endpoints.load()
                database = await stack.enter_async_context(
                    h.fresh_database(endpoints, "bench_memory")
                )
            await measure(args, scenarios, database, log_dir, results)
    except Exception as exc:  # report the runs measured, and why the rest were not
        error = h.describe(exc)
        h.say(f"stopped early: {exc}")
    workload = {
        "layouts": args.layouts,
        "values": args.values,
        "repeat": args.repeat,
        "database": not args.no_database,
        "traced": args.traced,
        "fetch_records": MAX_RECORDS_PER_FETCH,
        "bucket_ms": BUCKET_MS,
    }
    meta = session.meta(workload=workload, logs=str(log_dir))
    return report(session, meta, scenarios, results, error)


def arguments() -> argparse.Namespace:
    parser = h.parser(
        "The aggregator's bytes per live entry, and its RSS after a flush empties the state.",
        repeat=3,
        repeat_help="runs a side per scenario",
    )
    add = parser.add_argument
    add(
        "--layouts",
        default="100000x10,500000x2,1000000x1",
        help="comma-separated KEYSxBUCKETS: the live entries, one record each",
    )
    add(
        "--values",
        default=",".join(VALUES),
        help="comma-separated: ones (every increment 1), varied (257 to 10,256)",
    )
    add("--no-database", action="store_true", help="flush to a stand-in, not PostgreSQL")
    add("--no-traced", dest="traced", action="store_false", help="skip the tracemalloc runs")
    add("--timeout-s", type=float, default=600.0, help="per child process")
    quick = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
    add("--quick", action="store_true", help=f"a quick look: {quick}")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    h.at_least(parser, args, 1, "--repeat")
    try:
        for text in args.layouts.split(","):
            keys, _, buckets = text.lower().partition("x")
            if int(keys) < 1 or int(buckets) < 1:
                raise ValueError(text)
    except ValueError:
        parser.error("--layouts must be like 100000x10,500000x2,1000000x1")
    if not args.values or not set(args.values.split(",")) <= set(VALUES):
        parser.error(f"--values takes {', '.join(VALUES)}")
    return args


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(sys.argv[2])
        return
    args = arguments()
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
