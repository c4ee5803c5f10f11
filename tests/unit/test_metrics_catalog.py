"""The metrics catalog (`distcount_metrics._catalog`), README.md's table of it, the Datadog
dashboard (`libs/metrics/dashboards/datadog.json`) and the code name the same metrics.

- every dashboard query names a catalog metric, with a suffix only where Datadog adds one (a
  timer's `.95percentile`), and filters or groups by the metric's own tags (or `env`, `host`);
  every catalog metric is charted;
- the README's table lists the catalog, row for row;
- every catalog metric comes out of some hook, and every hook is called by its service.

Each check is a function returning the problems it finds, so the tests below also feed it broken
copies of the dashboard, the README and the code, to show that it notices.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from distcount_metrics import (
    CATALOG,
    PREFIX,
    AggregatorMetrics,
    IngressMetrics,
    Kind,
    Metric,
    RecordingAggregatorMetrics,
    RecordingIngressMetrics,
    Snapshot,
    aggregator_metrics,
    ingress_metrics,
)

ROOT: Final = Path(__file__).resolve().parents[2]
README: Final = ROOT / "README.md"
DASHBOARD_PATH: Final = "libs/metrics/dashboards/datadog.json"
DASHBOARD: Final = ROOT / DASHBOARD_PATH
SERVICES: Final = ROOT / "services"

BY_NAME: Final = {metric.full_name: metric for metric in CATALOG}
# the agent's host tag, and the constant tag users set with DISTCOUNT_METRICS_TAGS
GLOBAL_TAGS: Final = frozenset({"env", "host"})
# what the Datadog agent makes of a DogStatsD timer (`ms`)
TIMER_SUFFIXES: Final = frozenset({"avg", "median", "95percentile", "max", "count"})
# template variable name -> tag prefix
TEMPLATE_VARIABLES: Final = {"env": "env", "host": "host"}
WIDGET_TYPES: Final = frozenset({"timeseries", "query_value"})


# -- dashboard --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One metric read by a query: `avg:name{scope} by {group}.modifiers`."""

    aggregation: str
    name: str  # as written, a timer's suffix included
    scope: tuple[str, ...]  # the items between the braces
    group: tuple[str, ...]
    modifiers: str


_REFERENCE: Final = re.compile(
    r"(?P<aggregation>avg|sum|min|max):(?P<name>[A-Za-z0-9_.]+)"
    r"\{(?P<scope>[^{}]*)\}"
    r"(?:\s*by\s*\{(?P<group>[^{}]*)\})?"
    r"(?P<modifiers>(?:\.[a-z_]+\([^()]*\))*)"
)
_MENTION: Final = re.compile(rf"(?<![\w.]){re.escape(PREFIX)}\.")
_BOOLEAN: Final = frozenset({"and", "or", "not", "in"})


def references(query: str) -> list[Reference]:
    found = []
    for match in _REFERENCE.finditer(query):
        scope = [
            item
            for item in re.split(r"[\s,()]+", match["scope"])
            if item and item.lower() not in _BOOLEAN
        ]
        group = [item.strip() for item in (match["group"] or "").split(",") if item.strip()]
        found.append(
            Reference(
                match["aggregation"],
                match["name"],
                tuple(scope),
                tuple(group),
                match["modifiers"],
            )
        )
    return found


def resolve(name: str) -> tuple[Metric | None, str | None]:
    """The catalog metric a query's metric name reads, and the suffix after it."""
    if name in BY_NAME:
        return BY_NAME[name], None
    base, _, suffix = name.rpartition(".")
    if base in BY_NAME:
        return BY_NAME[base], suffix
    return None, None


def _scope_problems(
    ref: Reference, metric: Metric, template_variables: Mapping[str, str]
) -> list[str]:
    allowed = set(metric.tags) | GLOBAL_TAGS
    problems = []
    for item in ref.scope:
        term = item.lstrip("!")
        if term == "*":
            continue
        if term.startswith("$"):
            variable = term[1:].split(".")[0]
            if variable not in template_variables:
                problems.append(f"no template variable {term}")
            elif template_variables[variable] not in allowed:
                problems.append(f"template variable {term} filters a tag the metric lacks")
            continue
        key, colon, _ = term.partition(":")
        if not colon:
            problems.append(f"filter {term!r} is not tag:value")
        elif key not in allowed:
            problems.append(f"filter on tag {key!r}, not one of {sorted(allowed)}")
    problems.extend(
        f"grouped by tag {tag!r}, not one of {sorted(allowed)}"
        for tag in ref.group
        if tag not in allowed
    )
    return problems


