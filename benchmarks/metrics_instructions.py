"""What the metrics cost the two hot paths in CPU instructions, counted by valgrind's callgrind:
a figure this machine's drifting speed cannot move, where the timed benchmarks can only bracket.

Each path runs in a process of its own under callgrind, metrics off and on, twice: with a few
units and with many more. The difference between the two counts is the work of the extra units
alone (start-up, imports and set-up cancel out), divided by their number: instructions per
request or per record. The overhead is on / off - 1; the limit is 5 %.

- ingress: the app of `create_app` called as an ASGI app with `POST /increment` requests, its
  publisher acknowledging at once (as in metrics_overhead.py);
- fold: fetches of 5,000 consumer records split by partition, `metrics.on_fetched` then `fold`
  for each share, and every second fetch the flush hooks of every dirty partition.

"on" is DogStatsD with a constant tag, the default sample rate, a 1 s interval, inside
`metrics.reporting()`: under callgrind time runs some 50 times slower, so ticks come about 50
times as often per unit of work as they would at full speed, which counts their cost high.
PYTHONHASHSEED is fixed so both sides lay out their dicts alike.

    .venv/bin/python benchmarks/metrics_instructions.py [--requests 4000] [--records 30000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import machine_facts, markdown_table, say, utc_stamp, write_report

LIMIT_PCT = 5.0
BASE_UNITS = {"ingress": 100, "fold": 5000}
FOLD_POOL = 40_000  # records built by every fold run; it folds the first `units` of them
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


# -- the drivers, run under callgrind ---------------------------------------------------------


_SINKS: list[socket.socket] = []  # open for the driver's whole run


def _settings(side: str) -> Any:
    from distcount_config import load  # noqa: PLC0415  (imported in the driver process only)

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))  # never read: the kernel drops what overflows
    _SINKS.append(sink)
    return load(
        {
            "DISTCOUNT_METRICS": "off" if side == "off" else "dogstatsd",
            "DISTCOUNT_STATSD_PORT": str(sink.getsockname()[1]),
            "DISTCOUNT_METRICS_INTERVAL_MS": "1000",
            "DISTCOUNT_METRICS_TAGS": "env:bench",
        }
    )


def drive_ingress(side: str, units: int) -> None:
    import uvloop  # noqa: PLC0415

    from distcount_ingress import create_app  # noqa: PLC0415
    from distcount_metrics import ingress_metrics  # noqa: PLC0415

    class Acking:
        inflight_sends = 0

        async def publish(self, key: bytes, value: bytes) -> None:
            pass

        async def publish_batch(self, records: Any) -> None:
            pass

        async def check(self, timeout_s: float) -> None:
            pass

    class NoTotals:
        async def read(self, key: str) -> int | None:
            return None

        async def check(self, timeout_s: float) -> None:
            pass

    settings = _settings(side)
    metrics = ingress_metrics(settings.metrics)
    app = create_app(settings, Acking(), NoTotals(), metrics=metrics)
    requests = []
    for i in range(1000):
        body = b'{"key": "c%d", "value": 1}' % i
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/increment",
            "raw_path": b"/increment",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 3333),
        }
        message = {"type": "http.request", "body": body, "more_body": False}
        requests.append((scope, message))

    async def send(message: Any) -> None:
        pass

    async def main() -> None:
        async with metrics.reporting():
            for i in range(units):
                scope, message = requests[i % 1000]

                async def receive(message: Any = message) -> Any:
                    return message

                await app(dict(scope), receive, send)

    uvloop.run(main())


def drive_fold(side: str, units: int) -> None:
    import uvloop  # noqa: PLC0415
    from aiokafka.structs import ConsumerRecord  # noqa: PLC0415

    from distcount_aggregator._fold import PartitionState, fold  # noqa: PLC0415
    from distcount_codec import Increment, encode_record  # noqa: PLC0415
    from distcount_metrics import aggregator_metrics  # noqa: PLC0415

    metrics = aggregator_metrics(_settings(side).metrics)
    now_ms = time.time_ns() // 1_000_000
    # the same records are built whatever `units` is, so building them cancels out
    fetches = []
    for start in range(0, FOLD_POOL, 5000):
        shares: dict[int, list[Any]] = {}
        for offset in range(start, start + 5000):
            key, value = encode_record(Increment(f"k{offset % 10_000}", 1))
            partition = offset % 6
            record = ConsumerRecord(
                "t", partition, offset, now_ms - offset % 5000, 0, key, value, None, 0, 0, ()
            )
            shares.setdefault(partition, []).append(record)
        fetches.append(sorted(shares.items()))
    fetches = fetches[: units // 5000]

    async def main() -> None:
        states = {p: PartitionState(p, None) for p in range(6)}
        known: set[str] = set()
        async with metrics.reporting():
            for number, fetch in enumerate(fetches):
                for partition, records in fetch:
                    metrics.on_fetched(partition, records)
                    fold(states[partition], records, 1000, known)
                if number % 2:
                    for state in states.values():
                        if state.dirty:
                            metrics.on_flush(state.partition, "tick", "committed", 1, 0.01)
                            state.committed()

    uvloop.run(main())


# -- counting -------------------------------------------------------------------------------------


def count(path: str, side: str, units: int) -> int:
    """Instructions callgrind counts for one driver run."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--drive",
        path,
        "--side",
        side,
        "--units",
        str(units),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    units = {"ingress": args.requests, "fold": args.records}
    jobs = [
        (path, side, n)
        for path in ("ingress", "fold")
        for side in ("off", "on")
        for n in (BASE_UNITS[path], BASE_UNITS[path] + units[path])
    ]
    say(f"{len(jobs)} runs under callgrind, two at a time (a minute or two each)")
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: count(*job), jobs), strict=True))
    results: dict[str, Any] = {}
    for path in ("ingress", "fold"):
        per_unit = {
            side: (
                counts[(path, side, BASE_UNITS[path] + units[path])]
                - counts[(path, side, BASE_UNITS[path])]
            )
            / units[path]
            for side in ("off", "on")
        }
        overhead = (per_unit["on"] / per_unit["off"] - 1) * 100
        results[path] = {
            "units": units[path],
            "instructions_per_unit": per_unit,
            "overhead_pct": overhead,
            "verdict": "PASS" if overhead <= LIMIT_PCT else "FAIL",
        }
    return {"counts": {f"{p} {s} {n}": c for (p, s, n), c in counts.items()}, "paths": results}


