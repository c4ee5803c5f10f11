"""Overload and deadlines: every 202 is in Kafka, past either bound the answer is 503."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Services
from tests.integration.ingress.support import (
    consume_all,
    end_offsets,
    ingress,
    settings_for,
)

pytestmark = pytest.mark.integration


# --- overload ---------------------------------------------------------------------------------


async def test_past_max_inflight_sends_the_answer_is_503_and_only_202s_are_in_kafka(
    services: Services, topic: str, database: str
) -> None:
    settings = settings_for(services, topic, database, max_inflight_sends="1")
    async with ingress(settings) as app:
        assert app.started
        responses = await asyncio.gather(
            *(app.client.post("/increment", json={"key": f"k{i}", "value": 1}) for i in range(60))
        )
        assert app.publisher.inflight_sends == 0
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {202, 503}
    rejected = [r for r in responses if r.status_code == 503]
    assert rejected
    assert all(r.headers["retry-after"] == "1" for r in rejected)
    accepted = {r.json()["data"]["key"] for r in responses if r.status_code == 202}
    assert accepted

    records = await consume_all(services.kafka_bootstrap, topic, "read_uncommitted")
    assert sorted(r.key.decode() for r in records) == sorted(accepted)
    ends = await end_offsets(services.kafka_bootstrap, topic)
    assert sum(ends.values()) == len(accepted)


async def test_past_the_deadline_the_answer_is_503_and_every_202_is_in_kafka(
    services: Services, topic: str, database: str
) -> None:
    # A millisecond: on an idle loopback the broker may answer one request that fast, but not
    # a crowd, whose records wait for the batch ahead of theirs to be acknowledged first.
    settings = settings_for(services, topic, database, produce_timeout_ms="1")
    async with ingress(settings) as app:
        assert app.started
        # first the producer learns where the topic's partitions are (a fetch of its own, which
        # a millisecond may not hold either), then the crowd
        responses = []
        for i in range(100):
            response = await app.client.post("/increment", json={"key": f"w{i}", "value": 1})
            responses.append(response)
            if "no metadata" not in response.text:
                break
            await asyncio.sleep(0.05)
        responses += await asyncio.gather(
            *(app.client.post("/increment", json={"key": f"k{i}", "value": 1}) for i in range(200))
        )
        await asyncio.sleep(1)  # what was handed to the producer in time has landed by now
    rejected = [r for r in responses if r.status_code == 503]
    assert rejected
    assert all(r.headers["retry-after"] == "1" for r in rejected)
    reasons = [r.json()["errors"]["kafka"][0] for r in rejected]
    assert any("did not acknowledge the record within 1 ms" in reason for reason in reasons), set(
        reasons
    )
    accepted = {r.json()["data"]["key"] for r in responses if r.status_code == 202}
    assert len(accepted) + len(rejected) == len(responses)
    # never a 202 for a record that is not in Kafka (a 503'd one may be there too: see 503)
    records = await consume_all(services.kafka_bootstrap, topic, "read_uncommitted")
    assert accepted <= {r.key.decode() for r in records}
