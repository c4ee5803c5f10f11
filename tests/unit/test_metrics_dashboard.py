"""The Datadog dashboard (`libs/metrics/dashboards/datadog.json`) charts the metrics catalog
(`distcount_metrics._catalog`), and the README names it.

The check itself is in metrics_checks.py; the tests below also feed it broken copies of the
dashboard, to show that it notices.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest

from tests.unit.metrics_checks import (
    BY_NAME,
    DASHBOARD,
    DASHBOARD_PATH,
    README,
    Reference,
    dashboard_problems,
    references,
    resolve,
)


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
