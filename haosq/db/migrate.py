"""Forward-only migrations, applied in order under an advisory lock.

Many daemons may start at once; the transaction-scoped advisory lock makes one of them
apply the pending migrations while the others wait and then find nothing left to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

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


def migrate(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Apply the migrations this database lacks; return the ones applied here."""
    wanted = available_migrations()
    if {m.version for m in wanted} <= applied_versions(conn):
        return []
    applied: list[Migration] = []
    # On an autocommit connection this is one transaction; otherwise it joins the caller's.
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS haosq")
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
    return applied


def pending_migrations(conn: psycopg.Connection[Any]) -> list[Migration]:
    done = applied_versions(conn)
    return [m for m in available_migrations() if m.version not in done]
