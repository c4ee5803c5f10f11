"""GET /, the live page, in a real browser: Debian's Chromium, headless, opens the page a real
ingress serves over a real pipeline, and the test reads what it shows from the DOM."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.pipeline import Pipeline, wait_for

pytestmark = pytest.mark.integration

# A key that is markup, one past JavaScript's exact integers (2^53 + 1), the key the route
# /counters/top shadows, and a negative total: largest first, as the page ranks them.
INCREMENTS: list[tuple[str, int]] = [
    ("huge", 2**53 + 1),
    ("checkout.completed", 20),
    ("checkout.completed", 15),
    ("checkout.completed", 7),
    ('<b>bold</b> & "quoted" ü', 5),
    ('<b>bold</b> & "quoted" ü', 2),
    ("top", 3),
    ("refunds", 4),
    ("refunds", -6),
]
TOTALS: dict[str, int] = {}
for _key, _value in INCREMENTS:
    TOTALS[_key] = TOTALS.get(_key, 0) + _value
RANKED = sorted(TOTALS, key=lambda key: -TOTALS[key])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# HTML elements with no end tag
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "Chromium is missing: the live page is tested in Debian's headless Chromium "
            "(apt-get install chromium)"
        )
    return found


async def _browse(url: str, profile: Path, *options: str, budget_ms: int = 5000) -> str:
    """Chromium's standard output after `budget_ms` of the page's (virtual) time at `url`."""
    args = [
        _chromium(),
        "--headless",
        "--no-sandbox",  # root may not use the sandbox
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        # virtual time stops while a request is on its way: the page polls, the DOM is dumped
        f"--virtual-time-budget={budget_ms}",
        *options,
        url,
    ]
    done = await asyncio.to_thread(
        subprocess.run, args, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@dataclass
class _Row:
    attrs: dict[str, str]
    cells: dict[str, str] = field(default_factory=dict)  # "key" (the row's header), "total"…
    sparkline: dict[str, str] | None = None


class _Dom(HTMLParser):
    """The rows of the page's table, and the attributes and text of its elements with an id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[_Row] = []
        self.by_id: dict[str, dict[str, str]] = {}
        self.text: dict[str, str] = {}
        self.tags_in_cells: set[str] = set()
        self._open: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if self._cell() is not None:
            self.tags_in_cells.add(tag)
        if tag == "tr" and "data-key" in attributes:
            self.rows.append(_Row(attributes))
        if tag == "svg" and self._cell() is not None:
            self.rows[-1].sparkline = attributes
        if "id" in attributes:
            self.by_id[attributes["id"]] = attributes
            self.text[attributes["id"]] = ""
        if tag not in _VOID:
            self._open.append((tag, attributes))

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        for _, attributes in self._open:
            if "id" in attributes:
                self.text[attributes["id"]] += data
        cell = self._cell()
        if cell is not None and not any(tag in ("svg", "title") for tag, _ in self._open):
            self.rows[-1].cells[cell] = self.rows[-1].cells.get(cell, "") + data

    def _cell(self) -> str | None:
        """The cell of a counter's row being read: its name, else None."""
        in_row = any(tag == "tr" and "data-key" in attrs for tag, attrs in self._open)
        for tag, attributes in reversed(self._open):
            if in_row and tag == "th":
                return "key"
            if in_row and tag == "td":
                return attributes.get("data-col") or attributes.get("class", "")
        return None


def _dom(html: str) -> _Dom:
    dom = _Dom()
    dom.feed(html)
    dom.close()
    return dom


def _png_size(image: bytes) -> tuple[int, int]:
    """Width and height of a PNG image, from its header."""
    assert image[:8] == PNG_SIGNATURE, image[:8]
    assert image[12:16] == b"IHDR"
    width, height = struct.unpack(">II", image[16:24])
    return width, height


