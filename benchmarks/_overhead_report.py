"""The report of metrics_overhead.py: per path, the overhead of metrics on over off from chunk
pairs (the headline), from whole runs and per CPU second, against the 5 % limit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import harness as h

if TYPE_CHECKING:
    from metrics_overhead import RunResult

LIMIT = h.Limit(5.0, floor=False, unit=" %")


def _overhead(on: float, off: float) -> float:
    return (1 - on / off) * 100


def summarize(runs: list[RunResult], path: str) -> dict[str, Any] | None:
    off = [r for r in runs if r.path == path and r.side == "off" and r.counted]
    on = [r for r in runs if r.path == path and r.side == "on" and r.counted]
    if not off or not on:
        return None
    off_rate, on_rate = h.median([r.rate for r in off]), h.median([r.rate for r in on])
    by_index = {r.index: r for r in off}
    paired = [_overhead(r.rate, by_index[r.index].rate) for r in on if r.index in by_index]
    # The headline: each "on" chunk against the "off" chunk run next to it. This machine's speed
    # swings by up to 2x within seconds; neighbours in time share it, whole runs do not.
    chunk_pairs = [
        _overhead(off_wall, on_wall)  # equal work: the rate ratio is the inverse time ratio
        for r in on
        if r.index in by_index
        for on_wall, off_wall in zip(r.chunk_wall_s, by_index[r.index].chunk_wall_s, strict=True)
    ]
    overhead = h.median(chunk_pairs)
    cpu = {"off": h.median([r.cpu_rate for r in off]), "on": h.median([r.cpu_rate for r in on])}

    def spread(side: list[RunResult]) -> dict[str, float]:
        rates = [r.rate for r in side]
        low, high = min(rates), max(rates)
        return {"min": low, "max": high, "relative": (high - low) / h.median(rates)}

    correct = all(r.checks.get("correct") for r in off + on)
    return {
        "runs_per_side": min(len(off), len(on)),
        "rounds_set_aside": len({r.index for r in runs if r.path == path and not r.counted}),
        "counted_rounds_disturbed": len({r.index for r in off + on if r.disturbed}),
        "median_per_s": {"off": off_rate, "on": on_rate},
        "overhead_pct": overhead,
        "chunk_pairs": len(chunk_pairs),
        "overhead_of_medians_pct": _overhead(on_rate, off_rate),
        "paired_overhead_pct": {
            "each": paired,
            "min": min(paired) if paired else None,
            "median": h.median(paired) if paired else None,
            "max": max(paired) if paired else None,
        },
        "spread": {"off": spread(off), "on": spread(on)},
        "median_per_cpu_s": cpu,
        "cpu_overhead_pct": _overhead(cpu["on"], cpu["off"]),
        "limit_pct": LIMIT.value,
        "all_checks_correct": correct,
        "verdict": h.verdict(LIMIT.passes(overhead) and correct),
    }


def _counted_cell(run: RunResult) -> str:
    if not run.counted:
        return "no: disturbed, run again"
    return "yes (disturbed)" if run.disturbed else "yes"


def _check_cell(run: RunResult) -> str:
    c = run.checks
    ok = "ok" if c.get("correct") else "WRONG"
    if run.path == "ingress":
        counted = f", counted {c['requests_counted']:,}" if "requests_counted" in c else ""
        return f"{ok}: {c['statuses']}{counted}"
    counted = f", counted {c['records_counted']:,}" if "records_counted" in c else ""
    return f"{ok}: folded {c['folded']:,}, {c['flushes']} flushes{counted}"


def _method(meta: dict[str, Any]) -> list[str]:
    w, paths, versions = meta["workload"], meta["paths"], meta["versions"]
    md = [
        f"Machine: {h.machine_line(meta['machine'])}, uvloop {versions['uvloop']}, Starlette "
        f"{versions['starlette']}. One process, one uvloop event loop; the datagram drain is a "
        "child process.",
        "",
        f'Metrics "on": reporter {w["reporter"]} to a UDP port on 127.0.0.1, every '
        f"{w['interval_ms']} ms, sample rate {w['sample_rate']}, constant tags "
        f'{w["tags"] or "(none)"}; "off": DISTCOUNT_METRICS=off. {w["repeat"]} rounds per path '
        "counted; in each round both sides' hooks are built afresh (after one unmeasured chunk a "
        f"side, to warm up) and each side's run is cut into {w['chunks']} chunks, run "
        "alternately (off 1, on 1, on 2, off 2, off 3, on 3, ...; starting with on in even "
        "rounds), so that both meet the same moments of a machine whose speed drifts, and each "
        "runs second in half the chunks.",
        "",
    ]
    if "ingress" in paths:
        md += [
            f"**ingress**: {w['requests']:,} `POST /increment` requests per run through the "
            f"app of `create_app` called as an ASGI app by {w['concurrency']} coroutines (each "
            'request awaited to its end, then the loop gets a turn), bodies `{"key": "c<i mod '
            f'{w["ingress_keys"]}>", "value": 1}}`, a publisher that acknowledges at once; the '
            "garbage-collector tuning of the ingress (`collect_garbage_rarely`). No HTTP server "
            "and no socket: the app's own cost, which a real server's work would only dilute.",
            "",
        ]
    if "fold" in paths:
        md += [
            f"**fold**: {w['records']:,} `aiokafka` consumer records per run ({w['fold_keys']:,}"
            f" keys, {w['partitions']} partitions, timestamps spread over {w['spread_ms']:,} ms,"
            f" buckets of {w['bucket_ms']:,} ms), in fetches of {w['fetch_records']:,} split by "
            "partition; for each partition's share `metrics.on_fetched` then `fold` (a fresh "
            f"`RecordDecoder` and fresh states per run); every {w['flush_every']} fetches (and "
            "at the end) each dirty partition's flush is simulated: `metrics.on_flush(..., "
            "'committed', entries, 0.01)` then `state.committed()` (no PostgreSQL).",
            "",
        ]
    return [
        *md,
        "Rates are units over the wall time of a run's chunks, each timed from entering "
        '`metrics.reporting()` to leaving it. "per CPU s" divides by this process\'s CPU time '
        'instead. "others" = the share of all cores busy with other processes during the run; '
        f"a round where it reached {h.QUIET_BELOW:.0%} in either run is set aside and run again "
        "(at most --max-extra times per path).",
        "",
    ]


def report(
    session: h.Session, meta: dict[str, Any], runs: list[RunResult], error: str | None
) -> int:
    summaries = {path: summarize(runs, path) for path in meta["paths"]}
    measured = {path: s for path, s in summaries.items() if s is not None}
    if not measured:
        lines = [f"- {r.path} {r.side} run {r.index}: {r.rate:,.0f}/s" for r in runs]
        return session.failed(meta, [r.as_dict() for r in runs], lines, error or "no runs")
    missing = len(measured) < len(summaries)
    passed = all(s["verdict"] == "PASS" for s in measured.values())
    verdict = h.verdict(passed, error or ("a path was not measured" if missing else None))
    null = meta["workload"]["null_test"]
    summary = {
        "paths": summaries,
        "verdict": verdict,
        "error": error,
        "limit_pct": LIMIT.value,
        "null_test": null,
    }
    run_rows = [
        [
            *(r.path, r.index, r.side, r.units, f"{r.wall_s:.3f}", f"{r.rate:,.0f}"),
            *(f"{r.cpu_rate:,.0f}", h.pct(r.others_during), _counted_cell(r)),
            *(r.checks.get("datagrams", 0), r.checks.get("reports", 0), _check_cell(r)),
        ]
        for r in runs
    ]
    path_rows = [
        [
            f"{path} ({'requests' if path == 'ingress' else 'records'})",
            *(f"{s['median_per_s'][side]:,.0f}" for side in ("off", "on")),
            f"{s['overhead_pct']:+.2f} % ({s['chunk_pairs']} pairs)",
            f"{s['overhead_of_medians_pct']:+.2f} %",
            " / ".join(f"{s['paired_overhead_pct'][k]:+.1f}" for k in ("min", "median", "max"))
            + " %",
            *(f"{s['spread'][side]['relative']:.1%}" for side in ("off", "on")),
            f"{s['cpu_overhead_pct']:+.2f} %",
            f"≤ {LIMIT.value:g} %",
            s["verdict"] + ("" if s["all_checks_correct"] else " (a check failed: see the runs)"),
        ]
        for path, s in measured.items()
    ]
    md = [
        session.heading(),
        "",
        *(
            [
                '**Null test: the "on" side runs with metrics off as well.** The overhead below '
                "is what the method shows where there is none: its noise and bias.",
                "",
            ]
            if null
            else []
        ),
        *_method(meta),
        h.table(
            [
                *("path", "round", "side", "units", "wall s", "per s", "per CPU s", "others"),
                *("counted", "datagrams", "reports", "check"),
            ],
            run_rows,
        ),
        "",
        h.table(
            [
                *("path", "median off /s", "median on /s", "overhead (median of chunk pairs)"),
                *("1 - median on / median off", "paired runs min / median / max", "spread off"),
                *("spread on", "overhead per CPU s", "limit", "verdict"),
            ],
            path_rows,
        ),
        "",
        "Overhead = the median, over every chunk of every round counted, of 1 - (off chunk's "
        "time / on chunk's time), the two chunks run one after the other on equal work; "
        "1 - median on / median off = the same from whole runs' per-second rates; paired runs = "
        "that for each round's two runs; spread = (max - min) / median of a side's rates; "
        "overhead per CPU s = 1 - median on / median off from the rates per CPU second. Each "
        "chunk's time is in the JSON report.",
        "",
        *(
            f"{path}: {s['rounds_set_aside']} round(s) set aside as disturbed; "
            f"{s['counted_rounds_disturbed']} counted round(s) disturbed all the same.\n"
            for path, s in measured.items()
            if s["rounds_set_aside"] or s["counted_rounds_disturbed"]
        ),
        ("**Null test: off against off shows " if null else "**Headline: metrics on cost ")
        + ", ".join(f"{s['overhead_pct']:.2f} % on the {p} path" for p, s in measured.items())
        + f"; {LIMIT}: {verdict}**",
        *h.error_lines(error),
    ]
    data = {**meta, "runs": [r.as_dict() for r in runs], "summary": summary}
    return session.finish(data, "\n".join(md))
