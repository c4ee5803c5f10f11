"""Access control around fakes: which token reaches which route, the 401s and 403s with their
challenges and JSON, what the metrics count of them, and the OpenAPI document's security."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from distcount_config import ConfigError, Settings, load, token_hash
from distcount_ingress import create_app
from distcount_metrics import ingress_metrics
from tests.unit.ingress.fakes import MAX_BODY_BYTES, FakeCounters, FakePublisher


def new_token() -> str:
    return secrets.token_urlsafe(32)


WRITER, READER, BOTH = new_token(), new_token(), new_token()
INCREMENT = {"key": "c1", "value": 1}


@dataclass(frozen=True)
class _MetricsOptions:
    reporter: str = "console"
    statsd_host: str = "127.0.0.1"
    statsd_port: int = 8125
    interval_ms: int = 60_000
    sample_rate: float = 1.0
    tags: tuple[str, ...] = ()


def _settings(**extra: str) -> Settings:
    return load({"DISTCOUNT_MAX_BODY_BYTES": str(MAX_BODY_BYTES), **extra})


@pytest.fixture
def secured() -> Settings:
    # plain hex and the sha256: form; BOTH is in both lists
    return _settings(
        DISTCOUNT_WRITE_TOKEN_HASHES=f"{token_hash(WRITER)}, {token_hash(BOTH)}",
        DISTCOUNT_READ_TOKEN_HASHES=",".join(
            (token_hash(READER).removeprefix("sha256:").upper(), token_hash(BOTH))
        ),
    )


@pytest.fixture
async def guarded(
    secured: Settings, publisher: FakePublisher, counters: FakeCounters
) -> AsyncIterator[httpx.AsyncClient]:
    counters.totals["c1"] = 5
    app = create_app(secured, publisher, counters)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_each_scope_reaches_its_own_routes(guarded: httpx.AsyncClient) -> None:
    for token in (WRITER, BOTH):
        answer = await guarded.post("/increment", json=INCREMENT, headers=_bearer(token))
        assert answer.status_code == 202, answer.text
        batch = {"increments": [INCREMENT]}
        answer = await guarded.post("/increments", json=batch, headers=_bearer(token))
        assert answer.status_code == 202, answer.text
    for token in (READER, BOTH):
        for path in ("/counters/c1", "/counters", "/counters/top", "/", "/openapi.json"):
            answer = await guarded.get(path, headers=_bearer(token))
            assert answer.status_code == 200, (path, answer.text)
        # an unknown path is a read too: answered as the router answers it
        assert (await guarded.get("/nowhere", headers=_bearer(token))).status_code == 404


async def test_a_scope_the_token_lacks_is_a_403(guarded: httpx.AsyncClient) -> None:
    answer = await guarded.post("/increment", json=INCREMENT, headers=_bearer(READER))
    assert answer.status_code == 403
    assert answer.json() == {"errors": {"authorization": ["the token may not write"]}}
    assert answer.headers["www-authenticate"] == (
        'Bearer realm="distcount", error="insufficient_scope", scope="write"'
    )
    answer = await guarded.get("/counters/c1", headers=_bearer(WRITER))
    assert answer.status_code == 403
    assert answer.json() == {"errors": {"authorization": ["the token may not read"]}}


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, 'Bearer realm="distcount"'),
        (_bearer(new_token()), 'Bearer realm="distcount", error="invalid_token"'),
        ({"Authorization": f"Basic {WRITER}"}, 'Bearer realm="distcount", error="invalid_request"'),
        ({"Authorization": "Bearer"}, 'Bearer realm="distcount", error="invalid_request"'),
        ({"Authorization": "Bearer a b"}, 'Bearer realm="distcount", error="invalid_request"'),
    ],
)
async def test_no_token_a_malformed_or_an_unknown_one_is_a_401(
    guarded: httpx.AsyncClient, publisher: FakePublisher, headers: dict[str, str], challenge: str
) -> None:
    for answer in (
        await guarded.post("/increment", json=INCREMENT, headers=headers),
        await guarded.get("/counters/c1", headers=headers),
        await guarded.get("/nowhere", headers=headers),
    ):
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == challenge
        assert answer.headers["content-type"] == "application/json"
        assert list(answer.json()["errors"]) == ["authorization"]
    assert publisher.records == []


async def test_the_header_sent_twice_is_malformed(guarded: httpx.AsyncClient) -> None:
    headers = [("Authorization", f"Bearer {WRITER}"), ("Authorization", f"Bearer {WRITER}")]
    answer = await guarded.post("/increment", json=INCREMENT, headers=headers)
    assert answer.status_code == 401
    assert answer.json() == {"errors": {"authorization": ["must be sent once"]}}


async def test_the_scheme_is_read_in_any_case(guarded: httpx.AsyncClient) -> None:
    answer = await guarded.post(
        "/increment", json=INCREMENT, headers={"Authorization": f"bEARER {WRITER}"}
    )
    assert answer.status_code == 202


async def test_health_checks_stay_open(guarded: httpx.AsyncClient) -> None:
    assert (await guarded.get("/health/live")).status_code == 200
    assert (await guarded.get("/health/ready")).status_code == 200
    # a token, even an unknown one, changes nothing there
    assert (await guarded.get("/health/live", headers=_bearer("nope"))).status_code == 200


async def test_refusals_are_counted_by_route(
    secured: Settings, publisher: FakePublisher, counters: FakeCounters
) -> None:
    metrics = ingress_metrics(_MetricsOptions())
    app = create_app(secured, publisher, counters, metrics=metrics)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ingress"
    ) as client:
        await client.post("/increment", json=INCREMENT)
        await client.post("/increments", json={"increments": [INCREMENT]}, headers=_bearer(READER))
        await client.get("/counters/c1/history", headers=_bearer("unknown"))
        await client.get("/nowhere")
        await client.get("/health/live")
    snapshot = metrics._recorder.collect(1.0)  # type: ignore[attr-defined]
    counts = {tags: n for mt, tags, n in snapshot.counters if mt.name == "ingress.requests"}
    assert counts == {
        ("increment", 401): 1,
        ("increments", 403): 1,
        ("history", 401): 1,
        ("unmatched", 401): 1,
        ("live", 200): 1,
    }


async def test_without_hashes_no_check_is_installed(
    publisher: FakePublisher, counters: FakeCounters
) -> None:
    app = create_app(_settings(), publisher, counters)
    assert app.user_middleware == []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ingress"
    ) as client:
        # a token nobody asked for is ignored
        answer = await client.post("/increment", json=INCREMENT, headers=_bearer("anything"))
        assert answer.status_code == 202
        document = (await client.get("/openapi.json")).json()
    assert "security" not in document
    assert "securitySchemes" not in document["components"]


async def test_the_document_declares_the_scheme_when_on(guarded: httpx.AsyncClient) -> None:
    document = (await guarded.get("/openapi.json", headers=_bearer(READER))).json()
    assert document["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for operation in item.values():
            if path.startswith("/health/"):
                assert operation["security"] == []
                assert "401" not in operation["responses"]
            else:
                assert {"401", "403"} <= set(operation["responses"]), path
                assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]


def test_token_hashes_refuse_what_is_no_digest_without_showing_it() -> None:
    token = new_token()
    with pytest.raises(ConfigError) as caught:
        _settings(DISTCOUNT_READ_TOKEN_HASHES=token)
    assert "DISTCOUNT_READ_TOKEN_HASHES" in str(caught.value)
    assert token not in str(caught.value)