def _kind_problems(ref: Reference, metric: Metric, suffix: str | None) -> list[str]:
    counted = ".as_count()" in ref.modifiers or ".as_rate()" in ref.modifiers
    suffixes = sorted(TIMER_SUFFIXES)
    if metric.kind is Kind.TIMER:
        checks = [
            (suffix is None, f"timer without one of the suffixes {suffixes}"),
            (suffix not in TIMER_SUFFIXES, f"timer suffix .{suffix}, not one of {suffixes}"),
            (counted and suffix != "count", f"timer .{suffix} read .as_count()/.as_rate()"),
        ]
    else:
        checks = [
            (suffix is not None, f"{metric.kind} with suffix .{suffix}"),
            (
                metric.kind is Kind.COUNTER and not (ref.aggregation == "sum" and counted),
                "counter not read as sum:....as_count() or sum:....as_rate()",
            ),
            (metric.kind is Kind.GAUGE and counted, "gauge read .as_count()/.as_rate()"),
        ]
    # the first problem only: the later checks assume the earlier ones passed
    return [message for failed, message in checks if failed][:1]


def query_problems(query: str, template_variables: Mapping[str, str]) -> tuple[list[str], set[str]]:
    """What is wrong with one query, and the catalog metrics it charts."""
    refs = [ref for ref in references(query) if _MENTION.match(ref.name)]
    problems = []
    if len(refs) != len(_MENTION.findall(query)):
        problems.append(f"{query!r}: a {PREFIX} metric outside the form agg:name{{...}}")
    charted = set()
    for ref in refs:
        metric, suffix = resolve(ref.name)
        if metric is None:
            problems.append(f"{query!r}: {ref.name} is not in the catalog")
            continue
        charted.add(metric.full_name)
        problems.extend(
            f"{query!r}: {problem}"
            for problem in [
                *_kind_problems(ref, metric, suffix),
                *_scope_problems(ref, metric, template_variables),
            ]
        )
    return problems, charted


def dashboard_queries(node: Any, in_queries: bool = False) -> Iterator[str]:
    """Every query string: classic requests' `q`, and formula requests' `queries[].query`."""
    if isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item, in_queries)
    elif isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and (key == "q" or (key == "query" and in_queries)):
                yield value
            else:
                yield from dashboard_queries(value, key == "queries")


def widget_definitions(widgets: Any) -> Iterator[Any]:
    """Every widget's definition, those inside groups included."""
    for widget in widgets if isinstance(widgets, list) else []:
        definition = widget.get("definition") if isinstance(widget, dict) else None
        yield definition
        if isinstance(definition, dict) and definition.get("type") == "group":
            yield from widget_definitions(definition.get("widgets"))


def _top_level_problems(dashboard: Mapping[str, Any]) -> list[str]:
    problems = [
        f"no {field} (a non-empty string)"
        for field in ("title", "description")
        if not isinstance(dashboard.get(field), str) or not dashboard[field]
    ]
    if dashboard.get("layout_type") != "ordered":
        problems.append("layout_type is not 'ordered'")
    widgets = dashboard.get("widgets")
    if not isinstance(widgets, list) or not widgets:
        problems.append("no widgets")
    else:
        problems.extend(
            f"top-level widget {i} is not a group"
            for i, widget in enumerate(widgets)
            if not isinstance(widget, dict) or widget.get("definition", {}).get("type") != "group"
        )
    return problems


