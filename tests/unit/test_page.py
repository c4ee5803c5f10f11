"""GET /, the live page: served whole from the package, under a policy that runs only its own
inline script and style and fetches only from its origin; and a page that could not do
otherwise: it names no other place and never turns text into HTML."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from importlib.resources import files

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from distcount_ingress._page import page

# the SVG namespace names the sparkline's elements; nothing is fetched from it
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Route("/", page)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        yield client


def _policy(response: httpx.Response) -> dict[str, list[str]]:
    directives = response.headers["content-security-policy"].split(";")
    parsed = {}
    for directive in directives:
        name, *values = directive.split()
        parsed[name] = values
    return parsed


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


class _Page(HTMLParser):
    """The tags of a page, with their attributes, and the text of its script and style."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: dict[str, list[str]] = {"script": [], "style": []}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in self.inline:
            self._open = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.inline[self._open].append(data)


def _parsed(html: str) -> _Page:
    parser = _Page()
    parser.feed(html)
    parser.close()
    return parser


async def test_the_page_is_the_packaged_file_as_utf8_html(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == files("distcount_ingress").joinpath("static/index.html").read_bytes()
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    # served from memory: the same bytes every time
    assert (await client.get("/")).content == response.content


async def test_the_policy_runs_only_the_pages_own_script_and_style(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")
    policy = _policy(response)
    page = _parsed(response.text)
    (script,) = page.inline["script"]
    (style,) = page.inline["style"]
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == [_sha256(script)]
    assert policy["style-src"] == [_sha256(style)]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == policy["base-uri"] == policy["form-action"] == ["'none'"]
    # no string may become HTML: a key can only ever be shown as text
    assert policy["require-trusted-types-for"] == ["'script'"]
    assert policy["trusted-types"] == ["'none'"]
    assert not {"'unsafe-inline'", "'unsafe-eval'", "*"} & {v for vs in policy.values() for v in vs}
    # every script and style is inline, without attributes: the hashes cover all that runs
    assert [attrs for tag, attrs in page.tags if tag in ("script", "style")] == [{}, {}]


async def test_the_page_names_no_other_place(client: httpx.AsyncClient) -> None:
    html = (await client.get("/")).text
    urls = set(re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"'`)]*", html, re.IGNORECASE))
    assert urls <= {SVG_NAMESPACE}
    for tag, attrs in _parsed(html).tags:
        assert tag not in ("link", "img", "iframe", "object", "embed", "base", "form"), tag
        assert not {"src", "href", "srcset", "action", "style"} & attrs.keys(), (tag, attrs)
    assert "@import" not in html
    assert "url(" not in html
    # nor an address relative to the scheme ("//host/…")
    assert not re.findall(r"[\"'`(=]\s*//", html)


async def test_keys_are_text_and_url_components_only(client: httpx.AsyncClient) -> None:
    (script,) = _parsed((await client.get("/")).text).inline["script"]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "DOMParser"):
        assert sink not in script, sink
    assert "eval(" not in script
    assert "Function(" not in script
    # every path built from a key encodes it
    built = re.findall(r"/counters/\$\{([^}]*)\}", script)
    assert built
    assert all(part.startswith("encodeURIComponent(") for part in built), built


async def test_the_page_is_a_table_with_headers_and_a_live_region(
    client: httpx.AsyncClient,
) -> None:
    page = _parsed((await client.get("/")).text)
    tags = [tag for tag, _ in page.tags]
    assert tags.count("table") == 1
    assert "caption" in tags
    headers = [attrs for tag, attrs in page.tags if tag == "th"]
    assert len(headers) >= 4
    assert all(attrs.get("scope") == "col" for attrs in headers)
    assert any(attrs.get("aria-live") == "polite" for _, attrs in page.tags)
    assert ("html", {"lang": "en"}) in page.tags
    viewport = [attrs for tag, attrs in page.tags if tag == "meta" and "name" in attrs]
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in viewport
