"""Access control on a real ingress (over the session's Kafka and PostgreSQL): tokens of each
scope, what the commands send (DISTCOUNT_TOKEN), and secrets that show in no log, no message and
no line of `dev status`."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from distcount_config import token_hash
from distcount_store import connect, create_database, find_migrations, migrate
from tests.conftest import ROOT, Services
from tests.integration.pipeline import Pipeline, wait_for

pytestmark = pytest.mark.integration

WRITER, READER = secrets.token_urlsafe(32), secrets.token_urlsafe(32)


@pytest.fixture
async def pipeline(services: Services, tmp_path: Path) -> AsyncIterator[Pipeline]:
    assert ROOT is not None
    name = f"test_{uuid.uuid4().hex[:12]}"
    await create_database(services.database("postgres"), name)
    database_url = services.database(name)
    await migrate(database_url, find_migrations(ROOT / "migrations"))
    topic = f"test.{uuid.uuid4().hex[:12]}"
    pipe = Pipeline(services.kafka_bootstrap, database_url, topic, f"{topic}.group", tmp_path)
    await pipe.create_topics()
    try:
        yield pipe
    finally:
        await asyncio.to_thread(pipe.stop_all)
        admin = await connect(services.database("postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tokens_of_each_scope_through_a_real_ingress(pipeline: Pipeline) -> None:
    tokens = {
        "write_token_hashes": token_hash(WRITER),
        "read_token_hashes": token_hash(READER).removeprefix("sha256:"),
    }
    pipeline.start("aggregator", "aggregator")
    url = await pipeline.start_ingress(**tokens)  # /health/ready answers without a token
    async with httpx.AsyncClient(base_url=url) as client:
        increment = {"key": "guarded", "value": 3}
        refused = await client.post("/increment", json=increment)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer realm="distcount"'
        assert (
            await client.post("/increment", json=increment, headers=_bearer(READER))
        ).status_code == 403
        accepted = await client.post("/increment", json=increment, headers=_bearer(WRITER))
        assert accepted.status_code == 202, accepted.text
        assert (await client.get("/counters/guarded", headers=_bearer(WRITER))).status_code == 403
        unknown = await client.get("/openapi.json", headers=_bearer(WRITER + "x"))
        assert unknown.status_code == 401
        assert 'error="invalid_token"' in unknown.headers["www-authenticate"]
        document = (await client.get("/openapi.json", headers=_bearer(READER))).json()
        assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"

        async def counted() -> bool:
            answer = await client.get("/counters/guarded", headers=_bearer(READER))
            return answer.status_code == 200 and answer.json()["data"]["value"] == 3

        await wait_for(counted, 30, "the increment to be counted")

    # the commands that read send DISTCOUNT_TOKEN; without it, they say what to set
    without = await pipeline.cli("get", "guarded")
    assert without.returncode == 1
    assert "set DISTCOUNT_TOKEN" in without.stderr
    with_token = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "distcount_cli", "get", "guarded"],
        env=pipeline.env(token=READER),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert with_token.returncode == 0, with_token.stderr
    assert with_token.stdout == "3\n"


async def test_secret_settings_show_in_no_log_and_no_status_line(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """The services run with the secret settings set (tokens and their hashes; the SASL
    password is in test_kafka_sasl, whose broker asks for it), and their logs, at debug, hold
    none of them; nor does a command refused by PostgreSQL, whose URL holds the password twice
    (libpq reads one from the query string too)."""
    db_password = "Db-pw-" + uuid.uuid4().hex[:10]
    service_token = secrets.token_urlsafe(32)
    overrides = {
        "write_token_hashes": token_hash(WRITER),
        "read_token_hashes": token_hash(READER),
        "token": service_token,
    }
    pipeline.start("aggregator", "aggregator", **overrides)
    await pipeline.start_ingress(**overrides)
    # a database that refuses the password: its error, logged and printed, must not show it
    parts = urlsplit(pipeline.database_url)
    refused_url = urlunsplit(
        parts._replace(
            netloc=f"nobody:{db_password}@{parts.hostname}:{parts.port}",
            query=f"sslmode=disable&password={db_password}",
        )
    )
    stalls = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "distcount_cli", "stalls"],
        env=pipeline.env(database_url=refused_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert stalls.returncode == 1
    assert "nobody:***@" in stalls.stderr, stalls.stderr
    await asyncio.to_thread(pipeline.stop_all)
    logs = "\n".join(path.read_text(errors="replace") for path in pipeline.logs.glob("*.log"))
    assert "consuming" in logs  # the logs are there, at debug
    for secret in (db_password, service_token, WRITER, READER, token_hash(WRITER)[7:]):
        assert secret not in logs + stalls.stdout + stalls.stderr

    # `dev status --env` and `dev status` with a database and a Kafka of the user's
    sasl_password = "Kafka-pw-" + uuid.uuid4().hex[:10]
    env = pipeline.env(
        dev_dir=str(tmp_path / "state"),
        database_url=f"postgresql://app:{db_password}@db.invalid:5432/counts?sslmode=verify-full",
        migrate_database_url=f"postgresql://owner:{db_password}@db.invalid:5432/counts",
        kafka_bootstrap="kafka.invalid:9093",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="svc",
        kafka_sasl_password=sasl_password,
        token=service_token,
    )
    printed = ""
    for args in (["dev", "status", "--env"], ["dev", "status"]):
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "distcount_cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        printed += done.stdout + done.stderr
    assert "# DISTCOUNT_DATABASE_URL=postgresql://app:***@db.invalid:5432/counts" in printed
    for secret in (db_password, sasl_password, service_token):
        assert secret not in printed, printed
