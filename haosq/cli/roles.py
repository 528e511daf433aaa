"""`haosq roles create`: least-privilege PostgreSQL roles for producers, workers,
viewers (the read-only TUI) and administrators."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from haosq.cli.common import console, state
from haosq.db.connection import connect
from haosq.db.queries import roles as role_sql
from haosq.errors import ConfigError

roles_app = typer.Typer(help="Least-privilege database roles (producer, worker, viewer, admin).",
                        no_args_is_help=True)

PrefixOption = Annotated[str, typer.Option(
    "--prefix", envvar="HAOSQ_ROLE_PREFIX", help="role name prefix")]


@roles_app.command("create")
def create(
    ctx: typer.Context,
    prefix: PrefixOption = "haosq_",
    print_only: Annotated[bool, typer.Option("--print", help="print the SQL instead of running it")] = False,
    grant: Annotated[list[str] | None, typer.Option(
        "--grant", metavar="KIND=LOGIN",
        help="also grant a role to an existing login role, e.g. worker=app_worker (repeatable)",
        show_default=False)] = None,
) -> None:
    """Create (or update) the haosq_producer, haosq_worker, haosq_viewer and haosq_admin roles."""
    role_sql.validate_prefix(prefix)
    names = role_sql.RoleNames(prefix)
    grants = []
    for item in grant or []:
        kind, _, login = item.partition("=")
        if kind not in role_sql.ROLE_KINDS or not login:
            raise ConfigError(f"--grant {item!r}: expected KIND=LOGIN with KIND one of "
                              f"{', '.join(role_sql.ROLE_KINDS)}")
        grants.append((kind, login))
    if print_only:
        sys.stdout.write(role_sql.script(None, names))
        return
    queue = state(ctx).queue  # opens the database and applies migrations first
    with connect(queue.db.url, autocommit=True) as conn:
        role_sql.create_roles(conn, names)
        for kind, login in grants:
            role_sql.grant_membership(conn, names, kind, login)
        created = role_sql.existing(conn, names)
    console.print(f"roles ready: {', '.join(created)}", markup=False)
    for kind, login in grants:
        console.print(f"granted {names.name(kind)} to {login}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(roles_app, name="roles")
