"""GET /: the live page, one self-contained HTML file (`static/index.html`) served from memory.

Its Content-Security-Policy lets nothing run or load but the page's own inline script and style,
named by their SHA-256, and requests to this origin; and, through Trusted Types, no string can
be turned into HTML, so a counter's key (untrusted text) is only ever shown as text.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib.resources import files
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

MEDIA_TYPE: Final = "text/html; charset=utf-8"
# the page's inline blocks, which the policy names by hash; a tag with attributes (a `src`)
# does not match, and so is never allowed to run
_INLINE: Final = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


def content_security_policy(html: bytes) -> str:
    """The policy for `html`: its inline scripts and styles by hash, fetches to its own origin."""
    allowed: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for match in _INLINE.finditer(html):
        digest = base64.b64encode(hashlib.sha256(match.group(2)).digest()).decode()
        allowed[match.group(1)].append(f"'sha256-{digest}'")
    directives = {
        "default-src": "'none'",
        "script-src": " ".join(allowed[b"script"]) or "'none'",
        "style-src": " ".join(allowed[b"style"]) or "'none'",
        "connect-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
        "require-trusted-types-for": "'script'",
        "trusted-types": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


@functools.cache
def _loaded() -> tuple[bytes, dict[str, str]]:
    # read on first use, not at import: a missing file costs the page, never the write path
    html = files("distcount_ingress").joinpath("static/index.html").read_bytes()
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return html, headers


async def page(request: Request) -> Response:
    html, headers = _loaded()
    return Response(html, 200, headers, media_type=MEDIA_TYPE)