def report(measured: dict[str, Any], args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    stamp = utc_stamp()
    paths = measured["paths"]
    verdict = "PASS" if all(p["verdict"] == "PASS" for p in paths.values()) else "FAIL"
    data = {
        "benchmark": "metrics_instructions",
        "stamp": stamp,
        "machine": machine_facts(),
        "requests": args.requests,
        "records": args.records,
        **measured,
        "verdict": verdict,
    }
    rows = [
        [
            f"{path} (per {'request' if path == 'ingress' else 'record'})",
            f"{p['units']:,}",
            f"{p['instructions_per_unit']['off']:,.0f}",
            f"{p['instructions_per_unit']['on']:,.0f}",
            f"{p['overhead_pct']:+.2f} %",
            f"≤ {LIMIT_PCT:g} %",
            p["verdict"],
        ]
        for path, p in paths.items()
    ]
    md = [
        f"# Metrics overhead in instructions (callgrind), {stamp}",
        "",
        markdown_table(
            [
                "path",
                "units",
                "instructions off",
                "instructions on",
                "overhead",
                "limit",
                "verdict",
            ],
            rows,
        ),
        "",
        f"**Headline: {verdict}**",
    ]
    return data, "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The metrics' cost on the hot paths, in instructions counted by callgrind."
    )
    parser.add_argument("--requests", type=int, default=4000, help="ingress requests counted")
    parser.add_argument("--records", type=int, default=30_000, help="records folded counted")
    parser.add_argument("--drive", choices=("ingress", "fold"), help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=("off", "on"), help=argparse.SUPPRESS)
    parser.add_argument("--units", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        (drive_ingress if args.drive == "ingress" else drive_fold)(args.side, args.units)
        return
    if args.records % 5000 or not 0 < args.records <= FOLD_POOL - BASE_UNITS["fold"]:
        parser.error(f"--records: a multiple of 5000, at most {FOLD_POOL - BASE_UNITS['fold']}")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not on PATH (Debian: apt-get install valgrind)")
    data, markdown = report(measure(args), args)
    write_report("metrics_instructions", data["stamp"], data, markdown)
    print(markdown)
    raise SystemExit(0 if data["verdict"] == "PASS" else 1)


if __name__ == "__main__":
    main()
