"""A private pipeline for one test: its own topic, dead-letter topic, database and group, and
the real `distcount aggregator` (and `distcount ingress`) processes, started and killed at will."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from distcount_store import connect


@dataclass
class Pipeline:
    bootstrap: str
    database_url: str
    topic: str
    group: str
    logs: Path
    partitions: int = 3
    ingress_url: str | None = None  # the last ingress started: what the CLI's reads go through
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISTCOUNT_")}
        env.update(
            DISTCOUNT_KAFKA_BOOTSTRAP=self.bootstrap,
            DISTCOUNT_DATABASE_URL=self.database_url,
            DISTCOUNT_TOPIC=self.topic,
            DISTCOUNT_GROUP_ID=self.group,
            DISTCOUNT_FLUSH_INTERVAL_MS="300",
            DISTCOUNT_LOG_LEVEL="debug",
        )
        if self.ingress_url is not None:
            env["DISTCOUNT_INGRESS_URL"] = self.ingress_url
        env.update({f"DISTCOUNT_{k.upper()}": v for k, v in overrides.items()})
        return env

    def start(self, service: str, name: str, **overrides: str) -> subprocess.Popen[bytes]:
        """`distcount <service>` in a process of its own, its output in logs/<name>.log."""
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "distcount_cli", service],
            env=self.env(**overrides),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes.append(proc)
        return proc

    async def start_ingress(self, name: str = "ingress", **overrides: str) -> str:
        """`distcount ingress` on a free port; its base URL once /health/ready answers 200."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.start("ingress", name, http_port=str(port), **overrides)
        url = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            try:
                async with httpx.AsyncClient(base_url=url, timeout=2) as client:
                    return (await client.get("/health/ready")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(ready, 60, f"the ingress on port {port} to be ready")
        self.ingress_url = url
        return url

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`distcount <args>` with this pipeline's settings, run to its end."""
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "distcount_cli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    async def create_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(t, self.partitions, 1) for t in (self.topic, self.dlq_topic)]
            )
        finally:
            await admin.close()

    async def produce(
        self, records: Iterable[tuple[bytes | None, bytes | None]], **options: Any
    ) -> int:
        """Send (key, value) records with a plain producer; returns how many."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, **options
        )
        await producer.start()
        count = 0
        try:
            futures = []
            for key, value in records:
                futures.append(await producer.send(self.topic, value=value, key=key))
                count += 1
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        return count

    async def totals(self) -> dict[str, int]:
        conn = await connect(self.database_url)
        try:
            rows = await conn.fetch("SELECT key, value FROM counter_totals")
        finally:
            await conn.close()
        return {row["key"]: int(row["value"]) for row in rows}

    async def event_sums(self) -> dict[str, int]:
        conn = await connect(self.database_url)
        try:
            rows = await conn.fetch("SELECT key, sum(delta) AS s FROM counter_events GROUP BY key")
        finally:
            await conn.close()
        return {row["key"]: int(row["s"]) for row in rows}

    async def stored_offsets(self) -> dict[int, int]:
        conn = await connect(self.database_url)
        try:
            rows = await conn.fetch(
                "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1",
                self.group,
            )
        finally:
            await conn.close()
        return {row["partition"]: row["next_offset"] for row in rows}

    async def end_offsets(self, topic: str | None = None) -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition(topic or self.topic, p) for p in range(self.partitions)]
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        return {tp.partition: offset for tp, offset in ends.items()}

    async def read_all(self, topic: str) -> list[Any]:
        """Every record of `topic` (read committed), from the beginning."""
        ends = await self.end_offsets(topic)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        records: list[Any] = []
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                positions = {p: await consumer.position(TopicPartition(topic, p)) for p in ends}
                if all(positions[p] >= ends[p] for p in ends):
                    break
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
        finally:
            await consumer.stop()
        return records

    async def wait_caught_up(self, timeout_s: float = 60) -> None:
        """Until the stored offsets reach the end of every partition."""

        async def caught_up() -> bool:
            stored = await self.stored_offsets()
            ends = await self.end_offsets()
            return all(stored.get(p, 0) >= end for p, end in ends.items() if end > 0)

        try:
            await wait_for(caught_up, timeout_s, "the aggregator to flush up to the end offsets")
        except AssertionError as exc:
            stored, ends = await self.stored_offsets(), await self.end_offsets()
            raise AssertionError(f"{exc}: stored offsets {stored}, end offsets {ends}") from None


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


def counts(records: Iterable[tuple[str, int]]) -> Mapping[str, int]:
    sums: dict[str, int] = {}
    for key, value in records:
        sums[key] = sums.get(key, 0) + value
    return {k: v for k, v in sums.items() if v != 0}