def template_variables(dashboard: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
    variables = dashboard.get("template_variables")
    if not isinstance(variables, list):
        return ["no template_variables"], {}
    found = {v.get("name"): v for v in variables if isinstance(v, dict)}
    problems = [
        f"template variable {name} is not {{name: {name}, prefix: {prefix}, default: *}}"
        for name, prefix in TEMPLATE_VARIABLES.items()
        if found.get(name, {}).get("prefix") != prefix
        or found.get(name, {}).get("default", "*") != "*"
    ]
    return problems, {str(name): str(v.get("prefix")) for name, v in found.items()}


def _widget_problems(definition: Any) -> list[str]:
    if not isinstance(definition, dict):
        return ["a widget without a definition"]
    title = definition.get("title")
    kind = definition.get("type")
    problems = [] if isinstance(title, str) and title.strip() else [f"a {kind} widget untitled"]
    if kind == "group":
        return problems
    if kind not in WIDGET_TYPES:
        return [*problems, f"widget {title!r}: type {kind!r}, not one of {sorted(WIDGET_TYPES)}"]
    requests = definition.get("requests")
    if not isinstance(requests, list) or not requests:
        return [*problems, f"widget {title!r} has no requests"]
    if not any(True for _ in dashboard_queries(requests)):
        problems.append(f"widget {title!r} has no query")
    if kind == "timeseries":
        problems.extend(
            f"widget {title!r}: a request without a display_type"
            for request in requests
            if not isinstance(request, dict) or "display_type" not in request
        )
    return problems


def dashboard_problems(dashboard: Mapping[str, Any]) -> list[str]:
    problems = _top_level_problems(dashboard)
    variable_problems, variables = template_variables(dashboard)
    problems += variable_problems
    for definition in widget_definitions(dashboard.get("widgets")):
        problems += _widget_problems(definition)
    charted: set[str] = set()
    for query in dashboard_queries(dashboard.get("widgets")):
        query_problems_, query_charts = query_problems(query, variables)
        problems += query_problems_
        charted |= query_charts
    problems.extend(f"{name} is not charted" for name in BY_NAME if name not in charted)
    return problems


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def test_dashboard_charts_the_catalog() -> None:
    assert dashboard_problems(_dashboard()) == []


def test_dashboard_is_2_space_indented_json() -> None:
    text = DASHBOARD.read_text()
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def test_readme_names_the_dashboard() -> None:
    assert DASHBOARD_PATH in README.read_text()


def test_the_query_parser_reads_a_query() -> None:
    query = (
        "sum:distcount.ingress.requests{$env, $host,status:5*, !route:live} "
        "by {route,status}.as_count()"
    )
    assert references(query) == [
        Reference(
            "sum",
            "distcount.ingress.requests",
            ("$env", "$host", "status:5*", "!route:live"),
            ("route", "status"),
            ".as_count()",
        )
    ]
    assert resolve("distcount.aggregator.delay.95percentile") == (
        BY_NAME["distcount.aggregator.delay"],
        "95percentile",
    )
    assert resolve("distcount.aggregator.delay") == (BY_NAME["distcount.aggregator.delay"], None)
    assert resolve("distcount.nothing.avg") == (None, None)


def _new_dashboard_problems(broken: Mapping[str, Any]) -> list[str]:
    """The problems of a broken copy that the dashboard itself does not have."""
    known = dashboard_problems(_dashboard())
    return [problem for problem in dashboard_problems(broken) if problem not in known]


def _with_query(dashboard: dict[str, Any], query: str) -> dict[str, Any]:
    broken = copy.deepcopy(dashboard)
    broken["widgets"][0]["definition"]["widgets"].append(
        {
            "definition": {
                "type": "timeseries",
                "title": "broken",
                "requests": [{"q": query, "display_type": "line"}],
            }
        }
    )
    return broken


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ("sum:distcount.ingress.bogus{$env,$host}.as_count()", "not in the catalog"),
        ("avg:distcount.aggregator.delay{$env,$host}", "timer without one of the suffixes"),
        ("avg:distcount.aggregator.delay.99percentile{$env}", "timer suffix .99percentile"),
        ("sum:distcount.ingress.requests.avg{$env}.as_count()", "counter with suffix .avg"),
        ("avg:distcount.ingress.inflight_sends.max{$env}", "gauge with suffix .max"),
        ("avg:distcount.ingress.requests{$env}", "counter not read as sum"),
        ("sum:distcount.aggregator.live_entries{$env}.as_rate()", "gauge read .as_count()"),
        ("avg:distcount.aggregator.delay.median{$env} by {route}", "grouped by tag 'route'"),
        ("sum:distcount.ingress.requests{$env,reason:tick}.as_count()", "filter on tag 'reason'"),
        ("max:distcount.aggregator.consumer_lag{$region}", "no template variable $region"),
        ("max:distcount.aggregator.consumer_lag{partition}", "is not tag:value"),
        ("max:distcount.aggregator.consumer_lag{*} + distcount.ingress.requests", "outside the"),
    ],
)
def test_a_wrong_query_is_found(query: str, complaint: str) -> None:
    problems = _new_dashboard_problems(_with_query(_dashboard(), query))
    assert any(complaint in problem for problem in problems), problems


