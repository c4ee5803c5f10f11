"""Access control: bearer tokens, each allowed to write, to read, or both.

The ingress knows tokens only by their SHA-256 (DISTCOUNT_WRITE_TOKEN_HASHES and
DISTCOUNT_READ_TOKEN_HASHES), so its settings give nothing away. With neither set, `create_app`
installs nothing: the requests pay nothing for a check that does not exist. With either set,
`AccessControl` sits in front of the routes; a request pays one pass over its headers, one
SHA-256 of its token and a comparison with each known digest.

Writes are `/increment` and `/increments`; the health checks are open (a load balancer asks them
without a token); everything else is a read, including paths no route serves, so that a caller
without a token learns nothing of the routes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from typing import Any, Final

from starlette.types import ASGIApp, Receive, Scope, Send

from distcount_ingress._http import error_response

WRITE: Final = 1
READ: Final = 2
SCOPE_NAMES: Final = {WRITE: "write", READ: "read"}
REALM: Final = 'Bearer realm="distcount"'
FIELD: Final = "authorization"
OPEN_PATHS: Final = frozenset({"/health/live", "/health/ready"})
WRITE_PATHS: Final = frozenset({"/increment", "/increments"})

# RFC 6750's b64token: what may follow "Bearer "
_BEARER_RE = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9._~+/-]+=*) *")
_AUTHORIZATION: Final = b"authorization"

Refused = Callable[[Scope, int], None]


def needed_scope(path: str) -> int | None:
    """The scope a request for `path` needs; None for the open health checks."""
    if path in WRITE_PATHS:
        return WRITE
    if path in OPEN_PATHS:
        return None
    return READ


class AccessControl:
    """ASGI middleware: answers 401 (no token, a malformed header, an unknown token) or 403 (a
    token without the scope the path needs) before any route runs; `refused` is told of each,
    for the metrics."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        write_hashes: Iterable[str],
        read_hashes: Iterable[str],
        refused: Refused,
    ) -> None:
        self._app = app
        self._refused = refused
        granted: dict[bytes, int] = {}
        for scope, digests in ((WRITE, write_hashes), (READ, read_hashes)):
            for digest in digests:
                key = bytes.fromhex(digest)
                granted[key] = granted.get(key, 0) | scope  # in both lists: both scopes
        self._known = tuple(granted.items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan
            await self._app(scope, receive, send)
            return
        needed = needed_scope(scope["path"])
        if needed is None:
            await self._app(scope, receive, send)
            return
        token, problem = _bearer(scope["headers"])
        if token is None:
            headers = {"WWW-Authenticate": _challenge("invalid_request") if problem else REALM}
            message = problem or "a bearer token is required (Authorization: Bearer <token>)"
            await self._refuse(401, message, headers, scope, receive, send)
            return
        granted = self.scopes_of(token)
        if granted & needed:
            await self._app(scope, receive, send)
            return
        if not granted:
            headers = {"WWW-Authenticate": _challenge("invalid_token")}
            await self._refuse(401, "the token is not known", headers, scope, receive, send)
            return
        name = SCOPE_NAMES[needed]
        headers = {"WWW-Authenticate": f'{_challenge("insufficient_scope")}, scope="{name}"'}
        message = f"the token may not {name}"
        await self._refuse(403, message, headers, scope, receive, send)

    def scopes_of(self, token: bytes) -> int:
        """The scopes `token` has (0 for an unknown one).

        Constant in time whatever the token: every known digest is compared, with
        `hmac.compare_digest` (whose time depends only on the lengths, 32 bytes each), and the
        results are OR-ed without a branch, so nothing tells which digest matched, if any.
        Strictly, comparing digests rather than tokens already removes what a timing attack
        needs: to learn a byte at a time, an attacker must choose what is compared, and the
        SHA-256 of their token is nothing they can steer byte by byte (getting a digest to
        match further is a preimage search). A dict lookup of the digest would leak only how
        far such uncontrollable digests match; the loop costs well under a microsecond for a
        few tokens, and leaves no argument to make.
        """
        digest = hashlib.sha256(token).digest()
        granted = 0
        for known, scopes in self._known:
            granted |= scopes * hmac.compare_digest(known, digest)
        return granted

    async def _refuse(  # noqa: PLR0917  # an ASGI call's three, and the answer's three
        self,
        status: int,
        message: str,
        headers: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        self._refused(scope, status)
        response = error_response(status, {FIELD: [message]}, headers)
        await response(scope, receive, send)


def _bearer(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, str | None]:
    """(the token, None), or (None, why the header is malformed), or (None, None) without one."""
    found: bytes | None = None
    for name, value in headers:
        if name == _AUTHORIZATION:
            if found is not None:
                return None, "must be sent once"
            found = value
    if found is None:
        return None, None
    match = _BEARER_RE.fullmatch(found)
    if match is None:
        return None, "must be Bearer followed by a token (RFC 6750)"
    return match.group(1), None


def _challenge(error: str) -> str:
    """RFC 6750's challenge with an error code: invalid_request, invalid_token or
    insufficient_scope."""
    return f'{REALM}, error="{error}"'


# -- the OpenAPI document ----------------------------------------------------------------------

SCHEME: Final = "bearer"
_UNAUTHORIZED = "no token, a malformed Authorization header, or a token that is not known"


def secured(document: dict[str, Any], errors: dict[str, Any]) -> dict[str, Any]:
    """`document` declaring the bearer scheme, required by every operation but the health
    checks, each listing its 401 and 403; `errors`: the schema of an error answer."""
    challenge = {
        "WWW-Authenticate": {
            "description": f'`{REALM}`, with `error="invalid_token"` for an unknown token, '
            '`error="insufficient_scope"` for a 403',
            "schema": {"type": "string"},
        }
    }
    paths = {}
    for path, item in document["paths"].items():
        needed = needed_scope(path)
        operations = {}
        for method, operation in item.items():
            if needed is None:
                operations[method] = {**operation, "security": []}
                continue
            name = SCOPE_NAMES[needed]
            responses = {
                **operation["responses"],
                "401": {**_json(errors, _UNAUTHORIZED), "headers": challenge},
                "403": {**_json(errors, f"the token may not {name}"), "headers": challenge},
            }
            operations[method] = {**operation, "responses": responses}
        paths[path] = operations
    components = document["components"]
    scheme = {
        "type": "http",
        "scheme": "bearer",
        "description": "a token of the write scope for the increments, of the read scope for "
        "the rest (DISTCOUNT_WRITE_TOKEN_HASHES, DISTCOUNT_READ_TOKEN_HASHES)",
    }
    return {
        **document,
        "paths": paths,
        "security": [{SCHEME: []}],
        "components": {**components, "securitySchemes": {SCHEME: scheme}},
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}
