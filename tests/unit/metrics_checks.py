"""What the metrics-catalog tests share: where the catalog's copies are (README.md's table, the
Datadog dashboard `libs/metrics/dashboards/datadog.json`, the services' code), the catalog by full
name, and the dashboard's check.

The check is here, apart from test_metrics_dashboard.py, only to keep both modules short. It
returns the problems it finds, so the tests also feed it broken copies of the dashboard:

- every dashboard query names a catalog metric, with a suffix only where Datadog adds one (a
  timer's `.95percentile`), and filters or groups by the metric's own tags (or `env`, `host`);
- every catalog metric is charted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from distcount_metrics import CATALOG, PREFIX, Kind, Metric

ROOT: Final = Path(__file__).resolve().parents[2]
README: Final = ROOT / "README.md"
DASHBOARD_PATH: Final = "libs/metrics/dashboards/datadog.json"
DASHBOARD: Final = ROOT / DASHBOARD_PATH
SERVICES: Final = ROOT / "services"

BY_NAME: Final = {metric.full_name: metric for metric in CATALOG}


# -- the dashboard's check --------------------------------------------------------------------

# the agent's host tag, and the constant tag users set with DISTCOUNT_METRICS_TAGS
GLOBAL_TAGS: Final = frozenset({"env", "host"})
# what the Datadog agent makes of a DogStatsD timer (`ms`)
TIMER_SUFFIXES: Final = frozenset({"avg", "median", "95percentile", "max", "count"})
# template variable name -> tag prefix
TEMPLATE_VARIABLES: Final = {"env": "env", "host": "host"}
WIDGET_TYPES: Final = frozenset({"timeseries", "query_value"})


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
