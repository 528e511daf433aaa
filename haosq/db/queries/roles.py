"""Least-privilege roles for a haosq database (`haosq roles create`).

Four group roles (NOLOGIN; grant them to login roles):

- producer: enqueue only, through `haosq.add_job()` (SECURITY DEFINER with a fixed
  search_path): no table privileges at all, so it cannot read other jobs' payloads.
- worker:   what the daemon does: claim and update jobs, write logs, heartbeats, counters,
            schedules; prune finished jobs. No DDL.
- viewer:   read-only (the TUI with --read-only): SELECT on every table; LISTEN needs nothing.
- admin:    everything on haosq's objects, and CREATE on the schema for migrations.

`add_job` loses its default EXECUTE for PUBLIC so that only these roles (and the owner) can
enqueue. Default privileges make tables added by later migrations follow the same rules when
the migrations run as the role that ran `haosq roles create`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from haosq.errors import ConfigError

ROLE_KINDS = ("producer", "worker", "viewer", "admin")
SCHEMA = sql.Identifier("haosq")


@dataclass(frozen=True)
class RoleNames:
    prefix: str = "haosq_"

    def name(self, kind: str) -> str:
        return f"{self.prefix}{kind}"

    def ident(self, kind: str) -> sql.Identifier:
        return sql.Identifier(self.name(kind))

    def all(self) -> list[str]:
        return [self.name(kind) for kind in ROLE_KINDS]


def validate_prefix(prefix: str) -> None:
    import re

    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", prefix):
        raise ConfigError(f"role prefix {prefix!r}: use lowercase letters, digits and '_' "
                          "(at most 41 characters), starting with a letter or '_'")


def statements(names: RoleNames) -> list[sql.Composed]:
    """The SQL of `haosq roles create`, idempotent, in order."""
    p, w, v, a = (names.ident(kind) for kind in ROLE_KINDS)
    out: list[sql.Composed] = []
    for kind in ROLE_KINDS:
        out.append(sql.SQL(
            "DO $$ BEGIN CREATE ROLE {} NOLOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ).format(names.ident(kind)))
    add_job = sql.SQL("haosq.add_job(text, jsonb, integer, integer, timestamptz, text[], text)")
    out += [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}, {}, {}, {}").format(SCHEMA, p, w, v, a),
        sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(SCHEMA, a),
        sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC").format(add_job),
        sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}, {}, {}").format(add_job, p, w, a),
        # Viewer: reads everything, changes nothing.
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(SCHEMA, v),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(SCHEMA, v),
        # Worker: rows, not structure (no TRUNCATE, REFERENCES, TRIGGER, DDL).
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(SCHEMA, w),
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(SCHEMA, w),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} "
                "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}").format(SCHEMA, w),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT USAGE, SELECT ON SEQUENCES TO {}").format(
            SCHEMA, w),
        # Admin: everything on haosq's objects.
        sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA {} TO {}").format(SCHEMA, a),
        sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA {} TO {}").format(SCHEMA, a),
        sql.SQL("GRANT ALL ON ALL FUNCTIONS IN SCHEMA {} TO {}").format(SCHEMA, a),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT ALL ON TABLES TO {}").format(SCHEMA, a),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT ALL ON SEQUENCES TO {}").format(SCHEMA, a),
    ]
    return out


def create_roles(conn: psycopg.Connection[Any], names: RoleNames) -> None:
    """Create the roles and grant their privileges, in one transaction."""
    with conn.transaction():
        for statement in statements(names):
            conn.execute(statement)


def script(conn: psycopg.Connection[Any] | None, names: RoleNames) -> str:
    """The statements as a SQL script (for --print or the docs)."""
    return "".join(f"{statement.as_string(conn)};\n" for statement in statements(names))


def grant_membership(conn: psycopg.Connection[Any], names: RoleNames, kind: str, login: str) -> None:
    conn.execute(sql.SQL("GRANT {} TO {}").format(names.ident(kind), sql.Identifier(login)))


def existing(conn: psycopg.Connection[Any], names: RoleNames) -> list[str]:
    rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname",
                        (names.all(),)).fetchall()
    return [next(iter(row.values())) if isinstance(row, dict) else row[0] for row in rows]
