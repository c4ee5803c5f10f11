"""What the metrics cost the two hot paths in CPU instructions, counted by valgrind's callgrind:
a figure this machine's drifting speed cannot move, where the timed benchmarks can only bracket.

Each path of benchmarks/_hotpaths.py (the work metrics_overhead.py times) runs in a process of
its own under callgrind, metrics off and on, twice: with a few units and with many more. The
difference between the two counts is the work of the extra units alone (start-up, imports and
set-up cancel out), divided by their number: instructions per request or per record. The
overhead is on / off - 1; the limit is 5 %. Each run checks its own work (every request
answered 202, every record folded) and whether metrics reached the UDP socket they were sent to.

"on" is DogStatsD with a constant tag, the default sample rate, a 1 s interval, inside
`metrics.reporting()`: under callgrind time runs some 50 times slower, so ticks come about 50
times as often per unit of work as they would at full speed, which counts their cost high.
PYTHONHASHSEED is fixed so both sides lay out their dicts alike.

    .venv/bin/python benchmarks/metrics_instructions.py [--requests 4000] [--records 30000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness as h
from _instructions_driver import CHECKS, FETCH, FOLD_POOL

LIMIT = h.Limit(5.0, floor=False, unit=" %")
PATHS = ("ingress", "fold")
SIDES = ("off", "on")
BASE_UNITS = {"ingress": 100, "fold": 5000}
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")
DRIVER = Path(__file__).with_name("_instructions_driver.py")


# -- counting -------------------------------------------------------------------------------------


def count(path: str, side: str, units: int, log_dir: Path) -> tuple[int, dict[str, Any]]:
    """Instructions callgrind counts for one driver run, and what the driver checked."""
    command = [
        *("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", h.PYTHON),
        *(str(DRIVER), path, side, str(units)),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    (log_dir / f"{path}-{side}-{units}.log").write_text(done.stdout + done.stderr)
    h.say(f"  {path} {side} {units:,} units: exit status {done.returncode}")
    found = _REFS.search(done.stderr)
    marked = [line for line in done.stdout.splitlines() if line.startswith(CHECKS)]
    if done.returncode != 0 or found is None or not marked:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", "")), json.loads(marked[-1].removeprefix(CHECKS))


def measure(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    units = {"ingress": args.requests, "fold": args.records}
    jobs = [
        (path, side, n)
        for path in PATHS
        for side in SIDES
        for n in (BASE_UNITS[path], BASE_UNITS[path] + units[path])
    ]
    h.say(f"{len(jobs)} runs under callgrind, two at a time (a minute or two each)")
    log_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = dict(
            zip(jobs, pool.map(lambda j: count(j[0], j[1], j[2], log_dir), jobs), strict=True)
        )
    counts = {job: refs for job, (refs, _) in found.items()}
    results: dict[str, Any] = {}
    for path in PATHS:
        base, full = BASE_UNITS[path], BASE_UNITS[path] + units[path]
        per_unit = {
            side: (counts[(path, side, full)] - counts[(path, side, base)]) / units[path]
            for side in SIDES
        }
        overhead = (per_unit["on"] / per_unit["off"] - 1) * 100
        checks = {f"{side} {n}": found[(path, side, n)][1] for side in SIDES for n in (base, full)}
        correct = all(c["correct"] for c in checks.values())
        results[path] = {
            "units": units[path],
            "instructions_per_unit": per_unit,
            "overhead_pct": overhead,
            "checks": checks,
            "all_checks_correct": correct,
            "verdict": h.verdict(LIMIT.passes(overhead) and correct),
        }
    return {"counts": {f"{p} {s} {n}": c for (p, s, n), c in counts.items()}, "paths": results}


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start(
        "metrics_instructions", "Metrics overhead in instructions (callgrind)"
    )
    measured = await asyncio.to_thread(measure, args, session.log_dir)
    paths = measured["paths"]
    verdict = h.verdict(all(p["verdict"] == "PASS" for p in paths.values()))
    rows = [
        [
            f"{path} (per {'request' if path == 'ingress' else 'record'})",
            f"{p['units']:,}",
            *(f"{p['instructions_per_unit'][side]:,.0f}" for side in SIDES),
            f"{p['overhead_pct']:+.2f} %",
            f"≤ {LIMIT.value:g} %",
            "ok" if p["all_checks_correct"] else "WRONG: see the JSON",
            p["verdict"],
        ]
        for path, p in paths.items()
    ]
    md = [
        session.heading(),
        "",
        f"Machine: {h.machine_line(session.machine)}. Each figure: (instructions of a run with "
        "base + units) - (instructions of a run with base units), divided by the units.",
        "",
        h.table(
            [
                *("path", "units", "instructions off", "instructions on", "overhead", "limit"),
                *("checks", "verdict"),
            ],
            rows,
        ),
        "",
        f"**Headline: {verdict}**",
    ]
    meta = session.meta(requests=args.requests, records=args.records, logs=str(session.log_dir))
    summary = {"verdict": verdict, "error": None, "limit_pct": LIMIT.value}
    return session.finish(
        {**meta, **measured, "verdict": verdict, "summary": summary}, "\n".join(md)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The metrics' cost on the hot paths, in instructions counted by callgrind."
    )
    parser.add_argument("--requests", type=int, default=4000, help="ingress requests counted")
    parser.add_argument("--records", type=int, default=30_000, help="records folded counted")
    args = parser.parse_args()
    if args.records % FETCH or not 0 < args.records <= FOLD_POOL - BASE_UNITS["fold"]:
        parser.error(f"--records: a multiple of {FETCH}, at most {FOLD_POOL - BASE_UNITS['fold']}")
    h.at_least(parser, args, 1, "--requests")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not on PATH (Debian: apt-get install valgrind)")
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
