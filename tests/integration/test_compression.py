"""Compressed record batches, as direct producers send them: every codec Kafka defines, from
kcat (librdkafka), the Kafka Java client and the project's own aiokafka producer, is counted."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from distcount_codec import Increment, encode_record
from distcount_config import load, load_dev
from distcount_devstack import Stack
from distcount_devstack._java import checked_java
from distcount_devstack._maven import KafkaJars
from distcount_ingress._producers import producer_options
from distcount_store import connect
from tests.integration.pipeline import Pipeline, wait_for

pytestmark = pytest.mark.integration

CODECS = ("gzip", "snappy", "lz4", "zstd")
JAVA_PRODUCER = Path(__file__).parent / "java" / "CompressedProducer.java"
RECORDS_PER_RUN = 300  # enough that each lands in a few multi-record batches
BATCHED = ("-X", "linger.ms=100", "-X", "batch.num.messages=10000")  # kcat: many to a batch


def kcat() -> str:
    found = shutil.which("kcat") or shutil.which("kafkacat")
    # never skipped: without it nothing proves that another client's batches are read
    assert found, "these tests need kcat (Debian: apt-get install kcat)"
    return found


def kcat_producer(bootstrap: str, topic: str, *options: str) -> list[str]:
    """kcat producing "key|value" lines to `topic`."""
    return [kcat(), "-P", "-b", bootstrap, "-t", topic, "-K", "|", *options]


def lines(producer: str, codec: str) -> list[tuple[str, int]]:
    """`RECORDS_PER_RUN` (key, value) increments over five keys named after their producer."""
    return [(f"{producer}-{codec}-{i % 5}", i % 3 + 1) for i in range(RECORDS_PER_RUN)]


def as_input(increments: list[tuple[str, int]]) -> bytes:
    return b"".join(
        key.encode() + b"|" + encode_record(Increment(key, value))[1] + b"\n"
        for key, value in increments
    )


async def run(argv: list[str], stdin: bytes) -> None:
    result = await asyncio.to_thread(
        subprocess.run, argv, input=stdin, capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")


async def produce_with_kcat(bootstrap: str, topic: str, codec: str, data: bytes) -> None:
    await run(
        kcat_producer(bootstrap, topic, "-z", codec, *BATCHED),
        data,
    )


async def produce_with_java(bootstrap: str, topic: str, codec: str, data: bytes) -> None:
    dev = load_dev({})
    java = checked_java(dev.java_home)
    libs = KafkaJars(dev.cache_dir, dev.kafka_version, dev.maven_repo_url).ensure(java, print)
    argv = [str(java), "-cp", f"{libs}/*", str(JAVA_PRODUCER), bootstrap, topic, codec]
    await run(argv, data)


def expected(increments: list[tuple[str, int]]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for key, value in increments:
        sums[key] = sums.get(key, 0) + value
    return sums


async def test_every_codec_from_three_clients_is_counted(pipeline: Pipeline) -> None:
    want: dict[str, int] = {}
    for codec in CODECS:
        for producer in ("kcat", "java", "aiokafka"):
            increments = lines(producer, codec)
            want.update(expected(increments))
            if producer == "kcat":
                await produce_with_kcat(
                    pipeline.bootstrap, pipeline.topic, codec, as_input(increments)
                )
            elif producer == "java":
                await produce_with_java(
                    pipeline.bootstrap, pipeline.topic, codec, as_input(increments)
                )
            else:
                # the ingress's producer settings, with its codec setting
                options = producer_options(load({"DISTCOUNT_PRODUCE_COMPRESSION": codec}))
                assert options["compression_type"] == codec
                for given in ("bootstrap_servers", "acks", "enable_idempotence"):
                    del options[given]  # the pipeline's producer sets these itself
                options.update(linger_ms=100)
                await pipeline.produce(
                    (encode_record(Increment(k, v)) for k, v in increments), **options
                )

    pipeline.start("aggregator", "aggregator")
    await pipeline.wait_caught_up(timeout_s=120)

    assert await pipeline.totals() == want
    assert await pipeline.read_all(pipeline.dlq_topic) == []


def without_codecs(tmp_path: Path) -> str:
    """A PYTHONPATH entry that hides cramjam, the library of aiokafka's snappy, lz4 and zstd
    codecs, from the process: what an install without the codecs does."""
    folder = tmp_path / "without-codecs"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text('import sys\nsys.modules["cramjam"] = None\n')
    return str(folder)


def start_without_codecs(
    pipeline: Pipeline, tmp_path: Path, name: str, **overrides: str
) -> subprocess.Popen[bytes]:
    env = pipeline.env(metrics="console", metrics_interval_ms="500", **overrides)
    env["PYTHONPATH"] = without_codecs(tmp_path)
    log = (pipeline.logs / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "distcount_cli", "aggregator"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    pipeline.processes.append(proc)
    return proc


async def fill_partition_zero_around_an_lz4_batch(pipeline: Pipeline) -> None:
    """Partition 0: 50 plain records of "before", one lz4 batch of 100 "lz", 50 plain "after";
    partitions 1 and 2: 20 plain records of "other-1" and "other-2"."""
    for key, count, partition, codec in (
        ("before", 50, 0, "none"),
        ("lz", 100, 0, "lz4"),
        ("after", 50, 0, "none"),
        ("other-1", 20, 1, "none"),
        ("other-2", 20, 2, "none"),
    ):
        data = as_input([(key, 1)] * count)
        await run(
            kcat_producer(
                pipeline.bootstrap, pipeline.topic, "-p", str(partition), "-z", codec, *BATCHED
            ),
            data,
        )


async def stalls(pipeline: Pipeline) -> list[tuple[int, int, str]]:
    conn = await connect(pipeline.database_url)
    try:
        rows = await conn.fetch(
            "SELECT partition, stalled_offset, reason FROM partition_stalls WHERE topic = $1",
            pipeline.topic,
        )
    finally:
        await conn.close()
    return [(row["partition"], row["stalled_offset"], row["reason"]) for row in rows]


async def test_a_batch_that_cannot_be_decoded_stops_its_partition_only(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    ingress = await pipeline.start_ingress()
    await fill_partition_zero_around_an_lz4_batch(pipeline)
    blind = start_without_codecs(pipeline, tmp_path, "aggregator-without-codecs")

    await wait_for(lambda: _has_stall(pipeline), 60, "the stall to be stored")
    ((partition, offset, reason),) = await stalls(pipeline)
    assert (partition, offset) == (0, 50)  # exactly where the lz4 batch starts
    assert "lz4" in reason
    # what precedes the batch, and the other partitions, are counted all the same
    await wait_for(
        lambda: _totals_are(pipeline, {"before": 50, "other-1": 20, "other-2": 20}),
        60,
        "the records around the stall to be counted",
    )
    assert (await pipeline.stored_offsets())[0] == 50
    await asyncio.sleep(2)  # a crash loop would have ended the process by now
    assert blind.poll() is None, pipeline.log("aggregator-without-codecs")
    log = pipeline.log("aggregator-without-codecs")
    assert f"partition 0 of {pipeline.topic} at offset 50" in log
    assert "UnsupportedCodecError" in log
    assert re.search(r"distcount\.aggregator\.stalled_partitions +1 partitions", log)
    # every place an operator looks says that counting stopped, and where
    where = f"partition 0 of {pipeline.topic} stopped at offset 50"
    async with httpx.AsyncClient(base_url=ingress) as client:
        ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["counting"].startswith(f"stopped: {where}")
    listed = await pipeline.cli("stalls")
    assert listed.returncode == 3
    assert where in listed.stdout
    environ = pipeline.env()
    rows = await Stack(load(environ), load_dev(environ)).status()
    (aggregator,) = (row for row in rows if row.name == "aggregator")
    assert not aggregator.healthy
    assert any(where in problem for problem in aggregator.problems)

    # the operator installs the codecs and restarts: the batch is counted, the stall ends
    blind.terminate()
    blind.wait(timeout=30)
    pipeline.start("aggregator", "aggregator")
    await pipeline.wait_caught_up()
    assert await pipeline.totals() == {
        "before": 50,
        "lz": 100,
        "after": 50,
        "other-1": 20,
        "other-2": 20,
    }
    assert await stalls(pipeline) == []
    async with httpx.AsyncClient(base_url=ingress) as client:
        assert (await client.get("/health/ready")).status_code == 200
    assert (await pipeline.cli("stalls")).returncode == 0


async def test_an_operator_skips_a_batch_that_never_decodes_and_it_is_recorded(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    await fill_partition_zero_around_an_lz4_batch(pipeline)
    start_without_codecs(pipeline, tmp_path, "aggregator", stall_retry_ms="300")
    await wait_for(lambda: _has_stall(pipeline), 60, "the stall to be stored")

    # refused where there is nothing to skip, or not past the stall
    other = await pipeline.cli("skip", "1", "--to", "5", "--reason", "test")
    assert other.returncode == 1
    assert "is not stalled" in other.stderr
    await wait_for(lambda: _stored_is(pipeline, 0, 50), 60, "the flush up to the stall")
    short = await pipeline.cli("skip", "0", "--to", "50", "--reason", "test")
    assert short.returncode == 1
    assert "must be past the stalled offset 50" in short.stderr

    skipped = await pipeline.cli("skip", "0", "--to", "150", "--reason", "corrupt segment")
    assert skipped.returncode == 0, skipped.stderr
    assert "100 offsets will never be counted" in skipped.stdout
    await pipeline.wait_caught_up()
    # the batch is skipped, on purpose and on record; what follows it is counted
    assert await pipeline.totals() == {"before": 50, "after": 50, "other-1": 20, "other-2": 20}
    assert await stalls(pipeline) == []
    conn = await connect(pipeline.database_url)
    try:
        ranges = await conn.fetch(
            "SELECT partition, from_offset, to_offset, reason FROM skipped_ranges"
        )
    finally:
        await conn.close()
    assert [tuple(row) for row in ranges] == [(0, 50, 150, "corrupt segment")]


async def _stored_is(pipeline: Pipeline, partition: int, offset: int) -> bool:
    return (await pipeline.stored_offsets()).get(partition) == offset


async def _has_stall(pipeline: Pipeline) -> bool:
    return bool(await stalls(pipeline))


async def _totals_are(pipeline: Pipeline, want: dict[str, int]) -> bool:
    return await pipeline.totals() == want
