"""PostgreSQL over TLS: a private server with `ssl=on` and a certificate signed by a CA this test
makes with `openssl`, reached through DISTCOUNT_DATABASE_URL's `sslmode=verify-full` and
`sslrootcert`, which asyncpg reads from the URL; refused with another CA, without showing the
password."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from distcount_config import load
from distcount_devstack._postgres import PostgresNode, find_bindir, server_user
from distcount_devstack._process import stop
from distcount_store import Database, DatabaseUnavailable, connect, redact
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

ADMIN = "distcount_admin:distcount_admin"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (its certificate, its key)."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
        cwd=folder,
    )  # fmt: skip
    return folder / f"{name}.crt", folder / f"{name}.key"


def make_server_cert(folder: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by `ca`: (certificate, key)."""
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
        cwd=folder,
    )  # fmt: skip
    return folder / "server.crt", folder / "server.key"


@dataclass
class TlsPostgres:
    port: int
    ca: Path  # the CA that signed the server's certificate
    other_ca: Path  # one that did not

    def url(self, **query: str) -> str:
        params = "&".join(f"{name}={value}" for name, value in query.items())
        return f"postgresql://{ADMIN}@127.0.0.1:{self.port}/postgres?{params}"


@pytest.fixture(scope="module")
def tls_dir() -> Iterator[Path]:
    # reachable by the unprivileged user PostgreSQL runs as when the tests run as root
    folder = Path(tempfile.mkdtemp(prefix="distcount-tls-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
async def tls_postgres(tls_dir: Path) -> AsyncIterator[TlsPostgres]:
    certs = tls_dir / "certs"
    certs.mkdir()
    ca = make_ca(certs, "test-ca")
    other_ca, _ = make_ca(certs, "other-ca")
    cert, key = make_server_cert(certs, ca)
    node = PostgresNode(tls_dir / "postgres", free_port())
    bindir = find_bindir()
    node.init(bindir)
    for path in (cert, key):
        shutil.copy(path, node.data_dir / path.name)
    (node.data_dir / "server.key").chmod(0o600)
    user = server_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        for name in ("server.crt", "server.key"):
            os.chown(node.data_dir / name, entry.pw_uid, entry.pw_gid)
    with (node.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    # TCP connections must use TLS: without it, a client that fell back to plain text would pass
    hba = node.data_dir / "pg_hba.conf"
    lines = [line for line in hba.read_text().splitlines() if not line.startswith("host")]
    hba.write_text("\n".join([*lines, "hostssl all all 127.0.0.1/32 scram-sha-256", ""]))
    try:
        await node.start(bindir, timeout_s=60)
        yield TlsPostgres(node.port, ca[0], other_ca)
    finally:
        record = node.server()
        if record is not None:
            await stop(record, timeout_s=10, first_signal=signal.SIGINT)


async def test_verify_full_reaches_the_server_over_tls(tls_postgres: TlsPostgres) -> None:
    url = tls_postgres.url(sslmode="verify-full", sslrootcert=str(tls_postgres.ca))
    # the setting takes such a URL as it is, and the services' pool opens with it
    settings = load({"DISTCOUNT_DATABASE_URL": url})
    assert settings.database_url == url
    conn = await connect(settings.database_url)
    try:
        encrypted = await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()
    assert encrypted is True
    database = await Database.open(settings.database_url, min_size=1, max_size=1)
    try:
        await database.check(timeout_s=5)
    finally:
        await database.close()


async def test_another_ca_is_refused_without_showing_the_password(
    tls_postgres: TlsPostgres,
) -> None:
    url = tls_postgres.url(sslmode="verify-full", sslrootcert=str(tls_postgres.other_ca))
    with pytest.raises(DatabaseUnavailable) as caught:
        await connect(url, timeout_s=10)
    message = str(caught.value)
    assert "certificate verify failed" in message, message
    assert "sslmode=verify-full" in message  # where it went is still said
    assert ":distcount_admin@" not in message
    assert redact(url) in message


async def test_plain_text_is_refused(tls_postgres: TlsPostgres) -> None:
    with pytest.raises(DatabaseUnavailable):
        await connect(tls_postgres.url(sslmode="disable"), timeout_s=10)
