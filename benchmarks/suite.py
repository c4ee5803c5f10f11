"""The benchmark suite: every scenario of the performance report in one command.

    uv sync --group bench                         # the peers, matplotlib and tqdm, once
    uv run python benchmarks/suite.py             # the full suite (about 45 minutes on 2 cores)
    uv run python benchmarks/suite.py --quick     # every scenario in its quick form (minutes)
    uv run python benchmarks/suite.py --only a,d  # some scenarios, into <date>-only-ad/

By default it starts a private local stack (`distcount dev up` in a temporary state folder, on
free ports: its own Kafka broker and PostgreSQL server, nothing shared with the stack a developer
runs) and removes it at the end; `--use-running` measures against the stack the environment
names instead (`eval "$(uv run distcount dev status --env)"`). Each scenario is one benchmark
script in a child process, its own side-by-side rounds, its own private topic and database:

    a  fold_peers.py        fold and flush from a pre-filled topic: ours, the bare loop, faust, Quix
    b  ingress_openloop.py  the ingress against a bare and a naive handler, peak and open loop
    c  end_to_end.py        POST to visible through GET /counters/{key}, flush at 1 s and 5 s
    d  flush.py             the flush transaction against a raw COPY of the same rows
    e  memory.py            aggregator bytes per live entry at 1,000,000; what a flush frees
    f  reads.py             GET /counters/{key}, the client, history, read-your-writes
    g  scale_out.py         one aggregator against two in one group, and one of two killed

Everything goes to `benchmarks/results/<date>/` (`quick-<date>/` for `--quick`, never
committed): each script's JSON and Markdown report, `suite.json` (the machine, the commit, every
target with its figure), `report.md` (one table of targets, then a section and a plot per
scenario), the plots as PNG, and `logs/` (every child's output, not committed). A full run of
every scenario also rewrites the README's Performance section between its markers
(`--no-readme` leaves it alone).

Progress: a bar over the scenarios, the running script's last progress line beside it
(`--verbose` prints every line). Exit status: 0 when every scenario passed, 1 when one missed a
target, 2 when one could not be measured.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness._machine import machine_facts
from harness._process import BENCH_DIR, PYTHON, ROOT, free_port
from harness._vegeta import cache_bin

RESULTS = BENCH_DIR / "results"
README = ROOT / "README.md"
# what the environment may keep when a private stack is started: where the jars come from
_KEPT = ("DISTCOUNT_DEV_CACHE_DIR", "DISTCOUNT_DEV_MAVEN_REPO", "DISTCOUNT_DEV_KAFKA_VERSION")
_STATUS = {0: "PASS", 1: "FAIL"}


@dataclass(frozen=True)
class Scenario:
    letter: str
    name: str  # the benchmark's name: its script, and the stem of its reports
    title: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    modules: tuple[str, ...] = ()  # Python packages it imports beyond the workspace
    commands: tuple[str, ...] = ()  # programs it runs

    @property
    def script(self) -> Path:
        return BENCH_DIR / f"{self.name}.py"


SCENARIOS = (
    Scenario(
        "a",
        "fold_peers",
        "Fold and flush",
        (),
        ("--quick",),
        modules=("faust", "quixstreams"),
    ),
    # vegeta makes the open-loop load; the script installs it with Go when it is missing
    Scenario("b", "ingress_openloop", "Ingress", (), ("--quick",), commands=("wrk", "vegeta|go")),
    Scenario("c", "end_to_end", "End to end", (), ("--quick",)),
    Scenario("d", "flush", "Flush", (), ("--quick",)),
    # the figure is at 1,000,000 live entries: one bucket of a million keys
    Scenario(
        "e",
        "memory",
        "Memory",
        ("--layouts", "1000000x1", "--repeat", "2"),
        ("--layouts", "200000x1", "--repeat", "1", "--no-traced"),
    ),
    Scenario("f", "reads", "Reads", (), ("--quick",)),
    Scenario("g", "scale_out", "Scale-out", (), ("--quick",)),
)


def main() -> int:
    args = _parser().parse_args()
    chosen = _chosen(args.only)
    missing = _missing(chosen)
    if missing:
        print(f"suite: cannot run: {missing}", file=sys.stderr)
        return 2
    # the bench group's packages, once known to be there
    from tqdm import tqdm  # noqa: PLC0415

    from _suite_report import write_report  # noqa: PLC0415

    date = dt.datetime.now(dt.UTC).date().isoformat()
    # a partial or quick run never replaces the day's full report
    name = date if not args.only else f"{date}-only-{args.only.replace(',', '')}"
    out = Path(args.out) if args.out else RESULTS / (f"quick-{name}" if args.quick else name)
    commit = _commit()  # what is measured: the tree as the run starts, before its folder goes
    _fresh_folder(out)
    (out / "logs").mkdir(parents=True)
    started = time.monotonic()
    facts = machine_facts(("aiokafka", "asyncpg", "starlette", "uvicorn", "orjson"))
    runs: list[dict[str, Any]] = []
    with _stack(args.use_running, out / "logs") as (stack_env, stack):
        env = {**stack_env, "BENCHMARK_RESULTS_DIR": str(out.absolute())}
        # redrawn in place on a terminal; elsewhere (a log, CI) a line every half minute
        every = 0.5 if sys.stdout.isatty() else 30.0
        bar = tqdm(chosen, unit="scenario", dynamic_ncols=True, file=sys.stdout, mininterval=every)
        for scenario in bar:
            bar.set_description(f"{scenario.letter}. {scenario.title}")
            runs.append(_run(scenario, args, env, out, bar))
            bar.write(f"{scenario.letter}. {scenario.title}: {runs[-1]['status']}")
        bar.close()
    summary = {
        "date": date,
        "quick": args.quick,
        "machine": facts,
        "commit": commit,
        "stack": stack,
        "elapsed_s": round(time.monotonic() - started, 1),
        "scenarios": runs,
    }
    markdown = write_report(out, summary)
    print(markdown)
    if not args.quick and not args.only and not args.no_readme and out.parent == RESULTS:
        _update_readme(out, markdown)
    print(f"\nwrote {_shown(out)}: report.md, suite.json, the plots and each scenario's report")
    statuses = {run["status"] for run in runs}
    return 2 if "ERROR" in statuses else 1 if "FAIL" in statuses else 0


def _parser() -> argparse.ArgumentParser:
    new = argparse.ArgumentParser(description="distcount's benchmark suite, one report")
    new.add_argument("--quick", action="store_true", help="every scenario in its quick form")
    new.add_argument("--only", default="", help="comma-separated letters: a to g")
    new.add_argument(
        "--use-running",
        action="store_true",
        help="measure the stack the environment names instead of starting a private one",
    )
    new.add_argument("--out", help="the report's folder (default benchmarks/results/<date>)")
    new.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    new.add_argument("--verbose", action="store_true", help="print every line of every script")
    return new


def _chosen(only: str) -> list[Scenario]:
    if not only:
        return list(SCENARIOS)
    letters = {part.strip() for part in only.split(",") if part.strip()}
    unknown = letters - {s.letter for s in SCENARIOS}
    if unknown:
        raise SystemExit(f"suite: no scenario {', '.join(sorted(unknown))} (a to g)")
    return [s for s in SCENARIOS if s.letter in letters]


def _missing(chosen: list[Scenario]) -> str:
    """What the chosen scenarios need and this machine lacks, as one sentence ("" if nothing)."""
    needs = []
    for module in ("matplotlib", "tqdm", *(m for s in chosen for m in s.modules)):
        if importlib.util.find_spec(module) is None and module not in needs:
            needs.append(module)
    lacking = ", ".join(needs) + (" (run `uv sync --group bench`)" if needs else "")
    commands = sorted({c for s in chosen for c in s.commands if not _found(c)})
    if commands:
        names = ", ".join(c.replace("|", " or ") for c in commands)
        lacking += ("; " if lacking else "") + f"{names} (install them)"
    return lacking


def _found(command: str) -> bool:
    """Whether one of `command`'s alternatives ("vegeta|go") is there: on PATH, or where the
    benchmarks install vegeta and Go installs itself."""
    places = {"vegeta": cache_bin() / "vegeta", "go": Path("/usr/local/go/bin/go")}
    return any(
        shutil.which(name) or (name in places and places[name].exists())
        for name in command.split("|")
    )


def _fresh_folder(out: Path) -> None:
    """The report's folder, empty: a run replaces what an earlier one of the day left there."""
    if out.exists():
        print(f"suite: replacing the report in {_shown(out)}")
        shutil.rmtree(out)
    out.mkdir(parents=True)


