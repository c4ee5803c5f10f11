"""Clients that send too much, too slowly, or too many connections, against a real ingress.

Each test runs `distcount ingress` as a process of its own (its event loop is not the test's),
and prints what it measured; `pytest -s` shows the figures.
"""

from __future__ import annotations

import asyncio
import http.client
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.integration.pipeline import Pipeline

pytestmark = pytest.mark.integration

MAX_BODY_BYTES = 65_536
BIG = 20 * 1024 * 1024  # 320 times the limit
TOO_LARGE = {"errors": {"body": [f"must be at most {MAX_BODY_BYTES} bytes"]}}


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def _pieces(size: int, piece: int = 65_536) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        chunk = min(piece, size - sent)
        sent += chunk
        yield b"x" * chunk


# --- 413 that the client reads ----------------------------------------------------------------


def _curl(url: str, body: Path, *headers: str) -> tuple[int, bytes]:
    args = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--data-binary", f"@{body}"]
    for header in ("Content-Type: application/json", *headers):
        args += ["-H", header]
    done = subprocess.run([*args, f"{url}/increment"], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    answer, _, status = done.stdout.rpartition(b"\n")
    return int(status), answer


def _http_client(url: str, chunked: bool, expect: bool = False) -> tuple[int, bytes]:
    host, port = _address(url)
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if expect:
        headers["Expect"] = "100-continue"  # http.client sends the body without waiting
    try:
        if chunked:
            conn.request("POST", "/increment", _pieces(BIG), headers, encode_chunked=True)
        else:
            conn.request("POST", "/increment", b"x" * BIG, headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _httpx(url: str, chunked: bool) -> tuple[int, bytes]:
    content = _pieces(BIG) if chunked else b"x" * BIG
    response = httpx.post(
        f"{url}/increment",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    return response.status_code, response.content


async def test_an_oversized_body_gets_a_413_that_every_client_reads(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Whole bodies sent before the answer is read, with and without Content-Length, with and
    without `Expect: 100-continue`: each client reads the 413, none sees a reset."""
    url = await pipeline.start_ingress(max_body_bytes=str(MAX_BODY_BYTES))
    big = tmp_path / "big.json"
    big.write_bytes(b"x" * BIG)
    clients = {
        "curl": lambda: _curl(url, big, "Expect:"),
        "curl, Expect: 100-continue": lambda: _curl(url, big, "Expect: 100-continue"),
        "curl, chunked": lambda: _curl(url, big, "Transfer-Encoding: chunked", "Expect:"),
        "curl, chunked, Expect": lambda: _curl(
            url, big, "Transfer-Encoding: chunked", "Expect: 100-continue"
        ),
        "http.client": lambda: _http_client(url, chunked=False),
        "http.client, Expect": lambda: _http_client(url, chunked=False, expect=True),
        "http.client, chunked": lambda: _http_client(url, chunked=True),
        "httpx": lambda: _httpx(url, chunked=False),
        "httpx, chunked": lambda: _httpx(url, chunked=True),
    }
    for name, send in clients.items():
        for _ in range(3):  # a reset is a race: give it more than one chance to show
            started = time.perf_counter()
            status, body = await asyncio.to_thread(send)
            assert (status, orjson.loads(body)) == (413, TOO_LARGE), name
        print(f"{name}: 413 in {time.perf_counter() - started:.2f} s")
    # and the ingress still answers
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.post("/increment", json={"key": "after", "value": 1})
        assert answer.status_code == 202


# --- slow, idle and surplus clients -----------------------------------------------------------

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
KEEP_ALIVE_S = 5.0  # uvicorn's timeout_keep_alive, as the ingress sets it
SLACK_S = 1.5


async def _closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    try:
        while chunk := await reader.read(65_536):
            received += chunk
    except ConnectionError:
        pass
    return received


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    for _ in range(50):  # a backlog full for a moment, as thousands connect at once
        try:
            return await asyncio.open_connection(host, port)
        except ConnectionError:
            await asyncio.sleep(0.1)
    raise AssertionError("could not connect")


async def _dribble(writer: asyncio.StreamWriter, data: bytes) -> None:
    """`data` one byte a second, until the server closes the connection."""
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(1)
    except ConnectionError:
        pass


async def header_dribbler(host: str, port: int) -> tuple[float, bytes]:
    started = time.monotonic()  # before the connect: the server's clock starts at its accept
    reader, writer = await _connect(host, port)
    sending = asyncio.create_task(_dribble(writer, b"POST /increment HTTP/1.1\r\nHost: x\r\n" * 9))
    received = await _closed(reader)
    sending.cancel()
    writer.close()
    return time.monotonic() - started, received


async def body_dribbler(host: str, port: int) -> tuple[float, bytes]:
    reader, writer = await _connect(host, port)
    writer.write(
        b"POST /increment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    await writer.drain()
    started = time.monotonic()
    sending = asyncio.create_task(_dribble(writer, b'{"key": "slow", "value": 1}' + b" " * 73))
    received = await _closed(reader)
    sending.cancel()
    writer.close()
    return time.monotonic() - started, received


async def idler(host: str, port: int) -> tuple[float, bytes]:
    started = time.monotonic()
    reader, writer = await _connect(host, port)
    received = await _closed(reader)
    writer.close()
    return time.monotonic() - started, received


async def kept_alive(host: str, port: int) -> tuple[float, bytes]:
    """One request on a keep-alive connection, then silence."""
    reader, writer = await _connect(host, port)
    writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    answer = await reader.readuntil(b'"ok"}')
    started = time.monotonic()
    received = await _closed(reader)
    writer.close()
    return time.monotonic() - started, answer + received


def _normal_client(url: str, until: float) -> list[float]:
    """A well-behaved client: an increment every 20 ms on one keep-alive connection; its
    latencies."""
    latencies = []
    with httpx.Client(base_url=url, timeout=10) as client:
        i = 0
        while time.monotonic() < until:
            started = time.perf_counter()
            answer = client.post("/increment", json={"key": f"normal-{i}", "value": 1})
            latencies.append(time.perf_counter() - started)
            assert answer.status_code == 202, answer.text
            i += 1
            time.sleep(0.02)
    return latencies


def _figures(latencies: list[float]) -> str:
    ms = sorted(latency * 1000 for latency in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{len(ms)} requests, p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, "
        f"max {ms[-1]:.1f} ms"
    )


def _closing_times(name: str, results: list[tuple[float, bytes]]) -> list[float]:
    times = sorted(seconds for seconds, _ in results)
    print(
        f"{name}: {len(times)} disconnected after {times[0]:.2f} to {times[-1]:.2f} s "
        f"(median {statistics.median(times):.2f} s)"
    )
    return times


async def test_slow_and_idle_clients_are_disconnected_and_a_normal_one_is_served(
    pipeline: Pipeline,
) -> None:
    url = await pipeline.start_ingress(
        http_header_timeout_s=str(HEADER_TIMEOUT_S),
        http_body_timeout_s=str(BODY_TIMEOUT_S),
        http_max_connections="5000",
        log_level="info",
    )
    host, port = _address(url)
    baseline = await asyncio.to_thread(_normal_client, url, time.monotonic() + 2)
    print(f"normal client alone: {_figures(baseline)}")

    attack: list[asyncio.Task[tuple[float, bytes]]] = []
    kinds = [(header_dribbler, 500), (body_dribbler, 500), (idler, 1500), (kept_alive, 1000)]
    for kind, count in kinds:
        attack += [asyncio.create_task(kind(host, port)) for _ in range(count)]
        await asyncio.sleep(0.3)
    normal = asyncio.create_task(
        asyncio.to_thread(_normal_client, url, time.monotonic() + KEEP_ALIVE_S + 2)
    )
    results = await asyncio.wait_for(asyncio.gather(*attack), 60)
    print(f"normal client under attack: {_figures(await normal)}")

    ends = iter(results)
    by_kind = {kind.__name__: [next(ends) for _ in range(count)] for kind, count in kinds}
    header = _closing_times("header dribblers", by_kind["header_dribbler"])
    assert header[0] > HEADER_TIMEOUT_S - 0.1
    assert header[-1] < HEADER_TIMEOUT_S + SLACK_S
    assert all(received == b"" for _, received in by_kind["header_dribbler"])
    body = _closing_times("body dribblers", by_kind["body_dribbler"])
    # the 408, then a second for the client to read it
    assert statistics.median(body) > BODY_TIMEOUT_S - 0.5
    assert body[-1] < BODY_TIMEOUT_S + 1 + SLACK_S
    for _, received in by_kind["body_dribbler"]:
        assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), received
        assert received.endswith(
            b'{"errors":{"body":["not received in time: the connection is closed"]}}'
        )
    idle = _closing_times("idle connections", by_kind["idler"])
    assert idle[0] > HEADER_TIMEOUT_S - 0.1
    assert idle[-1] < HEADER_TIMEOUT_S + SLACK_S
    kept = _closing_times("idle keep-alive connections", by_kind["kept_alive"])
    # the next request's header deadline runs from the end of the previous one, as the
    # keep-alive timeout does: the shorter closes the connection
    assert kept[-1] < min(KEEP_ALIVE_S, HEADER_TIMEOUT_S) + SLACK_S


async def test_past_the_cap_a_connection_gets_503_and_under_it_everyone_is_served(
    pipeline: Pipeline,
) -> None:
    cap = 300
    url = await pipeline.start_ingress(http_max_connections=str(cap))
    host, port = _address(url)

    # under the cap: as many clients as it allows less a few, each on its own connection, each
    # an increment and then reads (what the HTTP layer costs, without Kafka's acknowledgements)
    clients = cap - 10
    per_client = 20

    async def served(i: int) -> list[float]:
        latencies = []
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            answer = await client.post("/increment", json={"key": f"c{i}", "value": 1})
            assert answer.status_code == 202, answer.text
            for _ in range(per_client):
                started = time.perf_counter()
                answer = await client.get("/health/live")
                latencies.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
        return latencies

    started = time.perf_counter()
    latencies = [
        x for each in await asyncio.gather(*(served(i) for i in range(clients))) for x in each
    ]
    elapsed = time.perf_counter() - started
    print(
        f"{clients} clients under a cap of {cap}: every request answered, "
        f"{len(latencies) / elapsed:.0f} requests/s, {_figures(latencies)}"
    )

    # at the cap: held connections, then one more, which gets the 503 and is closed
    held = [await _connect(host, port) for _ in range(cap)]
    try:
        await asyncio.sleep(0.2)
        reader, writer = await _connect(host, port)
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        refused = await asyncio.wait_for(_closed(reader), 5)
        writer.close()
        head, _, body = refused.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), refused
        assert orjson.loads(body) == {
            "errors": {"connections": ["too many open connections: retry later"]}
        }
    finally:
        for _, held_writer in held:
            held_writer.close()
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/health/live")).status_code == 200


async def test_a_request_handled_longer_than_the_header_deadline_is_answered(
    pipeline: Pipeline,
) -> None:
    """The header deadline bounds a client's sending, not the ingress's answering: a read that
    waits for a write (`after=`) past it gets its answer, and the next request on the same
    kept-alive connection gets a deadline of its own."""
    url = await pipeline.start_ingress(
        http_header_timeout_s=str(HEADER_TIMEOUT_S), read_after_timeout_ms="3500"
    )
    # no aggregator: the write is never flushed, and the read waits its whole bound
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        written = await client.post("/increment", json={"key": "slow", "value": 1})
        token = written.json()["data"]["token"]
        for _ in range(2):  # the second on the connection the first kept alive
            started = time.monotonic()
            answer = await client.get("/counters/slow", params={"after": token})
            waited = time.monotonic() - started
            assert answer.status_code == 202, answer.text  # answered, incomplete
            assert waited > HEADER_TIMEOUT_S + 1
