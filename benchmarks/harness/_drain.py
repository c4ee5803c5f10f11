"""A StatsD receiver, run as a child process by `_statsd.StatsdDrain`: it binds a UDP port on
127.0.0.1, prints `PORT <n>`, keeps every datagram as it arrives, and tallies them only when a
`report` line comes on stdin (one JSON line each), so that it takes as little CPU as it can from
the machine it shares with the measurement. Standard library only: it starts fast.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
from typing import Any


def _empty() -> dict[str, Any]:
    return {
        "datagrams": 0,
        "bytes": 0,
        "lines": 0,
        "counters": {},
        "timer_lines": {},
        "gauge_lines": {},
    }


def _tally(datagrams: list[bytes]) -> dict[str, Any]:
    data = _empty()
    for datagram in datagrams:
        data["datagrams"] += 1
        data["bytes"] += len(datagram)
        for line in datagram.decode().split("\n"):
            if not line:
                continue
            data["lines"] += 1
            head, _, rest = line.partition("|")
            name, _, value = head.rpartition(":")
            fields = rest.split("|")
            tags = next((f[1:] for f in fields[1:] if f.startswith("#")), "")
            if fields[0] == "c":
                key = f"{name}|#{tags}" if tags else name
                data["counters"][key] = data["counters"].get(key, 0) + int(value)
            elif fields[0] == "ms":
                data["timer_lines"][name] = data["timer_lines"].get(name, 0) + 1
            elif fields[0] == "g":
                data["gauge_lines"][name] = data["gauge_lines"].get(name, 0) + 1
    return data


def _drain(sock: socket.socket, into: list[bytes]) -> None:
    while True:
        try:
            into.append(sock.recv(65536))
        except BlockingIOError:
            return


def serve() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    kept: list[bytes] = []
    while True:
        ready, _, _ = select.select([sock, sys.stdin], [], [])
        if sock in ready:
            _drain(sock, kept)
        if sys.stdin in ready:
            if not sys.stdin.readline():
                return
            _drain(sock, kept)  # whatever was sent before the question is in the buffer by now
            print(json.dumps(_tally(kept)), flush=True)
            kept = []


if __name__ == "__main__":
    serve()