def test_a_formula_query_is_read_too() -> None:
    broken = _with_query(_dashboard(), "sum:distcount.ingress.requests{$env}.as_count()")
    request = broken["widgets"][0]["definition"]["widgets"][-1]["definition"]["requests"][0]
    del request["q"]
    request["queries"] = [
        {"data_source": "metrics", "name": "a", "query": "avg:distcount.ingress.bogus{*}"}
    ]
    request["formulas"] = [{"formula": "a"}]
    assert any("bogus is not in the catalog" in p for p in _new_dashboard_problems(broken))


def test_a_metric_not_charted_is_found() -> None:
    text = DASHBOARD.read_text().replace(
        "distcount.process.loop_lag", "distcount.process.memory_rss"
    )
    assert "distcount.process.loop_lag is not charted" in _new_dashboard_problems(json.loads(text))


def test_a_widget_without_title_is_found() -> None:
    broken = _with_query(_dashboard(), "sum:distcount.ingress.requests{$env}.as_count()")
    del broken["widgets"][0]["definition"]["widgets"][-1]["definition"]["title"]
    assert _new_dashboard_problems(broken) == ["a timeseries widget untitled"]


@pytest.mark.parametrize("field", ["title", "description", "layout_type", "template_variables"])
def test_a_missing_top_level_field_is_found(field: str) -> None:
    broken = _dashboard()
    del broken[field]
    assert _new_dashboard_problems(broken) != []


def test_a_dashboard_without_widgets_is_found() -> None:
    broken = _dashboard()
    broken["widgets"] = []
    problems = dashboard_problems(broken)
    assert "no widgets" in problems
    assert {p for p in problems if p.endswith("is not charted")} == {
        f"{name} is not charted" for name in BY_NAME
    }


# -- README -----------------------------------------------------------------------------------

TABLE_HEADER: Final = "| metric | type | tags | unit | meaning |"


@dataclass(frozen=True)
class Row:
    name: str
    kind: str
    tags: tuple[str, ...]
    unit: str
    meaning: str


def _code(cell: str) -> str:
    match = re.fullmatch(r"`([^`]+)`", cell.strip())
    if match is None:
        raise ValueError(f"{cell.strip()!r} is not in backticks")
    return match[1]


def readme_rows(text: str) -> list[Row]:
    """The rows of the table under "## Metrics": from its header to the first blank line."""
    _, heading, section = text.partition("\n## Metrics\n")
    if not heading:
        raise ValueError("no '## Metrics' section")
    section = section.split("\n## ", 1)[0]
    lines = section.splitlines()
    if TABLE_HEADER not in lines:
        raise ValueError(f"no table headed {TABLE_HEADER!r} in '## Metrics'")
    start = lines.index(TABLE_HEADER) + 1
    if start >= len(lines) or not re.fullmatch(r"\|(\s*-+\s*\|){5}", lines[start].strip()):
        raise ValueError("the table header is not followed by its separator line")
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        stripped = line.strip()
        if not (stripped.startswith("|") and stripped.endswith("|")):
            raise ValueError(f"not a table row: {line!r}")
        cells = stripped[1:-1].split("|", 4)
        if len(cells) != 5:
            raise ValueError(f"not five cells: {line!r}")
        name, kind, tags, unit, meaning = (cell.strip() for cell in cells)
        rows.append(
            Row(
                _code(name),
                kind,
                () if tags == "-" else tuple(_code(tag) for tag in tags.split(",")),
                unit,
                meaning,
            )
        )
    return rows


