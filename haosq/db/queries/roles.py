"""Least-privilege roles for a haosq database (`haosq roles create`).

Four group roles (NOLOGIN; grant them to login roles). What each may do is one matrix,
`ROLES`, from which the grants are made, `docs/deploy.md`'s role table is written and the
tests check the server:

- producer: enqueue only, through `haosq.add_job()` (SECURITY DEFINER with a fixed
  search_path): no table privileges at all, so it cannot read other jobs' payloads.
- worker:   what the daemon does, table by table: claim and update jobs, write logs,
            heartbeats, counters, schedules; delete only what pruning removes. No DDL,
            no TRUNCATE, nothing but SELECT on schema_migrations.
- viewer:   read-only (the TUI with --read-only): SELECT on every table; LISTEN needs nothing.
- admin:    owns the schema and every object in it, so that it can run every migration
            (ALTER, DROP and CREATE INDEX need the owner, not privileges).

Ownership is the crux of migrations: objects belong to the role that creates them, and
`ALTER DEFAULT PRIVILEGES` applies only to objects created by the role it names. So
`roles create` hands the schema and its objects to the admin role, migrations run as that
role (`haosq.db.migrate` switches to the schema's owner), and the default privileges are
set FOR that role: a table a later migration adds reaches the worker and viewer with the
defaults below, and rerunning `roles create` after an upgrade applies the matrix to it.
Functions are executable by PUBLIC by default, and a per-schema default cannot take that
away; the revoke is a global default of the admin role, which owns nothing but haosq.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from haosq.errors import ConfigError

ROLE_KINDS = ("producer", "worker", "viewer", "admin")
SCHEMA_NAME = "haosq"
SCHEMA = sql.Identifier(SCHEMA_NAME)
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
ADD_JOB = "add_job(text, jsonb, integer, integer, timestamptz, text[], text)"
COMPACT_JOB_COUNTS = "compact_job_counts()"

READ = ("SELECT",)
WRITE = ("SELECT", "INSERT", "UPDATE")
PRUNE = ("SELECT", "INSERT", "UPDATE", "DELETE")


@dataclass(frozen=True)
class RoleSpec:
    """What one role may do in the haosq schema."""

    kind: str
    used_by: str
    # Table name -> privileges; tables not listed get `other_tables` (also the default
    # privileges of tables that later migrations add).
    tables: dict[str, tuple[str, ...]] = field(default_factory=dict)
    other_tables: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    sequences: tuple[str, ...] = ()
    owner: bool = False
    note: str = ""

    def table_privileges(self, table: str) -> tuple[str, ...]:
        if self.owner:
            return TABLE_PRIVILEGES
        return self.tables.get(table, self.other_tables)


ROLES: dict[str, RoleSpec] = {
    "producer": RoleSpec(
        "producer", "applications that enqueue",
        functions=(ADD_JOB,),
        note="no table access, so it cannot read other jobs' payloads",
    ),
    "worker": RoleSpec(
        "worker", "`haosq worker`",
        tables={
            # Retention and `cleanup:job-logs` delete finished jobs (logs, checkpoints and
            # webhook URLs go with them by ON DELETE CASCADE).
            "jobs": PRUNE,
            # Pruned by age; the pruning statement locks its batch (FOR UPDATE needs UPDATE).
            "job_logs": PRUNE,
            "workers": PRUNE,                  # stopped and dead workers are pruned
            "job_counts": ("SELECT", "INSERT", "DELETE"),  # deltas appended, then folded
            "schedules": WRITE,                # removing a schedule is an operator's act
            "schedule_runs": PRUNE,
            "maintenance_runs": WRITE,
            "digest_items": PRUNE,             # sent items are pruned
            "job_checkpoints": WRITE,
            "webhook_routes": PRUNE,           # routes gone from the config are removed
            "job_webhooks": ("SELECT", "INSERT", "UPDATE"),
            "schema_migrations": READ,
        },
        other_tables=WRITE,
        functions=(ADD_JOB, COMPACT_JOB_COUNTS),
        sequences=("USAGE",),
        note="no DDL, no TRUNCATE",
    ),
    "viewer": RoleSpec(
        "viewer", "`haosq tui --read-only`, dashboards", other_tables=READ,
        note="LISTEN needs no privilege; no writes",
    ),
    "admin": RoleSpec(
        "admin", "operators, `haosq migrate`", owner=True, functions=("every function",),
        note="so it runs every migration: ALTER, DROP and CREATE INDEX need the owner",
    ),
}


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
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", prefix):
        raise ConfigError(f"role prefix {prefix!r}: use lowercase letters, digits and '_' "
                          "(at most 41 characters), starting with a letter or '_'")


def _function(signature: str) -> sql.Composable:
    return sql.SQL("{}.").format(SCHEMA) + sql.SQL(signature)


def _privileges(privileges: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL(p) for p in privileges)


# Hands the schema's tables, views, standalone sequences and routines to the admin role
# (identity sequences follow their table). {owner} is the admin role's name as a literal.
_TRANSFER_OWNERSHIP = """
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.oid::regclass AS name,
               CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                              WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END AS kind
          FROM pg_class c
         WHERE c.relnamespace = {schema}::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
           AND NOT EXISTS (SELECT 1 FROM pg_depend d
                            WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                              AND d.deptype IN ('a', 'i'))
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO %I', r.kind, r.name, {owner});
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p
              WHERE p.pronamespace = {schema}::regnamespace
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO %I', r.name, {owner});
    END LOOP;
