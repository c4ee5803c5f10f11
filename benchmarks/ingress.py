"""The ingress against a bare Starlette endpoint, same uvicorn settings, same load tool, same run.

R times, interleaved, each server started afresh on a port of its own:

- bare: benchmarks/bare_app.py, `POST /increment` answering 202 without Kafka.
- ours: `python -m distcount_cli ingress` (the real process) producing to a fresh topic, with a
  fresh, migrated database for its readiness check.

Each is waited for (GET /health/ready = 200), warmed up with wrk, then loaded with wrk for the
measured run: single-increment requests `{"key": "k<1..keys>", "value": 1}`, keys drawn at random
per request by the Lua script. For ours, the records the topic gained during the measured run are
compared with the 2xx answers wrk saw. The headline is the ratio of the medians of requests/s; the
floor is 0.5.

    .venv/bin/python benchmarks/ingress.py [--duration 10] [--connections 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from _common import (
    BENCH_DIR,
    PYTHON,
    RESULTS_DIR,
    Child,
    Endpoints,
    background_busy,
    busy_between,
    child_env,
    cpu_jiffies,
    end_offsets,
    error_lines,
    failed_report,
    free_port,
    fresh_database,
    fresh_topic,
    machine_facts,
    markdown_table,
    median,
    postgres_facts,
    redacted,
    say,
    utc_stamp,
    write_report,
)

FLOOR = 0.5
WRK_MARK = "WRK_JSON "

LUA = """-- written by benchmarks/ingress.py: one single increment per request, random key
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  math.randomseed(os.time() * 1000 + id)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  return wrk.format(nil, nil, nil, '{"key": "k' .. math.random(1, KEYS) .. '", "value": 1}')
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"duration_us": %d, "requests": %d, "bytes": %d, '
    .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
    .. '"latency_us": {"min": %d, "max": %d, "mean": %.1f, "stdev": %.1f, '
    .. '"p50": %d, "p90": %d, "p99": %d, "p999": %d}}\\n',
    summary.duration, summary.requests, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency.min, latency.max, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


@dataclass
class LoadResult:
    side: str
    index: int
    requests: int
    non_2xx: int
    socket_errors: int  # connect + read + write + timeout
    duration_s: float
    latency_us: dict[str, float]
    server_cpu_s: float | None
    wrk_cpu_s: float
    machine_busy: float | None  # fraction of all cores busy during the load
    records_check: dict[str, Any] | None
    wrk_text: str
    background_busy: float | None = None  # machine busy before the server was started

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requests_per_s": self.requests_per_s, "answered_2xx": self.ok}


# -- load -----------------------------------------------------------------------------------------


async def run_wrk(
    url: str, script: Path, args: argparse.Namespace, duration_s: int
) -> tuple[dict[str, Any], str, float, float | None]:
    """(the Lua summary, wrk's text, wrk's CPU seconds, machine busy fraction)."""
    argv = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration_s}s",
        f"--timeout={args.wrk_timeout_s}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = cpu_jiffies()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), duration_s + 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    busy_after = cpu_jiffies()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with status {process.returncode}:\n{text}")
    marked = [line for line in text.splitlines() if line.startswith(WRK_MARK)]
    if not marked:
        raise RuntimeError(f"wrk printed no summary:\n{text}")
    summary: dict[str, Any] = json.loads(marked[-1].removeprefix(WRK_MARK))
    wrk_cpu = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    return summary, text, wrk_cpu, busy_between(busy_before, busy_after)


async def wait_ready(child: Child, url: str, timeout_s: float) -> float:
    """Seconds from spawn until GET `url` answered 200."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not child.running():
                raise RuntimeError(
                    f"{child.name} exited with status {child.process.returncode}; "
                    f"see {child.log_path}\n{child.tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(url)
                if response.status_code == 200:
                    return time.monotonic() - child.spawned_at
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{child.name} was not ready at {url} within {timeout_s:.0f} s")


async def settled_total(bootstrap: str, topic: str, timeout_s: float = 30.0) -> int:
    """The topic's record count once it has stopped growing (two equal reads 0.5 s apart)."""
    deadline = time.monotonic() + timeout_s
    last = sum((await end_offsets(bootstrap, topic)).values())
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = sum((await end_offsets(bootstrap, topic)).values())
        if now == last:
            return now
        last = now
    raise TimeoutError(f"the topic {topic} kept growing for {timeout_s:.0f} s after the load")