def readme_problems(text: str) -> list[str]:
    """How the README's table differs from the catalog in names, order, types, tags and units."""
    try:
        rows = readme_rows(text)
    except ValueError as exc:
        return [str(exc)]
    expected = {m.full_name: (m.kind.value, m.tags, m.unit) for m in CATALOG}
    listed = {row.name: (row.kind, row.tags, row.unit) for row in rows}
    names = [row.name for row in rows]
    problems = [
        f"{name} is listed twice" for name in sorted({n for n in names if names.count(n) > 1})
    ]
    problems += [f"{name} is missing" for name in expected if name not in listed]
    problems += [f"{name} is not in the catalog" for name in listed if name not in expected]
    for name, (kind, tags, unit) in listed.items():
        if name not in expected:
            continue
        want_kind, want_tags, want_unit = expected[name]
        if kind != want_kind:
            problems.append(f"{name}: type {kind}, the catalog says {want_kind}")
        if tags != want_tags:
            problems.append(f"{name}: tags {tags}, the catalog says {want_tags}")
        if unit != want_unit:
            problems.append(f"{name}: unit {unit}, the catalog says {want_unit}")
    # the order of the names both list, so that a missing or extra row is not also misplaced
    order = [name for name in dict.fromkeys(names) if name in expected]
    if order != [name for name in expected if name in listed]:
        problems.append(f"rows in the order {order}, the catalog's is {list(expected)}")
    return problems


def readme_meaning_problems(text: str) -> list[str]:
    """A row's meaning is the catalog's, with " (sampled)" for a per-event metric."""
    expected = {m.full_name: m.meaning + (" (sampled)" if m.per_event else "") for m in CATALOG}
    return [
        f"{row.name}: meaning {row.meaning!r}, the catalog says {expected[row.name]!r}"
        for row in readme_rows(text)
        if row.name in expected and row.meaning != expected[row.name]
    ]


def test_readme_table_is_the_catalog() -> None:
    assert readme_problems(README.read_text()) == []


def test_readme_meanings_are_the_catalogs() -> None:
    assert readme_meaning_problems(README.read_text()) == []


def test_the_readme_parser_reads_every_row() -> None:
    text = README.read_text()
    rows = readme_rows(text)
    assert len(rows) == len(
        [line for line in text.splitlines() if line.startswith(f"| `{PREFIX}.")]
    )
    assert rows[0] == Row(
        "distcount.ingress.requests",
        "counter",
        ("route", "status"),
        "requests",
        BY_NAME["distcount.ingress.requests"].meaning,
    )


def _new_readme_problems(broken: str) -> list[str]:
    """The problems of a broken copy that the README itself does not have."""
    known = readme_problems(README.read_text())
    return [problem for problem in readme_problems(broken) if problem not in known]


def _row_line(text: str, name: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(f"| `{name}` |")]
    return line