END
"""


def _table_grants(names: RoleNames, conn: psycopg.Connection[Any] | None) -> list[sql.Composed]:
    """GRANTs of every non-owner role on every table, from the matrix. Tables not listed
    by a role get its `other_tables`; without a connection (--print), the listed tables."""
    tables = sorted({t for spec in ROLES.values() for t in spec.tables})
    if conn is not None:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = %s::regnamespace "
            "AND c.relkind IN ('r', 'p') ORDER BY 1", (SCHEMA_NAME,)).fetchall()
        tables = [next(iter(row.values())) if isinstance(row, dict) else row[0] for row in rows]
    out: list[sql.Composed] = []
    for spec in ROLES.values():
        if spec.owner:
            continue
        for table in tables:
            privileges = spec.table_privileges(table)
            if privileges:
                out.append(sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                    _privileges(privileges), sql.Identifier(SCHEMA_NAME, table), names.ident(spec.kind)))
    return out


def statements(names: RoleNames, conn: psycopg.Connection[Any] | None = None) -> list[sql.Composed]:
    """The SQL of `haosq roles create`, idempotent, in order (run by a superuser)."""
    ident = {kind: names.ident(kind) for kind in ROLE_KINDS}
    others = sql.SQL(", ").join(ident[k] for k in ROLE_KINDS if k != "admin")
    admin = ident["admin"]
    out: list[sql.Composed] = []
    for kind in ROLE_KINDS:
        out.append(sql.SQL(
            "DO $$ BEGIN CREATE ROLE {} NOLOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ).format(ident[kind]))
    transfer = sql.SQL(_TRANSFER_OWNERSHIP).format(
        schema=sql.Literal(SCHEMA_NAME), owner=sql.Literal(names.name("admin"))).as_string(conn)
    out += [
        # The admin role owns everything: it can run every migration.
        sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(SCHEMA, admin),
        sql.SQL("DO {}").format(sql.Literal(transfer)),
        # A clean slate for the other roles (rerunning after a change of the matrix takes
        # back what it no longer gives), and default privileges set by earlier versions for
        # the role running this.
        sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(SCHEMA, others),
        sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(SCHEMA, others),
        sql.SQL("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {} FROM PUBLIC, {}").format(SCHEMA, others),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} REVOKE ALL ON TABLES FROM {}, {}").format(
            SCHEMA, others, admin),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} REVOKE ALL ON SEQUENCES FROM {}, {}").format(
            SCHEMA, others, admin),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(SCHEMA, others),
    ]
    out += _table_grants(names, conn)
    for spec in ROLES.values():
        if spec.owner:
            continue
        role = ident[spec.kind]
        for signature in spec.functions:
            out.append(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(_function(signature), role))
        if spec.sequences:
            out.append(sql.SQL("GRANT {} ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
                _privileges(spec.sequences), SCHEMA, role))
        # What later migrations (run as the admin role) add.
        defaults = sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT {} ON {} TO {}")
        if spec.other_tables:
            out.append(defaults.format(admin, SCHEMA, _privileges(spec.other_tables),
                                       sql.SQL("TABLES"), role))
        if spec.sequences:
            out.append(defaults.format(admin, SCHEMA, _privileges(spec.sequences),
                                       sql.SQL("SEQUENCES"), role))
    out.append(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC")
               .format(admin))
    return out


def create_roles(conn: psycopg.Connection[Any], names: RoleNames) -> None:
    """Create the roles, hand the schema to the admin role and grant the matrix, in one
    transaction."""
    with conn.transaction():
        for statement in statements(names, conn):
            conn.execute(statement)


def script(conn: psycopg.Connection[Any] | None, names: RoleNames) -> str:
    """The statements as a SQL script (for --print)."""
    return "".join(f"{statement.as_string(conn)};\n" for statement in statements(names, conn))


def grant_membership(conn: psycopg.Connection[Any], names: RoleNames, kind: str, login: str) -> None:
    conn.execute(sql.SQL("GRANT {} TO {}").format(names.ident(kind), sql.Identifier(login)))


def existing(conn: psycopg.Connection[Any], names: RoleNames) -> list[str]:
    rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname",
                        (names.all(),)).fetchall()
    return [next(iter(row.values())) if isinstance(row, dict) else row[0] for row in rows]


def role_table(names: RoleNames | None = None) -> str:
    """The Markdown table of docs/deploy.md, written from the matrix."""
    names = names or RoleNames()
    lines = ["| role | tables | functions | used by |", "|---|---|---|---|"]
    for spec in ROLES.values():
        if spec.owner:
            tables = "owner of the schema and of every object in it"
        elif not spec.tables and not spec.other_tables:
            tables = "none"
        else:
            grouped: dict[tuple[str, ...], list[str]] = {}
            for table, privileges in spec.tables.items():
                grouped.setdefault(privileges, []).append(table)
            parts = [f"{', '.join(f'`{t}`' for t in sorted(tables))}: {' '.join(p)}"
                     for p, tables in sorted(grouped.items(), key=lambda item: -len(item[0]))]
            rest = "every table" if not spec.tables else "other tables"
            parts.append(f"{rest}: {' '.join(spec.other_tables)}")
            tables = "; ".join(parts)
        functions = ", ".join(f"`{f.split('(')[0]}`" if "(" in f else f for f in spec.functions) or "none"
        lines.append(f"| `{names.name(spec.kind)}` | {tables} ({spec.note}) | {functions} | {spec.used_by} |")
    return "\n".join(lines) + "\n"
