"""`distcount aggregator` with DISTCOUNT_LOG_FORMAT=json, as a process: everything it writes is
one JSON object per line, from its start to its end, a traceback and the error that stops it
included."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import orjson
import pytest

from distcount_codec import Increment, encode_record
from distcount_store import connect
from tests.integration.pipeline import Pipeline, wait_for

pytestmark = pytest.mark.integration


def _records(pipeline: Pipeline, process: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """The aggregator's log, each line parsed; fails on any line that is not a JSON object."""
    records = []
    for number, line in enumerate(pipeline.log("aggregator").splitlines(), 1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"line {number} of the aggregator's log is not JSON: {line!r}")
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= set(record), line
        assert (record["service"], record["pid"]) == ("aggregator", process.pid), line
        records.append(record)
    assert records, "the aggregator logged nothing"
    return records


async def test_a_counting_aggregator_writes_only_json_lines(pipeline: Pipeline) -> None:
    aggregator = pipeline.start("aggregator", "aggregator", log_format="json")
    await pipeline.produce([encode_record(Increment("c1", 5)), (b"bad", b"not json")])
    await pipeline.wait_caught_up()
    await asyncio.to_thread(pipeline.stop_all)  # SIGTERM: the shutdown is logged too

    assert aggregator.returncode == 0
    assert await pipeline.totals() == {"c1": 5}
    records = _records(pipeline, aggregator)
    assert any(str(record["logger"]).startswith("distcount") for record in records)


async def test_an_aggregator_that_stops_writes_its_traceback_and_error_as_json(
    pipeline: Pipeline,
) -> None:
    conn = await connect(pipeline.database_url)
    try:
        # the stored positions are gone: the aggregator logs the exception and stops
        await conn.execute("ALTER TABLE consumer_offsets RENAME TO consumer_offsets_gone")
    finally:
        await conn.close()
    await pipeline.produce([encode_record(Increment("c1", 1))])
    aggregator = pipeline.start("aggregator", "aggregator", log_format="json")

    async def exited() -> bool:
        return aggregator.poll() is not None

    await wait_for(exited, 60, "the aggregator to stop")

    assert aggregator.returncode == 1
    records = _records(pipeline, aggregator)
    assert any(str(record.get("exception", "")).startswith("Traceback") for record in records)
    last = records[-1]
    assert (last["level"], last["logger"]) == ("error", "distcount")
    assert str(last["message"]).startswith("aggregator stopped: ")
