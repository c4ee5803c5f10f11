"""One run of a hot path of benchmarks/_hotpaths.py, for metrics_instructions.py to count under
callgrind: `_instructions_driver.py PATH SIDE UNITS` runs UNITS requests (ingress) or records
(fold) with metrics off or on, then prints one `CHECKS <json>` line. It imports no more than the
path needs, as everything it does is counted.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

import uvloop

from _hotpaths import FoldPath, IngressPath, Records, Requests
from distcount_aggregator import MAX_RECORDS_PER_FETCH
from distcount_config import load

CHECKS = "CHECKS "
FETCH = 5000  # records a fetch: the aggregator's MAX_RECORDS_PER_FETCH, checked below
FOLD_POOL = 40_000  # records built by every fold run; it folds the first `units` of them


def drive(path: str, side: str, units: int) -> None:
    """Run `units` requests or records through the path, then print what it checked."""
    assert MAX_RECORDS_PER_FETCH == FETCH, "the aggregator's fetch size changed"
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))  # read at the end only: the kernel drops what overflows
    settings = load(
        {
            "DISTCOUNT_METRICS": "off" if side == "off" else "dogstatsd",
            "DISTCOUNT_STATSD_PORT": str(sink.getsockname()[1]),
            "DISTCOUNT_METRICS_INTERVAL_MS": "1000",
            "DISTCOUNT_METRICS_TAGS": "env:bench",
        }
    )
    work: IngressPath | FoldPath
    if path == "ingress":
        work = IngressPath(settings, Requests.build(1000), concurrency=64)
        numbers = range(units)
    else:
        # the same records are built whatever `units` is, so building them cancels out
        work = FoldPath(settings, Records.build(FOLD_POOL, 10_000, 6, 5000), flush_every=2)
        numbers = range(units // FETCH)

    async def main() -> None:
        async with work.metrics.reporting():
            await work.run(numbers)
            if isinstance(work, FoldPath):
                work.flush()

    uvloop.run(main())
    sink.setblocking(False)
    datagrams = 0
    while True:
        try:
            sink.recv(65536)
        except BlockingIOError:
            break
        datagrams += 1
    if isinstance(work, IngressPath):
        checks: dict[str, Any] = {"correct": work.correct(units), "statuses": work.statuses}
    else:
        correct = work.folded == units and work.rejected == 0
        checks = {"correct": correct, "folded": work.folded, "rejected": work.rejected}
    checks["datagrams"] = datagrams
    checks["correct"] = checks["correct"] and (datagrams > 0) == (side == "on")
    print(CHECKS + json.dumps(checks), flush=True)


if __name__ == "__main__":
    drive(sys.argv[1], sys.argv[2], int(sys.argv[3]))
