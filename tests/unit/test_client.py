"""distcount_client's `Client` and `AsyncClient` against httpx.MockTransport: every method, the
answers of each status, and when a request is sent again. Each test runs with both clients."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

import distcount_client._async
import distcount_client._sync
from distcount_client import (
    AsyncClient,
    Client,
    ClientError,
    Counted,
    Counter,
    Entry,
    InvalidInput,
    NotCountedYet,
    NotFound,
    Page,
    Point,
    Retry,
    Top,
    TransportError,
    Unavailable,
    UnexpectedAnswer,
    Written,
)
from distcount_core import DistcountError

BASE = "http://ingress.test:3333"
AS_OF = "2026-11-30T12:00:05.123Z"
AS_OF_TIME = datetime(2026, 11, 30, 12, 0, 5, 123000, tzinfo=UTC)
TOKEN = "1.W1swLDQyXV0"

Handler = Callable[[httpx.Request], httpx.Response]


class FakeClock:
    """time.monotonic and the clients' sleep, without waiting: a sleep moves the clock on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    for module in (distcount_client._sync, distcount_client._async):
        monkeypatch.setattr(module, "_clock", fake.monotonic)
    monkeypatch.setattr(distcount_client._sync, "_sleep", fake.sleep)
    monkeypatch.setattr(distcount_client._async, "_sleep", fake.async_sleep)
    return fake


