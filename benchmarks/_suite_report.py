"""The suite's report: what it reads of each scenario's JSON (its targets, its checks, the
figures a table and a plot need), and `report.md`, `suite.json` and the PNG plots it writes.

A target is `{"name", "figure", "limit", "floor", "unit", "met"}`: `floor` when the figure must
be at least the limit (a ratio to a peer or to the bare limit), else a ceiling (a latency, a
size). The scripts written with the suite put their targets in their summary; for the older
ones, `SCENARIO_READERS` holds what each summary means.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

from harness._machine import machine_line

Reader = Callable[[dict[str, Any]], dict[str, Any]]


def _target(
    name: str, figure: float | None, limit: float, *, floor: bool, unit: str
) -> dict[str, Any]:
    met = figure is not None and (figure >= limit if floor else figure <= limit)
    return {
        "name": name,
        "figure": figure,
        "limit": limit,
        "floor": floor,
        "unit": unit,
        "met": met,
    }


def _given(data: dict[str, Any]) -> dict[str, Any]:
    """A summary that states its own targets and checks."""
    summary = data["summary"]
    return {
        "targets": summary.get("targets", []),
        "checks_ok": bool(summary.get("checks_ok")),
        "check": summary.get("check", ""),
        "summary": summary,
    }


_FOLD_AGAINST = {
    "bare": "records/s, ours / bare aiokafka loop",
    "quix": "records/s, ours / Quix Streams",
    "faust": "records/s, ours / faust-streaming",
}


def _fold(data: dict[str, Any]) -> dict[str, Any]:
    summary = data["summary"]
    targets = [
        _target(
            _FOLD_AGAINST.get(name, name) + f" ({head['against']})",
            head["ratio"],
            head["floor"],
            floor=True,
            unit="x",
        )
        for name, head in summary.get("headline", {}).items()
    ]
    return {
        "targets": targets,
        "checks_ok": bool(summary.get("all_checks_correct")),
        "check": "every run's sums checked key by key against the pre-fill's",
        "summary": summary,
        "workload": data.get("workload"),
    }


def _flush(data: dict[str, Any]) -> dict[str, Any]:
    summary = data["summary"]
    layouts = summary.get("layouts", [])
    return {
        "targets": [
            _target(
                f"rows/s, flush / raw COPY, {layout['layout']}",
                layout["ratio"],
                summary["limit"],
                floor=True,
                unit="x",
            )
            for layout in layouts
        ],
        "checks_ok": bool(layouts) and all(layout["correct"] for layout in layouts),
        "check": "after every side: its rows, the sum of its deltas, the totals' sum, the offset",
        "summary": summary,
    }


def _memory(data: dict[str, Any]) -> dict[str, Any]:
    summary = data["summary"]
    limits = summary.get("limits", {})
    released = [s for s in summary.get("scenarios", []) if s["side"] == "release"]
    targets = []
    for scenario in released:
        targets.append(
            _target(
                f"bytes per live entry, {scenario['scenario']}",
                scenario["bytes_per_entry"],
                limits.get("bytes_per_entry", 150.0),
                floor=False,
                unit="B",
            )
        )
        targets.append(
            _target(
                f"RSS kept after the flush, of the rise, {scenario['scenario']}",
                scenario["retained_pct"],
                limits.get("retained_pct", 10.0),
                floor=False,
                unit="%",
            )
        )
    scenarios = summary.get("scenarios", [])
    return {
        "targets": targets,
        "checks_ok": bool(scenarios) and all(s["correct"] for s in scenarios),
        "check": "the entries folded, the sums flushed, both flushes committed",
        "summary": summary,
    }


def _reads(data: dict[str, Any]) -> dict[str, Any]:
    summary = data["summary"]
    ryw = summary.get("read_your_writes") or {}
    return {
        "targets": [
            _target(
                "GET /counters/{key} p99 at a fixed rate",
                summary.get("counter_p99_ms"),
                summary.get("counter_limit_ms", 5.0),
                floor=False,
                unit="ms",
            ),
            _target(
                "history of 30 days at 1 h, p99",
                summary.get("history_p99_ms"),
                summary.get("history_limit_ms", 20.0),
                floor=False,
                unit="ms",
            ),
        ],
        "checks_ok": bool(
            summary.get("all_answers_correct")
            and summary.get("history_answers_correct")
            and ryw.get("exact", True)
        ),
        "check": "every answer holds its key's value; history sums; read-your-writes exact",
        "summary": summary,
    }


# --- each scenario's own table in report.md ---------------------------------------------------

# what each side of the fold promises, in a few words (fold_peers.py's report says it whole)
GUARANTEES = {
    "bare": "none: reads and discards",
    "ours": "exactly once (sums, buckets and offset in one transaction)",
    "faust": "at-least-once",
    "quix-alos": "at-least-once",
    "quix-eos": "exactly-once state and offsets; the sink upserts outside them",
}


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _fold_table(summary: dict[str, Any]) -> list[str]:
    rates = summary["median_records_per_s"]
    ours = rates.get("ours")
    rows = [
        [
            side,
            _n(rate),
            "-" if side == "ours" or not rate or not ours else f"{ours / rate:.2f}x",
            GUARANTEES.get(side, ""),
        ]
        for side, rate in rates.items()
    ]
    return _rows(["side", "records/s (median)", "ours / side", "delivery guarantee"], rows)


def _ingress_table(summary: dict[str, Any]) -> list[str]:
    rows = []
    for payload, sides in summary["openloop"].items():
        for side, levels in sides.items():
            peak = summary["peaks"][payload][side]
            for level, f in levels.items():
                rows.append(
                    [
                        payload,
                        side,
                        _n(peak["increments_per_s"]),
                        level,
                        _n(f["rate"]),
                        _n(f["p50_ms"], 2),
                        _n(f["p99_ms"], 2),
                        _n(f["p999_ms"], 2),
                        str(f["errors"]),
                    ]
                )
    header = ["payload", "side", "peak increments/s", "load", "requests/s"]
    return _rows([*header, "p50 ms", "p99 ms", "p99.9 ms", "errors"], rows)


def _end_to_end_table(summary: dict[str, Any]) -> list[str]:
    rows = [
        [
            f"{int(interval) / 1000:g} s",
            str(f["probes"]),
            _n(f["load_per_s"]),
            _n(f["p50_ms"]),
            _n(f["p90_ms"]),
            _n(f["p99_ms"]),
            _n(f["max_ms"]),
        ]
        for interval, f in summary["intervals"].items()
    ]
    header = ["flush interval", "probes", "steady POST/s", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    return _rows(header, rows)


def _flush_table(summary: dict[str, Any]) -> list[str]:
    rows = [
        [layout["layout"], *(_n(rate) for rate in layout["rows_per_s"].values())]
        for layout in summary["layouts"]
    ]
    sides = list(summary["layouts"][0]["rows_per_s"]) if summary["layouts"] else []
    return _rows(["layout", *(f"{side} rows/s" for side in sides)], rows)


def _memory_table(summary: dict[str, Any]) -> list[str]:
    rows = [
        [
            s["scenario"],
            s["side"],
            _n(s["bytes_per_entry"], 1),
            *(_n(s[key] / 2**20, 1) for key, _ in _STAGES),
        ]
        for s in summary["scenarios"]
    ]
    return _rows(["entries", "side", "B/entry", *(f"{name} MiB" for _, name in _STAGES)], rows)


def _reads_table(summary: dict[str, Any]) -> list[str]:
    rows = [
        [load, _n(f["achieved_per_s"]), _n(f["p50"], 2), _n(f["p99"], 2), _n(f["max"], 2)]
        for load, f in summary["medians_ms"].items()
    ]
    return _rows(["load", "requests/s", "p50 ms", "p99 ms", "max ms"], rows)


def _scale_table(summary: dict[str, Any]) -> list[str]:
    rates = summary["median_records_per_s"]
    return _rows(
        ["aggregators", "records/s (median)"], [[side, _n(rate)] for side, rate in rates.items()]
    )


_TABLES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "fold_peers": _fold_table,
    "ingress_openloop": _ingress_table,
    "end_to_end": _end_to_end_table,
    "flush": _flush_table,
    "memory": _memory_table,
    "reads": _reads_table,
    "scale_out": _scale_table,
}


def _table(run: dict[str, Any]) -> list[str]:
    """The scenario's figures as a table, or nothing when its summary lacks them (a run that
    stopped early)."""
    make = _TABLES.get(run["name"])
    if make is None or "summary" not in run:
        return []
    try:
        return ["", *make(run["summary"])]
    except (KeyError, TypeError, ValueError, IndexError):
        return []


SCENARIO_READERS: dict[str, Reader] = {
    "fold_peers": _fold,
    "ingress_openloop": _given,
    "end_to_end": _given,
    "flush": _flush,
    "memory": _memory,
    "reads": _reads,
    "scale_out": _given,
}


# --- Markdown ---------------------------------------------------------------------------------


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:.1f} %"
    return f"{value:,.1f} {unit}" if abs(value) < 1000 else f"{value:,.0f} {unit}"


def _limit(target: dict[str, Any]) -> str:
    return ("≥ " if target["floor"] else "≤ ") + _figure(target["limit"], target["unit"])


def write_report(out: Path, summary: dict[str, Any]) -> str:
    """Write `suite.json`, the plots and `report.md` into `out`; the Markdown."""
    plots = {run["name"]: _plot(out, run) for run in summary["scenarios"] if "summary" in run}
    kept = [{k: v for k, v in run.items() if k != "summary"} for run in summary["scenarios"]]
    (out / "suite.json").write_text(
        json.dumps({**summary, "scenarios": kept}, indent=2, default=str) + "\n",
        encoding="utf-8",
    )
    markdown = _markdown(summary, plots)
    (out / "report.md").write_text(markdown + "\n", encoding="utf-8")
    return markdown


def _markdown(summary: dict[str, Any], plots: dict[str, list[str]]) -> str:
    commit = summary["commit"]
    stack = summary["stack"]
    where = (
        "a private local stack (its own Kafka broker and PostgreSQL server)"
        if stack.get("private")
        else "the stack the environment named"
    )
    lines = [
        f"# distcount benchmarks, {summary['date']}{' (quick)' if summary['quick'] else ''}",
        "",
        f"Machine: {machine_line(summary['machine'])}; every process (the load, the services, the "
        f"broker, PostgreSQL) on the same cores. Against {where}. Commit `{commit['id'][:12]}`"
        f"{' with uncommitted changes' if commit['dirty'] else ''}; the suite took "
        f"{summary['elapsed_s'] / 60:.0f} min. Each figure is a ratio or a percentile measured "
        "side by side in one run; each scenario's report gives every run, its spread and how "
        "busy the machine was.",
        "",
        "| scenario | target | figure | limit | met | checks | report |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in summary["scenarios"]:
        md = run["report"].removesuffix(".json") + ".md" if run.get("report") else None
        report = f"[{md}]({md})" if md else run["log"]
        checks = "ok" if run.get("checks_ok") else "FAILED"
        targets = run.get("targets") or [None]
        for target in targets:
            if target is None:
                lines.append(
                    f"| {run['letter']}. {run['title']} | {run.get('error', 'no target')} "
                    f"| - | - | - | {checks} | {report} |"
                )
                continue
            lines.append(
                f"| {run['letter']}. {run['title']} | {target['name']} "
                f"| {_figure(target['figure'], target['unit'])} | {_limit(target)} "
                f"| {'yes' if target['met'] else '**no**'} | {checks} | {report} |"
            )
    for run in summary["scenarios"]:
        lines += [
            "",
            f"## {run['letter']}. {run['title']}",
            "",
            f"`{run['command']}`: {run['status']} in {run['elapsed_s'] / 60:.1f} min. "
            f"Checked: {run.get('check') or '-'}: {'ok' if run.get('checks_ok') else 'FAILED'}.",
        ]
        lines += _table(run)
        lines += [f"\n![{name}]({name})" for name in plots.get(run["name"], [])]
    return "\n".join(lines)


# --- plots ------------------------------------------------------------------------------------


def _plot(out: Path, run: dict[str, Any]) -> list[str]:
    """The PNG files of one scenario (none when its summary lacks what they show)."""
    draw = _PLOTS.get(run["name"])
    if draw is None:
        return []
    try:
        return draw(out, run)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        print(f"suite: no plot for {run['name']}: {type(exc).__name__}: {exc}")
        return []
    finally:
        plt.close("all")


def _save(out: Path, name: str, title: str) -> list[str]:
    plt.title(title, fontsize=10)
    plt.tight_layout()
    plt.savefig(out / name, dpi=110)
    return [name]


def _bars(labels: list[str], values: list[float], xlabel: str, *, log: bool = False) -> None:
    plt.figure(figsize=(8, 0.5 * len(labels) + 1.4))
    bars = plt.barh(labels, values, color="#4c72b0")
    plt.gca().invert_yaxis()
    if log:
        plt.xscale("log")
    plt.xlabel(xlabel)
    for bar, value in zip(bars, values, strict=True):
        plt.text(value, bar.get_y() + bar.get_height() / 2, f" {value:,.0f}", va="center")


def _plot_fold(out: Path, run: dict[str, Any]) -> list[str]:
    rates = run["summary"]["median_records_per_s"]
    sides = [side for side, rate in rates.items() if rate]
    labels = [f"{side}\n({GUARANTEES.get(side, '')[:24]})" for side in sides]
    _bars(labels, [rates[s] for s in sides], "records/s, spawn to exact totals (log)", log=True)
    return _save(out, "fold.png", "a. Fold and flush: median records/s")


def _plot_flush(out: Path, run: dict[str, Any]) -> list[str]:
    layouts = run["summary"]["layouts"]
    sides = list(layouts[0]["rows_per_s"])
    plt.figure(figsize=(8, 4))
    width = 0.8 / len(sides)
    for i, side in enumerate(sides):
        xs = [n + i * width for n in range(len(layouts))]
        plt.bar(xs, [layout["rows_per_s"][side] for layout in layouts], width, label=side)
    plt.xticks(
        [n + width * (len(sides) - 1) / 2 for n in range(len(layouts))],
        [layout["layout"] for layout in layouts],
    )
    plt.ylabel("rows/s (median)")
    plt.legend()
    return _save(out, "flush.png", "d. Flush transaction against a raw COPY")


_STAGES = (
    ("baseline_rss", "baseline"),
    ("full_rss", "state full"),
    ("after_flush_rss", "after flush"),
    ("full2_rss", "full again"),
    ("after_flush2_rss", "after flush 2"),
)


def _plot_memory(out: Path, run: dict[str, Any]) -> list[str]:
    scenarios = run["summary"]["scenarios"]
    plt.figure(figsize=(9, 4))
    for scenario in scenarios:
        label = f"{scenario['scenario']}, {scenario['side']}"
        style = "-" if scenario["side"] == "release" else "--"
        plt.plot(
            [name for _, name in _STAGES],
            [scenario[key] / 2**20 for key, _ in _STAGES],
            style,
            marker="o",
            label=label,
        )
    plt.ylabel("RSS, MiB")
    plt.legend(fontsize=7)
    return _save(out, "memory.png", "e. Aggregator RSS through two fold-and-flush cycles")


def _plot_reads(out: Path, run: dict[str, Any]) -> list[str]:
    medians = run["summary"]["medians_ms"]
    loads = list(medians)
    plt.figure(figsize=(8, 4))
    for i, q in enumerate(("p50", "p99")):
        plt.bar(
            [n + i * 0.4 for n in range(len(loads))], [medians[s][q] for s in loads], 0.4, label=q
        )
    plt.xticks([n + 0.2 for n in range(len(loads))], loads)
    plt.yscale("log")
    plt.ylabel("ms (log)")
    plt.legend()
    return _save(out, "reads.png", "f. Reads at a fixed rate, open loop")


def _plot_ingress(out: Path, run: dict[str, Any]) -> list[str]:
    summary = run["summary"]
    peaks = summary["peaks"]
    payloads = list(peaks)
    sides = list(peaks[payloads[0]])
    plt.figure(figsize=(8, 4))
    width = 0.8 / len(sides)
    for i, side in enumerate(sides):
        xs = [n + i * width for n in range(len(payloads))]
        plt.bar(xs, [peaks[p][side]["increments_per_s"] for p in payloads], width, label=side)
    plt.xticks([n + width * (len(sides) - 1) / 2 for n in range(len(payloads))], payloads)
    plt.yscale("log")
    plt.ylabel("increments/s at the peak (log)")
    plt.legend()
    names = _save(out, "ingress_peak.png", "b. Ingress: peak increments/s (closed loop)")
    plt.close("all")
    openloop = summary["openloop"]
    rows = [
        (f"{payload} {side} {level}", figures)
        for payload, by_side in openloop.items()
        for side, levels in by_side.items()
        for level, figures in levels.items()
    ]
    plt.figure(figsize=(9, 0.32 * len(rows) + 1.5))
    labels = [label for label, _ in rows]
    # p99 behind, p50 in front: each bar shows both
    for q, color in (("p99_ms", "#dd8452"), ("p50_ms", "#4c72b0")):
        plt.barh(labels, [figures[q] for _, figures in rows], color=color, label=q[:3])
    plt.gca().invert_yaxis()
    plt.xscale("log")
    plt.xlabel("ms from the timetable (log)")
    plt.legend()
    return names + _save(out, "ingress_latency.png", "b. Ingress: open-loop latency")


def _plot_end_to_end(out: Path, run: dict[str, Any]) -> list[str]:
    intervals = run["summary"]["intervals"]
    plt.figure(figsize=(8, 4))
    for interval, figures in intervals.items():
        latencies = sorted(figures["latencies_ms"])
        if not latencies:
            continue
        share = [(i + 1) / len(latencies) for i in range(len(latencies))]
        line = plt.plot(latencies, share, label=f"flush every {int(interval) / 1000:g} s")
        plt.axvline(int(interval) + 100, color=line[0].get_color(), linestyle=":")
    plt.xlabel("ms from POST to visible (dotted: the interval + 100 ms)")
    plt.ylabel("share of probes")
    plt.legend()
    return _save(out, "end_to_end.png", "c. End to end: POST to visible through GET")


def _plot_scale(out: Path, run: dict[str, Any]) -> list[str]:
    rates = run["summary"]["median_records_per_s"]
    sides = list(rates)
    _bars([f"{side} aggregator(s)" for side in sides], [rates[s] for s in sides], "records/s")
    return _save(out, "scale_out.png", "g. Scale-out: one aggregator against two")


_PLOTS: dict[str, Callable[[Path, dict[str, Any]], list[str]]] = {
    "fold_peers": _plot_fold,
    "ingress_openloop": _plot_ingress,
    "end_to_end": _plot_end_to_end,
    "flush": _plot_flush,
    "memory": _plot_memory,
    "reads": _plot_reads,
    "scale_out": _plot_scale,
}
