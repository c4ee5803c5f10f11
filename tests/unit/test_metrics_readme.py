"""README.md's table of metrics lists the metrics catalog (`distcount_metrics._catalog`), row for
row: names, order, types, tags, units and meanings.

Each check is a function returning the problems it finds, so the tests below also feed it broken
copies of the README, to show that it notices.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pytest

from distcount_metrics import CATALOG, PREFIX
from tests.unit.metrics_checks import BY_NAME, README

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
