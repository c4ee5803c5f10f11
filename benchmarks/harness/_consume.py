"""Sides that read a pre-filled topic, each a child process timed from its spawn to done.

A reader program (the bare loop; later, the peers) speaks a small protocol on stdout:
`assigned <partitions>` on its first assignment, `progress <records>` now and then, and
`done <json>` once its position in every partition has reached the end offset, with at least
`records`, `delivered_twice` and `cpu_seconds` in the JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness._console import say
from harness._process import Child, Line
from harness._report import fmt, median, pct, table


@dataclass
class ConsumeRun:
    side: str
    index: int
    records: int
    wall_s: float  # process spawn -> done
    startup_s: float | None  # process spawn -> first partition assignment
    cpu_s: float | None  # the child process's own CPU time when done
    exit_status: int | None
    shutdown_s: float
    checks: dict[str, Any]  # "correct" among them
    background_busy: float | None = None  # machine busy just before the child was spawned

    @property
    def records_per_s(self) -> float:
        return self.records / self.wall_s

    @property
    def after_assignment_s(self) -> float | None:
        return None if self.startup_s is None else self.wall_s - self.startup_s

    @property
    def records_per_s_after_assignment(self) -> float | None:
        after = self.after_assignment_s
        return None if not after else self.records / after

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "records_per_s": self.records_per_s,
            "after_assignment_s": self.after_assignment_s,
            "records_per_s_after_assignment": self.records_per_s_after_assignment,
        }


def relay(side: str, expected: int) -> Callable[[Line], None]:
    """Echo a child's progress lines and errors as they come."""

    def on_line(line: Line) -> None:
        if line.text.startswith("progress "):
            say(f"  {side}: {int(line.text.split()[1]):,}/{expected:,} records read")
        elif line.stream == "err" and (" ERROR " in line.text or "Traceback" in line.text):
            say(f"  {side} stderr: {line.text}")

    return on_line


async def run_reader(
    side: str,
    index: int,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    expected: int,
    timeout_s: float,
    log_dir: Path,
    background_busy: float | None,
) -> ConsumeRun:
    """Spawn a reader program, wait for its `done` line, stop it; correct = it read every
    record up to the end offsets (records handed twice are reported apart)."""
    child = await Child.spawn(
        side, argv, env, log_dir / f"run{index}-{side}.log", on_line=relay(side, expected)
    )
    try:
        done = await child.wait_for_line(lambda t: t.startswith("done "), timeout_s + 30)
    finally:
        status, shutdown_s = await child.stop()
    report = json.loads(done.text.removeprefix("done "))
    result = ConsumeRun(
        side,
        index,
        report["records"],
        done.at - child.spawned_at,
        child.since_spawn(child.first_line(lambda t: t.startswith("assigned "))),
        report["cpu_seconds"],
        status,
        shutdown_s,
        {
            "correct": report["records"] == expected,
            "records_read": report["records"],
            "delivered_twice": report["delivered_twice"],
            "child_report": report,
        },
        background_busy,
    )
    say(f"run {index} {side}: {result.records:,} records in {result.wall_s:.2f} s")
    return result


def compare_reads(runs: Sequence[ConsumeRun], sides: Sequence[str], base: str) -> dict[str, Any]:
    """Each side's median records/s (spawn to done, and from its first assignment) and its
    ratio to the `base` side's; every side must have runs."""
    groups = {side: [r for r in runs if r.side == side] for side in sides}
    rps = {side: median([r.records_per_s for r in group]) for side, group in groups.items()}

    def after(group: list[ConsumeRun]) -> float | None:
        values = [r.records_per_s_after_assignment for r in group]
        known = [v for v in values if v is not None]
        return median(known) if len(known) == len(values) and known else None

    rps_after = {side: after(group) for side, group in groups.items()}
    base_after = rps_after[base]
    return {
        "median_records_per_s": rps,
        "ratios": {side: rps[side] / rps[base] for side in sides if side != base},
        "excluding_startup": {
            "median_records_per_s": rps_after,
            "ratios": {
                side: value / base_after if value and base_after else None
                for side, value in rps_after.items()
                if side != base
            },
        },
        "median_startup_s": {
            side: median([r.startup_s for r in group if r.startup_s is not None])
            for side, group in groups.items()
        },
    }


def reads_tables(
    runs: Sequence[ConsumeRun],
    compared: dict[str, Any],
    labels: Mapping[str, str],
    check_cell: Callable[[ConsumeRun], str],
) -> list[str]:
    """The table of every run, then the medians of each side (labelled) with its ratio."""
    rows = [
        [
            *(r.index, r.side, r.records, fmt(r.wall_s), f"{r.records_per_s:,.0f}"),
            *(fmt(r.startup_s), fmt(r.after_assignment_s)),
            *(fmt(r.records_per_s_after_assignment, 0), fmt(r.cpu_s), pct(r.background_busy)),
            check_cell(r),
        ]
        for r in runs
    ]
    rps, after = compared["median_records_per_s"], compared["excluding_startup"]
    startup = compared["median_startup_s"]
    ratios, ratios_after = compared["ratios"], after["ratios"]
    ratio_sides = list(ratios)
    return [
        table(
            [
                *("run", "side", "records", "wall s", "records/s", "start-up s"),
                *("after assignment s", "records/s excluding startup", "CPU s", "busy before"),
                "check",
            ],
            rows,
        ),
        "",
        table(
            ["", *labels.values(), *(f"ratio {s}" if len(ratios) > 1 else "ratio" for s in ratios)],
            [
                [
                    "median records/s",
                    *(f"{rps[side]:,.0f}" for side in labels),
                    *(f"{ratios[side]:.3f}" for side in ratio_sides),
                ],
                [
                    "median records/s, excluding startup",
                    *(fmt(after["median_records_per_s"][side], 0) for side in labels),
                    *(fmt(ratios_after[side], 3) for side in ratio_sides),
                ],
                [
                    "median start-up s",
                    *(fmt(startup[side]) for side in labels),
                    *("" for _ in ratio_sides),
                ],
            ],
        ),
    ]
