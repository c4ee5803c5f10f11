"""What a PostgreSQL server needs before the migrations can run: the database, owned by the role
that migrates it, and the services' login role, which owns nothing.

The local stack (`distcount dev up`) and the tests set up their servers with these; in
production an operator (or compose.yaml's `roles` service) does the same once.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

from distcount_store._database import connect
from distcount_store._errors import mapped


async def create_database(server_url: str, name: str) -> bool:
    """Create database `name` on the server `server_url` reaches, owned by the user of
    `server_url`; False when it exists already."""
    conn = await connect(server_url)
    try:
        with mapped(f"creating database {name!r}"):
            if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                return False
            try:
                await conn.execute(await _statement(conn, "CREATE DATABASE %I", name))
            except asyncpg.DuplicateDatabaseError:  # created meanwhile by another command
                return False
    finally:
        await conn.close()
    # PostgreSQL 15 made this the default: other roles (the services') create no tables
    conn = await connect(urlunsplit(urlsplit(server_url)._replace(path=f"/{name}")))
    try:
        with mapped(f"locking the public schema of database {name!r}"):
            await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    finally:
        await conn.close()
    return True


async def create_login_role(server_url: str, user: str, password: str) -> bool:
    """Create `user`, a role that may log in and nothing else: no superuser, creates no database
    and no role (`migrate` grants it what the services need); False when it exists already."""
    conn = await connect(server_url)
    try:
        with mapped(f"creating role {user!r}"):
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user):
                return False
            try:
                await conn.execute(
                    await _statement(
                        conn,
                        "CREATE ROLE %I LOGIN PASSWORD %L "
                        "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
                        user,
                        password,
                    )
                )
            except asyncpg.DuplicateObjectError:  # created meanwhile by another command
                return False
    finally:
        await conn.close()
    return True


async def _statement(conn: asyncpg.Connection, template: str, *values: str) -> str:
    """`template` with its %I (identifier) and %L (literal) filled in by the server's own
    `format()`: statements such as CREATE ROLE take no parameters, and the server quotes best."""
    placeholders = "".join(f", ${n}::text" for n in range(2, len(values) + 2))
    statement: str = await conn.fetchval(
        f"SELECT format($1::text{placeholders})", template, *values
    )
    return statement
