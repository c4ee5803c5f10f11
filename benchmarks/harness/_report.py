"""Reports: a JSON file with every figure and setting, a Markdown file with the tables (also
printed), a headline figure held against its limit, and the exit status that goes with it.

Files go to benchmarks/results/ (git-ignored), or to the folder `BENCHMARK_RESULTS_DIR` names
(the suite's dated folder): `<name>-<UTC stamp>.json` and `.md`, and the children's output to
`logs/<name>-<UTC stamp>/`.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from harness._console import say, utc_stamp
from harness._machine import machine_facts
from harness._process import BENCH_DIR, ROOT

RESULTS_DIR = Path(os.environ.get("BENCHMARK_RESULTS_DIR") or BENCH_DIR / "results").absolute()
EXIT_STATUS = {"PASS": 0, "FAIL": 1, "ERROR": 2}


class _Sided(Protocol):
    @property
    def side(self) -> str: ...


S = TypeVar("S", bound=_Sided)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def by_side(runs: Sequence[S], sides: Sequence[str]) -> dict[str, list[S]]:
    """Each side's runs, in the order they ran."""
    return {side: [r for r in runs if r.side == side] for side in sides}


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def pct(value: float | None) -> str:
    """A fraction as a whole percentage: 0.153 -> 15%."""
    return "-" if value is None else f"{value:.0%}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; ints get thousands separators, None is "-"."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return "-" if value is None else str(value)

    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Limit:
    """What a headline figure must reach: a floor (`figure >= value`, a ratio of ours to the
    bare limit) or a ceiling (`figure <= value`, an overhead in percent)."""

    value: float
    floor: bool
    unit: str = ""  # "" for a ratio, " %" for a percentage

    def passes(self, figure: float) -> bool:
        return figure >= self.value if self.floor else figure <= self.value

    def __str__(self) -> str:
        return f"floor {self.value:g}" if self.floor else f"limit ≤ {self.value:g}{self.unit}"


def verdict(passed: bool, error: str | None = None) -> str:
    return "ERROR" if error else "PASS" if passed else "FAIL"


@dataclass
class Session:
    """One run of one benchmark: its name, its time stamp, where its logs go, and the machine
    it ran on; `finish` writes the report and gives the exit status."""

    name: str
    title: str
    stamp: str = field(default_factory=utc_stamp)
    machine: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, name: str, title: str, packages: tuple[str, ...] = ()) -> Session:
        return cls(name, title, machine=machine_facts(packages))

    @property
    def log_dir(self) -> Path:
        return RESULTS_DIR / "logs" / f"{self.name}-{self.stamp}"

    def meta(self, **more: Any) -> dict[str, Any]:
        """What every report's JSON starts with."""
        return {"benchmark": self.name, "stamp": self.stamp, "machine": self.machine, **more}

    def heading(self, note: str = "") -> str:
        return f"# {self.title}{note}, {self.stamp}"

    def finish(self, data: dict[str, Any], markdown: str) -> int:
        """Write both files, print the Markdown; the exit status of the verdict in
        data["summary"]["verdict"]: 0 PASS, 1 FAIL, 2 ERROR (a run failed)."""
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        json_path = RESULTS_DIR / f"{self.name}-{self.stamp}.json"
        md_path = RESULTS_DIR / f"{self.name}-{self.stamp}.md"
        json_path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        md_path.write_text(markdown + "\n", encoding="utf-8")
        print(f"\n{markdown}\n", flush=True)
        say(f"wrote {_shown(json_path)} and {_shown(md_path)}")
        return EXIT_STATUS[data["summary"]["verdict"]]

    def failed(
        self, meta: dict[str, Any], runs: list[dict[str, Any]], lines: list[str], error: str
    ) -> int:
        """The report of a benchmark that measured too little to claim anything."""
        data = {**meta, "runs": runs, "summary": {"verdict": "ERROR", "error": error}}
        md = [
            self.heading(),
            "",
            f"**ERROR: no complete pair of runs; {error}.** No figure is claimed.",
            "",
            *lines,
        ]
        return self.finish(data, "\n".join(md))


def _shown(path: Path) -> str:
    """A path as the report names it: from the checkout's root when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def error_lines(error: str | None) -> list[str]:
    """The report's note when a benchmark stopped before its last run."""
    if error is None:
        return []
    return ["", f"**The benchmark stopped early: {error}.** Only the runs above were measured."]