def _without_row(name: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        return text.replace(_row_line(text, name) + "\n", "")

    return change


def _changed_row(name: str, old: str, new: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        line = _row_line(text, name)
        assert old in line
        return text.replace(line, line.replace(old, new))

    return change


def _repeated_row(name: str, old: str, new: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        line = _row_line(text, name)
        return text.replace(line, line + "\n" + line.replace(old, new))

    return change


def _replaced(old: str, new: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        assert old in text
        return text.replace(old, new)

    return change


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (_without_row("distcount.aggregator.flush.fenced"), "flush.fenced is missing"),
        (
            _repeated_row("distcount.process.loop_lag", "loop_lag", "gc_pauses"),
            "distcount.process.gc_pauses is not in the catalog",
        ),
        (
            _changed_row("distcount.aggregator.delay", "| timer |", "| gauge |"),
            "distcount.aggregator.delay: type gauge, the catalog says timer",
        ),
        (
            _changed_row("distcount.ingress.requests", ", `status`", ""),
            "distcount.ingress.requests: tags ('route',)",
        ),
        (
            _changed_row("distcount.ingress.inflight_sends", "| - |", "| `host` |"),
            "distcount.ingress.inflight_sends: tags ('host',)",
        ),
        (
            _changed_row("distcount.process.memory_rss", "| bytes |", "| MiB |"),
            "distcount.process.memory_rss: unit MiB, the catalog says bytes",
        ),
        (
            _repeated_row("distcount.process.memory_rss", "", ""),
            "distcount.process.memory_rss is listed twice",
        ),
        (_changed_row("distcount.aggregator.delay", "`", "'"), "is not in backticks"),
        (_replaced(TABLE_HEADER, "| name | type |"), "no table headed"),
        (_replaced("\n## Metrics\n", "\n## Telemetry\n"), "no '## Metrics' section"),
    ],
    ids=[
        "missing",
        "extra",
        "wrong type",
        "tag missing",
        "tag extra",
        "wrong unit",
        "duplicate",
        "not code",
        "no header",
        "no section",
    ],
)
def test_a_wrong_readme_table_is_found(change: Callable[[str], str], complaint: str) -> None:
    problems = _new_readme_problems(change(README.read_text()))
    assert any(complaint in problem for problem in problems), problems


def test_rows_out_of_order_are_found() -> None:
    text = README.read_text()
    first = _row_line(text, "distcount.ingress.requests")
    second = _row_line(text, "distcount.ingress.request.duration")
    swapped = text.replace(first + "\n" + second, second + "\n" + first)
    assert swapped != text
    (problem,) = _new_readme_problems(swapped)
    assert problem.startswith("rows in the order")


def test_a_row_after_a_blank_line_is_not_in_the_table() -> None:
    text = README.read_text()
    last = readme_rows(text)[-1].name
    line = _row_line(text, last)
    assert _new_readme_problems(text.replace("\n" + line, "\n\n" + line)) == [f"{last} is missing"]


def test_a_changed_meaning_is_found() -> None:
    change = _changed_row("distcount.aggregator.delay", " (sampled) |", " |")
    known = readme_meaning_problems(README.read_text())
    new = [p for p in readme_meaning_problems(change(README.read_text())) if p not in known]
    assert len(new) == 1
    assert new[0].startswith("distcount.aggregator.delay: meaning")


# -- code -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    """What `ingress_metrics` and `aggregator_metrics` read of the settings."""

    reporter: str = "console"
    statsd_host: str = "localhost"
    statsd_port: int = 8125
    interval_ms: int = 1000
    sample_rate: float = 1.0  # every per-event observation kept
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class _ConsumerRecord:
    """What `on_fetched` reads of an aiokafka consumer record."""

    offset: int
    timestamp: int | None  # ms


def hook_names(cls: type) -> set[str]:
    return {
        name
        for name in dir(cls)
        if name.startswith(("on_", "watch_")) and callable(getattr(cls, name))
    }


# (hook name, arguments), called in this order
Steps = Sequence[tuple[str, tuple[Any, ...]]]


def _ingress_steps() -> Steps:
    return [
        ("on_request", ("increment", 202, 0.0012)),
        ("on_request", ("counter", 200, 0.0004)),
        ("on_request", ("increment", 503, 0.0021)),
        ("on_request", ("unmatched", 404, None)),
        ("on_produced", ("single", 0.0035)),
        ("on_produced", ("batch", 0.0061)),
        ("on_unavailable", ("kafka",)),
        ("watch_inflight_sends", (lambda: 4,)),
    ]


def _aggregator_steps() -> Steps:
    now_ms = time.time_ns() // 1_000_000
    records = [_ConsumerRecord(offset, now_ms - 250 + offset) for offset in range(20)]
    # a failed flush, then its retry that commits, then a fenced one: failures, retries, rows,
    # delay and fenced all appear
    return [
        ("watch_live_entries", (lambda: 120,)),
        ("watch_lag", (lambda: {0: 15, 1: 0},)),
        ("watch_stalled", (lambda: 1,)),
        ("on_fetched", (0, records)),
        ("on_fetched", (1, [*records[:5], _ConsumerRecord(5, None)])),
        ("on_dead_letter", ()),
        ("on_flush", (0, "tick", "failed", 20, 0.040)),
        ("on_flush", (0, "tick", "committed", 20, 0.012)),
        ("on_flush", (1, "memory", "fenced", 6, 0.003)),
        ("on_dropped", ([1],)),
    ]


def _run(hooks: IngressMetrics | AggregatorMetrics, steps: Steps) -> set[str]:
    for name, arguments in steps:
        getattr(hooks, name)(*arguments)
    return {name for name, _ in steps}


def snapshot_metrics(snapshot: Snapshot) -> list[tuple[Metric, tuple[str | int, ...]]]:
    return [
        *((metric, tags) for metric, tags, _ in snapshot.counters),
        *((metric, tags) for metric, tags, _, _ in snapshot.timers),
        *((metric, tags) for metric, tags, _ in snapshot.gauges),
    ]


def emission_problems(
    emitted: Iterable[tuple[Metric, tuple[str | int, ...]]], catalog: Sequence[Metric]
) -> list[str]:
    """Catalog metrics no hook emitted, metrics emitted outside the catalog, and tag values that
    do not match the metric's tags."""
    observed = list(emitted)
    names = {metric.full_name for metric, _ in observed}
    problems = [f"{m.full_name} is emitted by no hook" for m in catalog if m.full_name not in names]
    problems += [
        f"{metric.full_name} is emitted but not in the catalog"
        for metric, _ in observed
        if metric not in catalog
    ]
    problems += [
        f"{metric.full_name} emitted with tag values {tags} for tags {metric.tags}"
        for metric, tags in observed
        if len(tags) != len(metric.tags)
    ]
    return sorted(set(problems))


def _emitted() -> tuple[Snapshot, Snapshot]:
    ingress = ingress_metrics(_Options())
    aggregator = aggregator_metrics(_Options())
    assert isinstance(ingress, RecordingIngressMetrics)
    assert isinstance(aggregator, RecordingAggregatorMetrics)
    assert _run(ingress, _ingress_steps()) == hook_names(IngressMetrics)
    assert _run(aggregator, _aggregator_steps()) == hook_names(AggregatorMetrics)
    return ingress._recorder.collect(1.0), aggregator._recorder.collect(1.0)


def test_every_catalog_metric_is_emitted_by_a_hook() -> None:
    ingress, aggregator = _emitted()
    emitted = [*snapshot_metrics(ingress), *snapshot_metrics(aggregator)]
    assert emission_problems(emitted, CATALOG) == []
    assert {metric for metric, _ in emitted} == set(CATALOG)


def test_each_service_emits_its_own_metrics() -> None:
    ingress, aggregator = _emitted()
    for snapshot, service in ((ingress, "ingress"), (aggregator, "aggregator")):
        for metric, tags in snapshot_metrics(snapshot):
            assert metric.name.split(".")[0] in (service, "process"), metric
            if metric.name.startswith("process."):
                assert tags == (service,)


def test_a_metric_no_hook_emits_is_found() -> None:
    ingress, aggregator = _emitted()
    emitted = [*snapshot_metrics(ingress), *snapshot_metrics(aggregator)]
    unused = Metric("aggregator.never_emitted", Kind.COUNTER, (), "records", "nothing emits")
    known = emission_problems(emitted, CATALOG)
    assert [p for p in emission_problems(emitted, [*CATALOG, unused]) if p not in known] == [
        "distcount.aggregator.never_emitted is emitted by no hook"
    ]
    dropped = emitted[0][0]
    fewer = [metric for metric in CATALOG if metric != dropped]
    assert [p for p in emission_problems(emitted, fewer) if p not in known] == [
        f"{dropped.full_name} is emitted but not in the catalog"
    ]
    metric, tags = next((metric, tags) for metric, tags in emitted if metric.tags)
    assert [
        p for p in emission_problems([*emitted, (metric, tags[1:])], CATALOG) if p not in known
    ] == [f"{metric.full_name} emitted with tag values {tags[1:]} for tags {metric.tags}"]


def test_recording_hooks_are_the_base_hooks() -> None:
    # a hook only the recording class has would be missing when metrics are off
    for base, recording in (
        (IngressMetrics, RecordingIngressMetrics),
        (AggregatorMetrics, RecordingAggregatorMetrics),
    ):
        assert hook_names(recording) == hook_names(base)


def called_names(sources: Iterable[str]) -> set[str]:
    """Names of methods called as `x.name(...)`, or bound as `f = x.name` to be called later."""
    names = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute):
                names.add(node.value.attr)
    return names


def _sources(service: str) -> list[str]:
    paths = sorted((SERVICES / service / "src").rglob("*.py"))
    assert paths, f"no sources for {service}"
    return [path.read_text() for path in paths]


@pytest.mark.parametrize(
    ("hooks", "service"),
    [(IngressMetrics, "ingress"), (AggregatorMetrics, "aggregator")],
)
def test_every_hook_is_called_by_its_service(hooks: type, service: str) -> None:
    uncalled = hook_names(hooks) - called_names(_sources(service))
    assert not uncalled, f"hooks nothing in services/{service}/src calls: {sorted(uncalled)}"


def test_a_hook_nothing_calls_is_found() -> None:
    source = (
        "def serve(metrics):\n"
        "    on_request = metrics.on_request\n"
        "    on_request('increment', 202, 0.001)\n"
        "    metrics.on_unavailable('kafka')\n"
        "    metrics.watch_inflight_sends(lambda: 0)\n"
        "    metrics.on_produced\n"  # read, never called
    )
    assert hook_names(IngressMetrics) - called_names([source]) == {"on_produced"}
