"""Forward-only migrations, applied in order under an advisory lock.

Many daemons may start at once; the transaction-scoped advisory lock makes one of them
apply the pending migrations while the others wait and then find nothing left to do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from haosq.errors import ConfigError

# An arbitrary constant that names "haosq migrations" among advisory locks.
MIGRATION_LOCK_KEY = 0x6861_6F73_71


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    folder = resources.files("haosq.db") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def applied_versions(conn: psycopg.Connection[Any]) -> set[int]:
    row = conn.execute("SELECT to_regclass('haosq.schema_migrations') AS t").fetchone()
    if row is None or _first(row) is None:
        return set()
    rows = conn.execute("SELECT version FROM haosq.schema_migrations").fetchall()
    return {_first(r) for r in rows}


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def migrate(conn: psycopg.Connection[Any], migrations: Sequence[Migration] | None = None) -> list[Migration]:
    """Apply the migrations this database lacks (of `migrations`, by default every one that
    ships with haosq); return the ones applied here.

    Once `haosq roles create` has handed the schema to the admin role, migrations run as
    the schema's owner (`SET LOCAL ROLE`) whoever of its members (or a superuser) starts
    them, so that every object they create belongs to that role too: later migrations can
    alter it, and the default privileges given for that role reach the other roles.
    """
    wanted = sorted(available_migrations() if migrations is None else migrations,
                    key=lambda m: m.version)
    if {m.version for m in wanted} <= applied_versions(conn):
        return []
    applied: list[Migration] = []
    try:
        # On an autocommit connection this is one transaction; otherwise it joins the caller's.
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            _become_schema_owner(conn)
            conn.execute(
                """CREATE TABLE IF NOT EXISTS haosq.schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = applied_versions(conn)
            for migration in wanted:
                if migration.version in done:
                    continue
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO haosq.schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration)
    except psycopg.errors.InsufficientPrivilege as exc:
        missing = ", ".join(f"{m.version:04d}_{m.name}" for m in wanted
                            if m.version not in applied_versions(conn))
        user = _first(conn.execute("SELECT current_user").fetchone())
        reason = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"the database needs migrations ({missing}) that the role {user} may not apply "
            f"({reason}): run `haosq migrate` as the owner of the haosq schema, a role granted "
            "haosq_admin, or a superuser"
        ) from None
    return applied


def _become_schema_owner(conn: psycopg.Connection[Any]) -> None:
    """Create the schema if it is missing (which needs CREATE on the database: checking
    first spares the admin role, which has it only on the schema); otherwise act as its
    owner when the current role is a member of it."""
    row = conn.execute(
        """SELECT r.rolname AS owner, pg_has_role(current_user, r.oid, 'MEMBER') AS member,
                  r.rolname = current_user AS own
             FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
            WHERE n.nspname = 'haosq'"""
    ).fetchone()
    if row is None:
        conn.execute("CREATE SCHEMA haosq")
        return
    owner, member, own = (row["owner"], row["member"], row["own"]) if isinstance(row, dict) else row
    if member and not own:
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))


def pending_migrations(conn: psycopg.Connection[Any],
                       migrations: Sequence[Migration] | None = None) -> list[Migration]:
    done = applied_versions(conn)
    return [m for m in (available_migrations() if migrations is None else migrations)
            if m.version not in done]