async def _top(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        answer = await client.get("/counters/top", params={"window": "5m", "limit": "10"})
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


async def test_the_page_shows_the_busiest_counters_as_counted(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    _chromium()
    pipeline.start("aggregator", "aggregator")
    url = await pipeline.start_ingress()

    # nothing counted yet: the page says so
    empty = _dom(await _browse(url + "/", tmp_path / "profile-empty", "--dump-dom"))
    assert empty.by_id["state"]["data-state"] == "empty", empty.text["state"]
    assert "No counter has counted anything" in empty.text["state"]
    assert empty.rows == []

    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for key, value in INCREMENTS[:-2]:
            written = await client.post("/increment", json={"key": key, "value": value})
            assert written.status_code == 202, written.text
        batch = [{"key": key, "value": value} for key, value in INCREMENTS[-2:]]
        written = await client.post("/increments", json={"increments": batch})
        assert written.status_code == 202, written.text
    await pipeline.wait_caught_up()

    async def all_counted() -> bool:
        top = await _top(url)
        counted = {counter["key"]: counter["value"] for counter in top["counters"]}
        return counted == TOTALS and top["as_of"] is not None

    await wait_for(all_counted, 60, "GET /counters/top to give every total, with an as_of")
    as_of_before = (await _top(url))["as_of"]

    page = _dom(await _browse(url + "/", tmp_path / "profile-values", "--dump-dom"))
    assert page.by_id["state"]["data-state"] == "live", page.text["state"]
    # every value exact, in the ranking's order: the total, and the window's sum (all recent)
    shown = [(row.attrs["data-key"], row.attrs["data-value"]) for row in page.rows]
    assert shown == [(key, str(TOTALS[key])) for key in RANKED]
    assert [row.attrs["data-window-value"] for row in page.rows] == [
        str(TOTALS[key]) for key in RANKED
    ]
    for row in page.rows:
        key = row.attrs["data-key"]
        # the key shown as text, markup and all; the value's digits, however the locale groups
        # them (its sign is the data attribute's)
        assert row.cells["key"] == key
        assert re.sub(r"\D", "", row.cells["total"]) == str(abs(TOTALS[key]))
        assert row.sparkline is not None, key
        assert int(row.sparkline["data-points"]) >= 2, row.sparkline
    # no key was taken for markup
    assert page.tags_in_cells <= {"svg", "title", "path", "wbr"}
    # as_of only moves forward (ISO 8601 UTC with milliseconds compares as text)
    as_of = page.by_id["as-of"]["data-as-of"]
    assert as_of >= as_of_before, (as_of, as_of_before)
    assert page.text["as-of"].startswith("Counted up to ")

    # and a screenshot of it, as a phone would show it too
    for name, (width, height) in {"desktop": (1024, 700), "phone": (390, 844)}.items():
        image = tmp_path / f"live-page-{name}.png"
        await _browse(
            url + "/",
            tmp_path / f"profile-{name}",
            f"--screenshot={image}",
            f"--window-size={width},{height}",
            "--hide-scrollbars",
        )
        assert image.is_file(), f"Chromium wrote no screenshot at {image}"
        png = image.read_bytes()
        assert _png_size(png) == (width, height)
        # a blank page of this size compresses to a few kilobytes; this one has text and lines
        assert 15_000 < len(png) < 5_000_000, len(png)


async def test_the_page_says_what_postgresql_answered_when_it_does_not_answer(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    _chromium()
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    nowhere = f"postgresql://distcount:distcount@127.0.0.1:{closed_port}/distcount"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pipeline.start("ingress", "ingress", http_port=str(port), database_url=nowhere)
    url = f"http://127.0.0.1:{port}"

    async def refused() -> bool:
        try:
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                return (await client.get("/counters/top")).status_code == 503
        except httpx.HTTPError:
            return False

    await wait_for(refused, 60, "the ingress to answer 503 for the busiest counters")
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        (message,) = (await client.get("/counters/top")).json()["errors"]["postgres"]

    page = _dom(await _browse(url + "/", tmp_path / "profile", "--dump-dom", budget_ms=3000))
    assert page.by_id["state"]["data-state"] == "error"
    assert page.text["state"].startswith("Not updating. PostgreSQL does not answer: ")
    assert message in page.text["state"]
    assert page.rows == []
