"""A topic and a migrated database of each test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from distcount_config import project_root
from distcount_store import find_migrations, migrate
from tests.conftest import Services
from tests.integration.ingress.support import PARTITIONS


@pytest.fixture
async def topic(services: Services, topic_name: str) -> AsyncIterator[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic_name, PARTITIONS, 1)])
        yield topic_name
        await admin.delete_topics([topic_name])
    finally:
        await admin.close()


@pytest.fixture
async def database(fresh_database: str) -> str:
    root = project_root()
    assert root is not None
    await migrate(fresh_database, find_migrations(root / "migrations"))
    return fresh_database