@contextlib.contextmanager
def _stack(use_running: bool, logs: Path) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    """The environment every script runs in, and a description of the stack it points at."""
    if use_running:
        yield dict(os.environ), {"private": False}
        return
    with tempfile.TemporaryDirectory(prefix="distcount-bench-") as folder:
        # PostgreSQL runs as its own user when this runs as root: it must reach the folder
        Path(folder).chmod(0o755)
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("DISTCOUNT_") or name in _KEPT
        }
        env.update(
            DISTCOUNT_DEV_DIR=str(Path(folder) / "state"),
            DISTCOUNT_DEV_KAFKA_PORT=str(free_port()),
            DISTCOUNT_DEV_KAFKA_CONTROLLER_PORT=str(free_port()),
            DISTCOUNT_DEV_POSTGRES_PORT=str(free_port()),
            DISTCOUNT_HTTP_PORT=str(free_port()),
        )
        dev = [PYTHON, "-m", "distcount_cli", "dev"]
        print("suite: starting a private stack (Kafka and PostgreSQL of its own)", flush=True)
        with (logs / "stack.log").open("w") as log:
            try:
                subprocess.run([*dev, "up"], env=env, cwd=ROOT, stdout=log, stderr=log, check=True)
                status = subprocess.run(
                    [*dev, "status", "--env"],
                    env=env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                env.update(_exports(status.stdout))
                yield env, {"private": True, "dev": _stack_lines(logs / "stack.log")}
            except subprocess.CalledProcessError as exc:
                raise SystemExit(
                    f"suite: the private stack did not start ({exc}); see {logs / 'stack.log'}"
                ) from None
            finally:
                log.flush()
                subprocess.run(
                    [*dev, "down", "--purge"],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=log,
                    check=False,
                )


def _exports(text: str) -> dict[str, str]:
    """`export NAME=value` lines as a mapping."""
    exported = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            exported[name] = value
    return exported


def _stack_lines(log: Path) -> list[str]:
    """What `dev up` said it started (the broker's and the server's versions)."""
    return [line for line in log.read_text().splitlines() if "started" in line]


def _run(
    scenario: Scenario, args: argparse.Namespace, env: dict[str, str], out: Path, bar: Any
) -> dict[str, Any]:
    """One scenario's script to its end; what the suite keeps of it."""
    options = scenario.quick if args.quick else scenario.full
    command = [PYTHON, str(scenario.script), *options]
    before = set(out.glob("*.json"))
    started = time.monotonic()
    log_path = out / "logs" / f"{scenario.name}.log"
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as child,
    ):
        assert child.stdout is not None
        for line in child.stdout:
            log.write(line)
            shown = line.rstrip()
            if args.verbose:
                bar.write(shown)
            elif shown.startswith("["):  # the scripts' progress lines: "[  12.3s] …"
                bar.set_postfix_str(shown[:90], refresh=True)
        code = child.wait()
    reports = sorted(set(out.glob(f"{scenario.name}-*.json")) - before)
    run: dict[str, Any] = {
        "letter": scenario.letter,
        "name": scenario.name,
        "title": scenario.title,
        "command": " ".join(["python", f"benchmarks/{scenario.script.name}", *options]),
        "exit_status": code,
        "status": _STATUS.get(code, "ERROR"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "log": str(log_path.relative_to(out)),
        "report": reports[-1].name if reports else None,
    }
    if reports:
        from _suite_report import SCENARIO_READERS  # noqa: PLC0415  (see main)

        data = json.loads(reports[-1].read_text())
        run.update(SCENARIO_READERS[scenario.name](data))
    else:
        run["status"] = "ERROR"
        run["error"] = f"no report: see {run['log']}"
    return run


def _commit() -> dict[str, Any]:
    def git(*words: str) -> str:
        done = subprocess.run(
            ["git", *words], cwd=ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    return {"id": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "-uno"))}