async def load_one(
    side: str,
    index: int,
    child: Child,
    port: int,
    *,
    script: Path,
    args: argparse.Namespace,
    topic: str | None,
    bootstrap: str,
) -> LoadResult:
    base = f"http://127.0.0.1:{port}"
    ready_s = await wait_ready(child, f"{base}/health/ready", args.ready_timeout_s)
    say(f"run {index} {side}: ready {ready_s:.2f} s after spawn; warming up {args.warmup}s")
    if args.warmup > 0:
        await run_wrk(f"{base}/increment", script, args, args.warmup)
    before = await settled_total(bootstrap, topic) if topic else None
    say(
        f"run {index} {side}: wrk -t{args.threads} -c{args.connections} -d{args.duration}s "
        f"POST /increment"
    )
    cpu_before = child.cpu_seconds()
    summary, text, wrk_cpu, busy = await run_wrk(f"{base}/increment", script, args, args.duration)
    cpu_after = child.cpu_seconds()
    errors = summary["errors"]
    result = LoadResult(
        side=side,
        index=index,
        requests=summary["requests"],
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        duration_s=summary["duration_us"] / 1e6,
        latency_us=summary["latency_us"],
        server_cpu_s=(None if cpu_before is None or cpu_after is None else cpu_after - cpu_before),
        wrk_cpu_s=wrk_cpu,
        machine_busy=busy,
        records_check=None,
        wrk_text=text,
    )
    if topic is not None and before is not None:
        after = await settled_total(bootstrap, topic)
        added = after - before
        extra = added - result.ok
        result.records_check = {
            "records_added": added,
            "answered_2xx": result.ok,
            "extra_records": extra,
            # never below 0: that would be a 202 without its record. Above 0 by at most the
            # requests in flight when wrk stopped (produced, never counted by wrk) and the
            # non-2xx answers (a 503 may come for a record the broker still writes)
            "consistent": 0 <= extra <= args.connections + result.non_2xx,
        }
    lat = result.latency_us
    say(
        f"run {index} {side}: {result.requests_per_s:,.0f} requests/s, p50 "
        f"{lat['p50'] / 1000:.2f} ms, p99 {lat['p99'] / 1000:.2f} ms, "
        f"{result.non_2xx:,} non-2xx, {result.socket_errors:,} socket errors"
        + (
            f"; records added {result.records_check['records_added']:,} for "
            f"{result.ok:,} 2xx answers"
            if result.records_check
            else ""
        )
    )
    return result


# -- the two servers ------------------------------------------------------------------------------


async def run_bare(
    index: int, *, script: Path, args: argparse.Namespace, log_dir: Path
) -> LoadResult:
    port = free_port()
    idle = await background_busy(args.wait_quiet_s)
    say(f"run {index} bare: spawning benchmarks/bare_app.py on port {port}")
    child = await Child.spawn(
        "bare app",
        [PYTHON, str(BENCH_DIR / "bare_app.py"), "--port", str(port)],
        child_env({}),
        log_dir / f"run{index}-bare.log",
    )
    try:
        result = await load_one(
            "bare", index, child, port, script=script, args=args, topic=None, bootstrap=""
        )
        result.background_busy = idle
        return result
    finally:
        status, seconds = await child.stop()
        say(f"run {index} bare: stopped (exit status {status}, {seconds:.2f} s after SIGTERM)")


async def run_ours(
    index: int,
    endpoints: Endpoints,
    *,
    database_url: str,
    topic: str,
    script: Path,
    args: argparse.Namespace,
    log_dir: Path,
    side: str = "ours",
    settings: dict[str, str] | None = None,
) -> LoadResult:
    """`distcount ingress` under load; `settings`: more DISTCOUNT_ variables for it."""
    port = free_port()
    env = child_env(
        {
            "DISTCOUNT_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
            "DISTCOUNT_DATABASE_URL": database_url,
            "DISTCOUNT_TOPIC": topic,
            "DISTCOUNT_HTTP_HOST": "127.0.0.1",
            "DISTCOUNT_HTTP_PORT": str(port),
            **(settings or {}),
        }
    )
    idle = await background_busy(args.wait_quiet_s)
    say(f"run {index} {side}: spawning `distcount ingress` on port {port}")
    child = await Child.spawn(
        "ingress",
        [PYTHON, "-m", "distcount_cli", "ingress"],
        env,
        log_dir / f"run{index}-{side.replace(' ', '-')}.log",
    )
    try:
        result = await load_one(
            side,
            index,
            child,
            port,
            script=script,
            args=args,
            topic=topic,
            bootstrap=endpoints.kafka_bootstrap,
        )
        result.background_busy = idle
        return result
    finally:
        status, seconds = await child.stop()
        say(f"run {index} {side}: stopped (exit status {status}, {seconds:.2f} s after SIGTERM)")


# -- the report -----------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value / 1000:.2f}"