class Ingress:
    """Answers queued per test; records every request it is sent."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self._answers: list[httpx.Response | Exception | Handler] = []

    def answer(self, *answers: httpx.Response | Exception | Handler) -> Ingress:
        self._answers.extend(answers)
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        # a fresh copy: a response is read once, and the same one may be queued for both clients
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    @property
    def request(self) -> httpx.Request:
        (only,) = self.requests
        return only


def data(status: int, payload: object, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"data": payload}, headers=headers)


def errors(status: int, errors: dict[str, list[str]], **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": errors}, headers=headers)


def refused_connection(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def counter_body(key: str = "c1", value: int = 42, **more: object) -> dict[str, object]:
    return {"key": key, "value": value, "as_of": AS_OF, **more}


class Both:
    """One call of a method, made with the sync `Client` or with `AsyncClient`."""

    def __init__(self, flavor: str, ingress: Ingress) -> None:
        self.flavor = flavor
        self.ingress = ingress

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        transport = httpx.MockTransport(self.ingress)
        options: dict[str, Any] = {"timeout_s": kwargs.pop("client_timeout_s", 5.0)}
        if "retry" in kwargs:
            options["retry"] = kwargs.pop("retry")
        if self.flavor == "sync":
            with Client(BASE, http=httpx.Client(transport=transport), **options) as client:
                result = getattr(client, method)(*args, **kwargs)
                return list(result) if method == "iter_counters" else result
        async with AsyncClient(
            BASE, http=httpx.AsyncClient(transport=transport), **options
        ) as aclient:
            if method == "iter_counters":
                return [entry async for entry in aclient.iter_counters(*args, **kwargs)]
            return await getattr(aclient, method)(*args, **kwargs)


@pytest.fixture
def ingress() -> Ingress:
    return Ingress()


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest, ingress: Ingress, clock: FakeClock) -> Both:
    return Both(request.param, ingress)


def _timeout(request: httpx.Request) -> dict[str, float]:
    timeout: dict[str, float] = request.extensions["timeout"]
    return timeout


# -- get_counter_value --------------------------------------------------------------------------


async def test_a_counter_is_read_with_its_as_of(call: Both, ingress: Ingress) -> None:
    ingress.answer(data(200, counter_body()))
    counter = await call("get_counter_value", "c1")
    assert counter == Counter("c1", 42, AS_OF_TIME, complete=True)
    assert ingress.request.method == "GET"
    assert str(ingress.request.url) == f"{BASE}/counters/c1"
    assert _timeout(ingress.request)["read"] == 5.0


async def test_values_are_exact_at_any_size_and_as_of_may_be_null(
    call: Both, ingress: Ingress
) -> None:
    ingress.answer(
        httpx.Response(200, content=b'{"data":{"key":"big","value":%d,"as_of":null}}' % 10**30)
    )
    assert await call("get_counter_value", "big") == Counter("big", 10**30, None)


@pytest.mark.parametrize(
    ("key", "raw_path"),
    [
        ("a/b", b"/counters/a%2Fb"),
        ("..", b"/counters/%2E%2E"),
        (".", b"/counters/%2E"),
        ("a..b", b"/counters/a..b"),
        ("caf\u00e9 au lait?#", b"/counters/caf%C3%A9%20au%20lait%3F%23"),
        ("50%", b"/counters/50%25"),
    ],
)
async def test_a_key_is_one_path_segment_whatever_it_holds(
    call: Both, ingress: Ingress, key: str, raw_path: bytes
) -> None:
    ingress.answer(data(200, counter_body(key)))
    assert (await call("get_counter_value", key)).key == key
    assert ingress.request.url.raw_path == raw_path


async def test_a_read_after_a_write_waits_longer_and_says_it_is_complete(
    call: Both, ingress: Ingress
) -> None:
    ingress.answer(data(200, counter_body(complete=True)))
    counter = await call("get_counter_value", "c1", after=TOKEN)
    assert counter.complete is True
    assert ingress.request.url.params["after"] == TOKEN
    # the ingress holds the answer until the write is flushed, up to its own bound
    assert _timeout(ingress.request)["read"] == 35.0
    assert _timeout(ingress.request)["connect"] == 5.0


async def test_a_read_after_a_write_the_ingress_stopped_waiting_for_is_incomplete(
    call: Both, ingress: Ingress
) -> None:
    ingress.answer(data(202, counter_body(value=0, complete=False)))
    counter = await call("get_counter_value", "c1", after=TOKEN)
    assert counter == Counter("c1", 0, AS_OF_TIME, complete=False)


async def test_a_counter_never_flushed_is_not_found(call: Both, ingress: Ingress) -> None:
    ingress.answer(errors(404, {"key": ["not found"]}))
    with pytest.raises(NotFound, match="no counter 'nope'") as caught:
        await call("get_counter_value", "nope")
    assert (caught.value.key, caught.value.status_code) == ("nope", 404)


async def test_a_route_the_ingress_lacks_is_no_missing_counter(
    call: Both, ingress: Ingress
) -> None:
    ingress.answer(errors(404, {"path": ["not found"]}))
    with pytest.raises(UnexpectedAnswer, match=r"does not serve GET .*/writes/.*older"):
        await call("wait_for", TOKEN)


async def test_a_key_that_breaks_the_rules_is_invalid_input(call: Both, ingress: Ingress) -> None:
    ingress.answer(errors(422, {"key": ["must not hold control characters"]}))
    with pytest.raises(InvalidInput, match="key: must not hold control characters") as caught:
        await call("get_counter_value", "a\x01")
    assert caught.value.errors == {"key": ["must not hold control characters"]}
    assert caught.value.status_code == 422


@pytest.mark.parametrize("key", ["top", "a/history", "/history"])
async def test_a_counter_another_route_shadows_is_read_through_the_listing(
    call: Both, ingress: Ingress, key: str
) -> None:
    ingress.answer(data(200, {"counters": [{"key": key, "value": 7}], "next_cursor": "x"}))
    assert await call("get_counter_value", key) == Counter(key, 7, None)
    assert ingress.request.url.path == "/counters"
    assert dict(ingress.request.url.params) == {"prefix": key, "limit": "1"}


async def test_the_history_of_counters_named_like_routes(call: Both, ingress: Ingress) -> None:
    ingress.answer(data(200, _history_body()))
    await call("history", "top")
    await call("history", "a/history")
    assert [r.url.raw_path for r in ingress.requests] == [
        b"/counters/top/history",
        b"/counters/a%2Fhistory/history",
    ]


async def test_a_counter_named_top_that_does_not_exist_is_not_found(
    call: Both, ingress: Ingress
) -> None:
    ingress.answer(data(200, {"counters": [{"key": "top/x", "value": 7}], "next_cursor": None}))
    with pytest.raises(NotFound):
        await call("get_counter_value", "top")


async def test_a_counter_named_top_read_after_a_write_waits_for_it_first(
    call: Both, ingress: Ingress
) -> None:
    ingress.answer(
        data(202, {"token": TOKEN, "complete": False, "as_of": AS_OF}),
        data(200, {"counters": [], "next_cursor": None}),
    )
    counter = await call("get_counter_value", "top", after=TOKEN)
    assert counter == Counter("top", 0, AS_OF_TIME, complete=False)
    assert [r.url.path for r in ingress.requests] == [f"/writes/{TOKEN}", "/counters"]


# -- writes --------------------------------------------------------------------------------------


async def test_incr_posts_one_increment_and_returns_its_token(call: Both, ingress: Ingress) -> None:
    ingress.answer(data(202, {"key": "c1", "value": 5, "token": TOKEN}))
    written = await call("incr", "c1", 5)
    assert (written.token, written.increments) == (TOKEN, {"c1": 5})
    # every write carries a key of its own, a UUID, and tells which
    assert written.idempotency_key == ingress.request.headers["Idempotency-Key"]
    assert uuid.UUID(written.idempotency_key).version == 4
    assert ingress.request.method == "POST"
    assert ingress.request.url.path == "/increment"
    assert ingress.request.headers["content-type"] == "application/json"
    assert json.loads(ingress.request.content) == {"key": "c1", "value": 5}


async def test_incr_counts_one_by_default(call: Both, ingress: Ingress) -> None:
    ingress.answer(data(202, {"key": "c1", "value": 1, "token": TOKEN}))
    await call("incr", "c1")
    assert json.loads(ingress.request.content) == {"key": "c1", "value": 1}


async def test_an_ingress_older_than_tokens_gives_none(call: Both, ingress: Ingress) -> None:
    ingress.answer(data(202, {"key": "c1", "value": 1}))
    written = await call("incr", "c1")
    assert (written.token, written.increments) == (None, {"c1": 1})
    with pytest.raises(InvalidInput, match="older than tokens"):
        await call("wait_for", written)


@pytest.mark.parametrize(
    "increments",
    [
        lambda: {"a": 2, "b": 1},
        lambda: [("a", 2), ("b", 1)],
        lambda: iter([("a", 2), ("b", 1)]),
    ],
    ids=["mapping", "pairs", "iterator"],
)
async def test_incr_many_posts_a_batch(call: Both, ingress: Ingress, increments: Any) -> None:
    sent = [{"key": "a", "value": 2}, {"key": "b", "value": 1}]
    ingress.answer(data(202, {"increments": sent, "token": TOKEN}))
    written = await call("incr_many", increments(), idempotency_key="batch-7")
    assert written == Written(TOKEN, {"a": 2, "b": 1}, "batch-7")
    assert ingress.request.headers["Idempotency-Key"] == "batch-7"
    assert ingress.request.url.path == "/increments"
    assert json.loads(ingress.request.content) == {"increments": sent}


async def test_incr_many_refuses_what_is_not_pairs(call: Both, ingress: Ingress) -> None:
    with pytest.raises(InvalidInput, match="increments"):
        await call("incr_many", [("a", 1, 2)])
    assert ingress.requests == []


async def test_a_write_that_breaks_the_rules_is_invalid_input(call: Both, ingress: Ingress) -> None:
    ingress.answer(errors(422, {"value": ["must not be zero"]}))
    with pytest.raises(InvalidInput, match=r"refused POST .*/increment \(422\): value: must not"):
        await call("incr", "c1", 0)


@pytest.mark.parametrize("status", [400, 413, 415])
async def test_other_refusals_of_the_body_are_invalid_input(
    call: Both, ingress: Ingress, status: int
) -> None:
    ingress.answer(errors(status, {"body": ["no"]}))
    with pytest.raises(InvalidInput) as caught:
        await call("incr_many", {"a": 1})
    assert caught.value.status_code == status


# -- wait_for ------------------------------------------------------------------------------------


async def test_wait_for_asks_again_until_the_write_is_counted(
    call: Both, ingress: Ingress, clock: FakeClock
) -> None:
    pending = data(202, {"token": TOKEN, "complete": False, "as_of": None})
    done = data(200, {"token": TOKEN, "complete": True, "as_of": AS_OF})
    ingress.answer(pending, pending, done)
    assert await call("wait_for", TOKEN, timeout_s=60) == Counted(TOKEN, AS_OF_TIME)
    assert [r.url.path for r in ingress.requests] == [f"/writes/{TOKEN}"] * 3
    # each request may be held by the ingress up to what is left of the deadline
    assert _timeout(ingress.requests[0])["read"] == 60
    assert len(clock.slept) == 2


async def test_wait_for_takes_the_written_itself(call: Both, ingress: Ingress) -> None:
    ingress.answer(data(200, {"token": TOKEN, "complete": True, "as_of": AS_OF}))
    assert await call("wait_for", Written(TOKEN, {"c1": 1})) == Counted(TOKEN, AS_OF_TIME)


async def test_wait_for_gives_up_at_its_own_deadline(
    call: Both, ingress: Ingress, clock: FakeClock
) -> None:
    def held(request: httpx.Request) -> httpx.Response:
        clock.now += 2.0  # the ingress held it, then said: not yet
        return data(202, {"token": TOKEN, "complete": False, "as_of": AS_OF})

    ingress.answer(held)
    with pytest.raises(NotCountedYet, match="not counted within 5 s") as caught:
        await call("wait_for", TOKEN, timeout_s=5)
    assert caught.value.token == TOKEN
    assert caught.value.as_of == AS_OF_TIME
    assert 2 <= len(ingress.requests) <= 3


async def test_wait_for_whose_last_request_runs_past_the_deadline_is_not_counted_yet(
    call: Both, ingress: Ingress, clock: FakeClock
) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        clock.now += _timeout(request)["read"]
        raise httpx.ReadTimeout("timed out", request=request)

    ingress.answer(slow)
    with pytest.raises(NotCountedYet) as caught:
        await call("wait_for", TOKEN, timeout_s=3)
    assert isinstance(caught.value.__cause__, TransportError)
    assert len(ingress.requests) == 1


async def test_wait_for_a_token_the_ingress_cannot_read(call: Both, ingress: Ingress) -> None:
    ingress.answer(errors(422, {"token": ["is not a token of this service"]}))
    with pytest.raises(InvalidInput, match="token: is not a token"):
        await call("wait_for", "nonsense")


async def test_wait_for_needs_time_to_wait(call: Both, ingress: Ingress) -> None:
    with pytest.raises(InvalidInput, match="timeout_s"):
        await call("wait_for", TOKEN, timeout_s=0)
    assert ingress.requests == []


# -- history, list, top --------------------------------------------------------------------------


def _history_body(**more: object) -> dict[str, object]:
    return {
        "key": "c1",
        "from": "2026-11-30T11:58:00.000Z",
        "to": "2026-11-30T12:00:00.000Z",
        "step_ms": 60000,
        "points": [
            {"start": "2026-11-30T11:58:00.000Z", "value": 3},
            {"start": "2026-11-30T11:59:00.000Z", "value": 0},
        ],
        "as_of": AS_OF,
        **more,
    }


async def test_history_reads_points_per_step(call: Both, ingress: Ingress) -> None:
    ingress.answer(data(200, _history_body()))
    found = await call("history", "c1")
    assert found.key == "c1"
    assert (found.start, found.end) == (
        datetime(2026, 11, 30, 11, 58, tzinfo=UTC),
        datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    )
    assert found.step_ms == 60000
    assert found.points == [
        Point(datetime(2026, 11, 30, 11, 58, tzinfo=UTC), 3),
        Point(datetime(2026, 11, 30, 11, 59, tzinfo=UTC), 0),
    ]
    assert found.as_of == AS_OF_TIME
    assert ingress.request.url.path == "/counters/c1/history"
    assert dict(ingress.request.url.params) == {}  # the ingress's defaults


@pytest.mark.parametrize(
    ("arguments", "params"),
    [
        (
            {"start": 1_000, "end": 61_000, "step": "1m"},
            {"from": "1000", "to": "61000", "step": "1m"},
        ),
        (
            {
                "start": datetime(2026, 11, 30, 12, 0, 0, 1500, tzinfo=UTC),
                "end": datetime(2026, 11, 30, 13, 0, tzinfo=UTC),
                "step": timedelta(hours=1),
            },
            {"from": "1796040000001", "to": "1796043600000", "step": "1h"},
        ),
        (
            # the same instant in another zone is the same millisecond
            {
                "start": datetime.fromisoformat("2026-11-30T13:00:00+01:00"),
                "step": timedelta(milliseconds=1500),
            },
            {"from": "1796040000000", "step": "1500ms"},
        ),
        ({"step": timedelta(days=2)}, {"step": "2d"}),
    ],
)
async def test_history_sends_times_as_epoch_ms_and_steps_as_durations(
    call: Both, ingress: Ingress, arguments: dict[str, Any], params: dict[str, str]
) -> None:
    ingress.answer(data(200, _history_body()))
    await call("history", "c1", **arguments)
    assert dict(ingress.request.url.params) == params


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"start": datetime(2026, 11, 30)}, "from"),
        ({"end": datetime(2026, 11, 30)}, "to"),
        ({"start": True}, "from"),
        ({"step": timedelta(microseconds=1500)}, "step"),
        ({"step": timedelta(0)}, "step"),
        ({"step": timedelta(minutes=-1)}, "step"),
    ],
)
async def test_history_refuses_arguments_before_sending(
    call: Both, ingress: Ingress, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await call("history", "c1", **arguments)
    assert list(caught.value.errors) == [field]
    assert caught.value.status_code is None
    assert ingress.requests == []


async def test_history_refusals_name_the_parameter(call: Both, ingress: Ingress) -> None:
    ingress.answer(errors(422, {"step": ["must be a multiple of the bucket width, 5s"]}))
    with pytest.raises(InvalidInput) as caught:
        await call("history", "c1", step="7s")
    assert caught.value.errors == {"step": ["must be a multiple of the bucket width, 5s"]}


async def test_history_of_a_counter_never_flushed(call: Both, ingress: Ingress) -> None:
    ingress.answer(errors(404, {"key": ["not found"]}))
    with pytest.raises(NotFound):
        await call("history", "nope")


async def test_list_returns_a_page(call: Both, ingress: Ingress) -> None:
    ingress.answer(
        data(
            200,
            {
                "counters": [{"key": "a", "value": 1}, {"key": "b", "value": -2}],
                "next_cursor": "Yg",
            },
        )
    )
    page = await call("list", "a", limit=2, cursor="YQ")
    assert page == Page([Entry("a", 1), Entry("b", -2)], "Yg")
    assert ingress.request.url.path == "/counters"
    assert dict(ingress.request.url.params) == {"prefix": "a", "limit": "2", "cursor": "YQ"}


async def test_list_without_arguments_sends_none(call: Both, ingress: Ingress) -> None:
    ingress.answer(data(200, {"counters": [], "next_cursor": None}))
    assert await call("list") == Page([], None)
    assert dict(ingress.request.url.params) == {}


async def test_iter_counters_follows_the_cursors(call: Both, ingress: Ingress) -> None:
    ingress.answer(
        data(200, {"counters": [{"key": "p1", "value": 1}], "next_cursor": "c1"}),
        data(200, {"counters": [{"key": "p2", "value": 2}], "next_cursor": "c2"}),
        data(200, {"counters": [], "next_cursor": None}),
    )
    entries = await call("iter_counters", "p", page_size=1)
    assert entries == [Entry("p1", 1), Entry("p2", 2)]
    assert [dict(r.url.params) for r in ingress.requests] == [
        {"prefix": "p", "limit": "1"},
        {"prefix": "p", "limit": "1", "cursor": "c1"},
        {"prefix": "p", "limit": "1", "cursor": "c2"},
    ]


@pytest.mark.parametrize(
    ("window", "params"),
    [(None, {}), ("1h", {"window": "1h"}), (timedelta(seconds=90), {"window": "90s"})],
)
async def test_top_returns_the_busiest_counters(
    call: Both, ingress: Ingress, window: str | timedelta | None, params: dict[str, str]
) -> None:
    body = {"window_ms": 300000, "counters": [{"key": "a", "value": 9}], "as_of": AS_OF}
    ingress.answer(data(200, body))
    assert await call("top", window) == Top(300000, [Entry("a", 9)], AS_OF_TIME)
    assert ingress.request.url.path == "/counters/top"
    assert dict(ingress.request.url.params) == params


async def test_top_sends_its_limit(call: Both, ingress: Ingress) -> None:
    ingress.answer(data(200, {"window_ms": 60000, "counters": [], "as_of": None}))
    assert await call("top", "1m", limit=3) == Top(60000, [], None)
    assert dict(ingress.request.url.params) == {"window": "1m", "limit": "3"}


# -- answers that break the contract -------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "where"),
    [
        (httpx.Response(200, content=b"<html>proxy</html>"), "not JSON"),
        (httpx.Response(200, json={"key": "c1", "value": 1}), '"data"'),
        (data(200, {"key": "c1", "as_of": None}), "data.value: missing"),
        (data(200, {"key": "c1", "value": True, "as_of": None}), "data.value: expected an integer"),
        (data(200, {"key": "c1", "value": 1.5, "as_of": None}), "data.value: expected an integer"),
        (data(200, {"key": "c1", "value": 1, "as_of": "noon"}), "data.as_of: expected an ISO"),
        (data(200, {"key": "c1", "value": 1, "as_of": "2026-11-30T12:00"}), "its zone"),
        (data(200, [1, 2]), "data: expected an object"),
    ],
)
async def test_a_body_that_breaks_the_contract_is_an_unexpected_answer(
    call: Both, ingress: Ingress, answer: httpx.Response, where: str
) -> None:
    ingress.answer(answer)
    with pytest.raises(UnexpectedAnswer, match=where):
        await call("get_counter_value", "c1")


async def test_a_server_error_is_an_unexpected_answer(call: Both, ingress: Ingress) -> None:
    ingress.answer(errors(500, {"server": ["internal error"]}))
    with pytest.raises(UnexpectedAnswer, match="500 Internal Server Error: server: internal") as e:
        await call("get_counter_value", "c1")
    assert e.value.status_code == 500
    assert len(ingress.requests) == 1  # not retried


async def test_every_error_is_a_distcount_error(call: Both, ingress: Ingress) -> None:
    ingress.answer(refused_connection)
    with pytest.raises(DistcountError):
        await call("incr", "c1", retry=Retry(attempts=1))


# -- retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow"),
        httpx.PoolTimeout("busy"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset"),
    ],
    ids=lambda exc: type(exc).__name__,
)
async def test_a_read_is_sent_again_after_a_connection_failure(
    call: Both, ingress: Ingress, clock: FakeClock, failure: Exception
) -> None:
    ingress.answer(failure, data(200, counter_body()))
    assert (await call("get_counter_value", "c1")).value == 42
    assert len(ingress.requests) == 2
    assert len(clock.slept) == 1


async def test_a_read_gives_up_after_three_attempts(
    call: Both, ingress: Ingress, clock: FakeClock
) -> None:
    ingress.answer(refused_connection)
    with pytest.raises(TransportError, match="cannot connect to the ingress: GET") as caught:
        await call("get_counter_value", "c1")
    assert len(ingress.requests) == 3
    assert len(clock.slept) == 2
    assert clock.slept[1] > clock.slept[0]  # backing off
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_a_read_that_timed_out_is_not_sent_again(call: Both, ingress: Ingress) -> None:
    ingress.answer(httpx.ReadTimeout("timed out"))
    with pytest.raises(TransportError, match="no answer in time"):
        await call("get_counter_value", "c1")
    assert len(ingress.requests) == 1


async def test_a_read_is_sent_again_when_a_503_says_when(
    call: Both, ingress: Ingress, clock: FakeClock
) -> None:
    ingress.answer(
        errors(503, {"postgres": ["cannot connect"]}, **{"Retry-After": "2"}),
        data(200, counter_body()),
    )
    assert (await call("get_counter_value", "c1")).value == 42
    assert len(ingress.requests) == 2
    assert clock.slept == [2.0]  # Retry-After, longer than the backoff's first delay


async def test_a_503_that_does_not_say_when_is_raised(call: Both, ingress: Ingress) -> None:
    ingress.answer(errors(503, {"postgres": ["cannot connect"]}))
    with pytest.raises(Unavailable, match="postgres: cannot connect") as caught:
        await call("get_counter_value", "c1")
    assert caught.value.retry_after_s is None
    assert len(ingress.requests) == 1


async def test_a_503_that_asks_for_too_long_a_wait_is_raised(call: Both, ingress: Ingress) -> None:
    ingress.answer(errors(503, {"kafka": ["down"]}, **{"Retry-After": "60"}))
    with pytest.raises(Unavailable, match="retry after 60 s") as caught:
        await call("top")
    assert caught.value.retry_after_s == 60
    assert len(ingress.requests) == 1


async def test_a_503_that_lasts_is_raised_after_three_attempts(
    call: Both, ingress: Ingress
) -> None:
    ingress.answer(errors(503, {"postgres": ["down"]}, **{"Retry-After": "1"}))
    with pytest.raises(Unavailable):
        await call("history", "c1")
    assert len(ingress.requests) == 3


async def test_retry_once_means_no_retry(call: Both, ingress: Ingress) -> None:
    ingress.answer(refused_connection)
    with pytest.raises(TransportError):
        await call("get_counter_value", "c1", retry=Retry(attempts=1))
    assert len(ingress.requests) == 1


@pytest.mark.parametrize(
    ("method", "args"), [("incr", ("c1",)), ("incr_many", ({"a": 1},))], ids=["incr", "incr_many"]
)
@pytest.mark.parametrize(
    "failure",
    [
        errors(503, {"kafka": ["not acknowledged in time"]}, **{"Retry-After": "1"}),
        httpx.ReadError("connection reset"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.WriteError("broken pipe"),
    ],
    ids=["503", "ReadError", "RemoteProtocolError", "WriteError"],
)
async def test_a_write_that_may_have_been_sent_is_sent_again_under_its_key(
    call: Both, ingress: Ingress, method: str, args: tuple[Any, ...], failure: Any
) -> None:
    """The ingress counts a write sent again under its Idempotency-Key once: retrying it is as
    safe as retrying a read."""
    ingress.answer(failure, data(202, {"key": "c1", "value": 1, "token": TOKEN}))
    written = await call(method, *args)
    assert len(ingress.requests) == 2
    keys = {request.headers["Idempotency-Key"] for request in ingress.requests}
    assert keys == {written.idempotency_key}


@pytest.mark.parametrize(
    ("method", "args"), [("incr", ("c1",)), ("incr_many", ({"a": 1},))], ids=["incr", "incr_many"]
)
async def test_a_write_that_timed_out_raises_and_can_be_sent_again_under_its_key(
    call: Both, ingress: Ingress, method: str, args: tuple[Any, ...]
) -> None:
    """A timeout is not retried (the ingress may be overloaded): the caller may send the write
    again later with the key it chose."""
    ingress.answer(httpx.ReadTimeout("timed out"), data(202, {"key": "c1", "value": 1}))
    with pytest.raises(ClientError):
        await call(method, *args, idempotency_key="order-42")
    await call(method, *args, idempotency_key="order-42")
    assert [r.headers["Idempotency-Key"] for r in ingress.requests] == ["order-42"] * 2


@pytest.mark.parametrize("bad", ["", "has space", "x" * 256, "\u00e9"])
async def test_an_idempotency_key_the_ingress_would_refuse_is_refused_before_sending(
    call: Both, ingress: Ingress, bad: str
) -> None:
    with pytest.raises(InvalidInput, match="idempotency_key"):
        await call("incr", "c1", idempotency_key=bad)
    assert ingress.requests == []


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("busy")],
    ids=lambda exc: type(exc).__name__,
)
async def test_a_write_whose_connection_was_never_made_is_sent_again(
    call: Both, ingress: Ingress, failure: Exception
) -> None:
    ingress.answer(failure, data(202, {"key": "c1", "value": 1, "token": TOKEN}))
    assert (await call("incr", "c1")).token == TOKEN
    assert len(ingress.requests) == 2


def test_a_url_httpx_cannot_send_to_is_not_retried() -> None:
    with Client("ingress.test:3333") as client, pytest.raises(TransportError, match="cannot send"):
        client.get_counter_value("c1")


# -- the client itself ---------------------------------------------------------------------------


def test_the_base_url_may_carry_a_path_and_a_trailing_slash(ingress: Ingress) -> None:
    ingress.answer(data(200, counter_body()))
    http = httpx.Client(transport=httpx.MockTransport(ingress))
    with Client(f"{BASE}/distcount/", http=http) as client:
        client.get_counter_value("c1")
    assert str(ingress.request.url) == f"{BASE}/distcount/counters/c1"


def test_an_http_client_of_the_callers_is_left_open() -> None:
    http = httpx.Client(transport=httpx.MockTransport(Ingress().answer(data(200, {}))))
    with Client(http=http):
        pass
    assert not http.is_closed
    http.close()


def test_its_own_http_client_is_closed() -> None:
    with Client() as client:
        assert client.base_url == "http://127.0.0.1:3333"
    assert client._http.is_closed


async def test_its_own_async_http_client_is_closed() -> None:
    async with AsyncClient(timeout_s=1.5) as client:
        assert client.timeout_s == 1.5
    assert client._http.is_closed


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503, content=b"<html>bad gateway</html>"),
        httpx.Response(503, json=["not", "an", "object"]),
        httpx.Response(503, json={"errors": "not a mapping"}),
    ],
)
async def test_an_error_answer_of_no_known_shape_still_says_its_status(
    call: Both, ingress: Ingress, answer: httpx.Response
) -> None:
    ingress.answer(answer)
    with pytest.raises(Unavailable, match=r"unavailable \(503\): no reason given$"):
        await call("get_counter_value", "c1")


async def test_messages_that_are_not_lists_are_kept(call: Both, ingress: Ingress) -> None:
    ingress.answer(httpx.Response(422, json={"errors": {"key": "too long"}}))
    with pytest.raises(InvalidInput) as caught:
        await call("get_counter_value", "c1")
    assert caught.value.errors == {"key": ["too long"]}