_BEGIN, _END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"


def _update_readme(out: Path, markdown: str) -> None:
    """The README's Performance section, between its markers: the targets table of this run
    and its plots, linked from the README's folder."""
    text = README.read_text(encoding="utf-8")
    if _BEGIN not in text or _END not in text:
        print("suite: README.md has no benchmark markers; left alone", file=sys.stderr)
        return
    head, rest = text.split(_BEGIN, 1)
    _, tail = rest.split(_END, 1)
    folder = out.relative_to(ROOT).as_posix()
    section = _readme_section(out, folder, markdown)
    README.write_text(f"{head}{_BEGIN}\n{section}\n{_END}{tail}", encoding="utf-8")
    print("suite: README.md's Performance section now shows this run")


def _readme_section(out: Path, folder: str, markdown: str) -> str:
    """The report's summary (everything before its first scenario section), its links made
    relative to the README, then the plots."""
    summary = markdown.split("\n## ", 1)[0].split("\n", 1)[1].strip()
    lines = [
        f"Latest full run: [`{folder}/report.md`]({folder}/report.md).",
        "",
        summary.replace("](", f"]({folder}/"),
        "",
    ]
    lines += [f"![{png.stem}]({folder}/{png.name})" for png in sorted(out.glob("*.png"))]
    return "\n".join(lines)


def _shown(path: Path) -> str:
    absolute = path.absolute()
    return str(absolute.relative_to(ROOT)) if absolute.is_relative_to(ROOT) else str(path)


if __name__ == "__main__":
    raise SystemExit(main())