def build_report(
    meta: dict[str, Any], runs: list[LoadResult], error: str | None
) -> tuple[dict[str, Any], str]:
    bare = [r for r in runs if r.side == "bare"]
    ours = [r for r in runs if r.side == "ours"]
    if not bare or not ours:
        return _failed_report(meta, runs, error or "no runs")
    bare_rps = median([r.requests_per_s for r in bare])
    ours_rps = median([r.requests_per_s for r in ours])
    ratio = ours_rps / bare_rps
    consistent = all(r.records_check and r.records_check["consistent"] for r in ours)
    clean = all(r.non_2xx == 0 and r.socket_errors == 0 for r in runs)
    passed = ratio >= FLOOR and consistent
    latency = {
        side: {q: median([r.latency_us[q] / 1000 for r in group]) for q in ("p50", "p90", "p99")}
        for side, group in (("bare", bare), ("ours", ours))
    }
    summary: dict[str, Any] = {
        "median_requests_per_s": {"bare": bare_rps, "ours": ours_rps},
        "ratio": ratio,
        "floor": FLOOR,
        "verdict": "ERROR" if error else "PASS" if passed else "FAIL",
        "error": error,
        "records_match_2xx": consistent,
        "no_errors": clean,
        "median_latency_ms": latency,
    }
    data = {
        **meta,
        "runs": [r.as_dict() for r in runs],
        "summary": summary,
    }
    m = meta["machine"]
    w = meta["load"]

    def check_cell(r: LoadResult) -> str:
        if r.records_check is None:
            return "n/a"
        c = r.records_check
        verdict = "ok" if c["consistent"] else "MISMATCH"
        return f"{verdict}: +{c['records_added']:,} records, {c['extra_records']:+,} vs 2xx"

    rows = [
        [
            r.index,
            r.side,
            f"{r.requests_per_s:,.0f}",
            r.requests,
            r.non_2xx,
            r.socket_errors,
            _ms(r.latency_us["p50"]),
            _ms(r.latency_us["p90"]),
            _ms(r.latency_us["p99"]),
            "-" if r.server_cpu_s is None else f"{r.server_cpu_s:.2f}",
            "-" if r.server_cpu_s is None else f"{r.server_cpu_s / r.requests * 1e6:.0f}",
            f"{r.wrk_cpu_s:.2f}",
            "-" if r.background_busy is None else f"{r.background_busy:.0%}",
            "-" if r.machine_busy is None else f"{r.machine_busy:.0%}",
            check_cell(r),
        ]
        for r in runs
    ]
    lat = latency
    md = [
        f"# Ingress benchmark, {meta['stamp']}",
        "",
        f"Machine: **nproc {m['nproc']}** ({m['cpu_model']}), {m['memory_gib']} GiB, Python "
        f"{m['python']}. wrk, the server under test, the Kafka broker and PostgreSQL all share "
        "these cores, so the figures are the stack's throughput on this box, not the server's "
        "alone.",
        "",
        f"Load: `wrk -t{w['threads']} -c{w['connections']} -d{w['duration_s']}s "
        f"--timeout={w['wrk_timeout_s']}s --latency` (after a {w['warmup_s']} s warm-up), "
        f'POST /increment with `{{"key": "k<1..{w["keys"]}>", "value": 1}}` (random key per '
        f"request), {w['repeat']} runs per side, interleaved, each server started afresh. Both "
        "servers: uvicorn, uvloop, httptools, one worker, no access log.",
        "",
        "bare = benchmarks/bare_app.py (reads the body, orjson-parses it, echoes it as "
        '`{"data": ...}` with 202; no validation, no Kafka). ours = `distcount ingress` '
        f"producing to a fresh topic of {meta['partitions']} partitions (acks=all, idempotent; "
        "202 only after the broker's acknowledgement).",
        "",
        markdown_table(
            [
                "run",
                "side",
                "requests/s",
                "requests",
                "non-2xx",
                "socket errors",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "server CPU s",
                "server CPU µs/request",
                "wrk CPU s",
                "busy before",
                "busy during",
                "records in topic vs 2xx",
            ],
            rows,
        ),
        "",
        markdown_table(
            ["", "bare (Starlette, 202, no Kafka)", "ours (distcount ingress)", "ratio"],
            [
                ["median requests/s", f"{bare_rps:,.0f}", f"{ours_rps:,.0f}", f"{ratio:.3f}"],
                ["median p50 ms", f"{lat['bare']['p50']:.2f}", f"{lat['ours']['p50']:.2f}", ""],
                ["median p99 ms", f"{lat['bare']['p99']:.2f}", f"{lat['ours']['p99']:.2f}", ""],
            ],
        ),
        "",
        f"**Headline: ours / bare = {ratio:.3f} (ratio of median requests/s); floor {FLOOR}: "
        f"{summary['verdict']}**"
        + ("" if consistent else " (records in the topic did not match the 2xx answers)"),
        *error_lines(error),
        "",
        "Records check: the topic's end offsets are read once they have settled before and "
        "after the measured run; `extra` = records added - 2xx answers, which may be above 0 by "
        "at most the number of connections (requests in flight when wrk stopped are produced "
        "but never counted by wrk) plus the non-2xx answers (a 503 may come for a record the "
        "broker still writes), and must never be below 0 (a 202 without its record). "
        "Busy before / during = the whole machine's CPU use in the second before the server "
        "was started / during the measured load; a high busy-before means other processes "
        "skewed the run."
        + ("" if clean else " Some runs had non-2xx answers or socket errors: see the table."),
    ]
    return data, "\n".join(md)


def _failed_report(
    meta: dict[str, Any], runs: list[LoadResult], error: str
) -> tuple[dict[str, Any], str]:
    lines = [f"- run {r.index} {r.side}: {r.requests_per_s:,.0f} requests/s" for r in runs]
    return failed_report("Ingress benchmark", meta, [r.as_dict() for r in runs], lines, error)


# -- main -----------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    endpoints = Endpoints.from_env()
    stamp = utc_stamp()
    log_dir = RESULTS_DIR / "logs" / f"ingress-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    script = log_dir / "increment.lua"
    script.write_text(LUA.replace("KEYS", str(args.keys)), encoding="utf-8")
    machine = machine_facts()
    say(
        f"ingress benchmark: nproc {machine['nproc']}; wrk -t{args.threads} "
        f"-c{args.connections} -d{args.duration}s, {args.repeat} runs per side; Kafka "
        f"{endpoints.kafka_bootstrap}, PostgreSQL {redacted(endpoints.database_url)}"
    )
    runs: list[LoadResult] = []
    error: str | None = None
    async with (
        fresh_topic(endpoints.kafka_bootstrap, "bench.ingress", args.partitions) as topic,
        fresh_database(endpoints, "bench_ing") as database_url,
    ):
        pg = await postgres_facts(database_url)
        try:
            for index in range(1, args.repeat + 1):
                runs.append(await run_bare(index, script=script, args=args, log_dir=log_dir))
                runs.append(
                    await run_ours(
                        index,
                        endpoints,
                        database_url=database_url,
                        topic=topic,
                        script=script,
                        args=args,
                        log_dir=log_dir,
                    )
                )
        except Exception as exc:  # report what was measured, and why the rest was not
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            say(f"stopped early: {exc}")
    meta = {
        "benchmark": "ingress",
        "stamp": stamp,
        "machine": machine,
        "kafka_bootstrap": endpoints.kafka_bootstrap,
        "postgres": pg,
        "partitions": args.partitions,
        "load": {
            "tool": "wrk",
            "threads": args.threads,
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "wrk_timeout_s": args.wrk_timeout_s,
            "keys": args.keys,
            "repeat": args.repeat,
        },
        "lua_script": str(script),
        "logs": str(log_dir),
    }
    data, markdown = build_report(meta, runs, error)
    write_report("ingress", stamp, data, markdown)
    verdict = data["summary"]["verdict"]
    return 0 if verdict == "PASS" else 1 if verdict == "FAIL" else 2


def load_arguments(description: str, repeat: int) -> argparse.Namespace:
    """The command line of a wrk benchmark of the ingress, checked (this one's and
    metrics_e2e.py's); exits if wrk is missing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--duration", type=int, default=10, help="wrk -d, seconds")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk before each run")
    parser.add_argument("--wrk-timeout-s", type=int, default=10, help="wrk --timeout, seconds")
    parser.add_argument("--keys", type=int, default=10_000, help="keys drawn from k1..kN")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the topic")
    parser.add_argument("--repeat", type=int, default=repeat, help="runs per side, interleaved")
    parser.add_argument(
        "--ready-timeout-s", type=float, default=60.0, help="wait this long for /health/ready"
    )
    parser.add_argument(
        "--wait-quiet-s",
        type=float,
        default=60.0,
        help="before each run, wait up to this long for other processes to leave the CPU idle",
    )
    args = parser.parse_args()
    if min(args.threads, args.connections, args.duration, args.repeat, args.keys) < 1:
        parser.error("--threads, --connections, --duration, --repeat and --keys must be >= 1")
    if args.connections < args.threads:
        parser.error("wrk needs at least one connection per thread")
    if args.duration > 600 or args.warmup > 60:
        parser.error("--duration is bounded to 600 s and --warmup to 60 s")
    if shutil.which("wrk") is None:
        raise SystemExit(
            "wrk is not installed: `apt-get install -y wrk` (Debian), then run this again"
        )
    return args


def main() -> None:
    args = load_arguments(
        "distcount's ingress against a bare Starlette endpoint, loaded by wrk.", repeat=3
    )
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(asyncio.run(bench(args)))
    raise SystemExit(130)


if __name__ == "__main__":
    main()
