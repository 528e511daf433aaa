"""Database commands: migrate, and the embedded server's status, URL and stop."""

from __future__ import annotations

from typing import Annotated

import typer

from haosq.cli.common import console, print_json, state
from haosq.db.connection import connect, embedded_status, resolve_url, stop_embedded
from haosq.db.migrate import migrate as apply_migrations
from haosq.db.migrate import pending_migrations
from haosq.secrets import mask_url

db_app = typer.Typer(help="The embedded PostgreSQL server (used when no DATABASE_URL is set).",
                     no_args_is_help=True)


def migrate_command(
    ctx: typer.Context,
    check: Annotated[bool, typer.Option("--check", help="only list pending migrations; "
                                        "exit 2 if any")] = False,
) -> None:
    """Apply pending schema migrations (also done automatically on first use)."""
    url = resolve_url(state(ctx).settings)
    with connect(url, autocommit=True) as conn:
        if check:
            pending = pending_migrations(conn)
            for migration in pending:
                console.print(f"pending: {migration.version:04d}_{migration.name}", markup=False)
            if pending:
                raise typer.Exit(2)
            console.print("schema is up to date", markup=False)
            return
        applied = apply_migrations(conn)
    for migration in applied:
        console.print(f"applied {migration.version:04d}_{migration.name}", markup=False)
    if not applied:
        console.print("schema is up to date", markup=False)


@db_app.command("status")
def status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show whether the embedded server runs, and where its data lives."""
    settings = state(ctx).settings
    info = embedded_status(settings)
    data = {
        "configured_url": mask_url(settings.database_url) if settings.database_url else None,
        "embedded_data": str(info.pgdata),
        "embedded_running": info.running,
        "embedded_pid": info.pid,
        "embedded_url": info.url,
    }
    if as_json:
        print_json(data)
        return
    if settings.database_url:
        console.print(f"using the configured database {data['configured_url']}", markup=False)
    state_text = f"running (pid {info.pid})" if info.running else "stopped"
    console.print(f"embedded server: {state_text}; data in {info.pgdata}", markup=False)


@db_app.command("url")
def url(ctx: typer.Context) -> None:
    """Print the URL of the database haosq uses (starting the embedded server if needed)."""
    settings = state(ctx).settings
    console.print(mask_url(resolve_url(settings)), markup=False, soft_wrap=True)


@db_app.command("stop")
def stop(ctx: typer.Context) -> None:
    """Stop the embedded server."""
    if stop_embedded(state(ctx).settings):
        console.print("embedded server stopped", markup=False)
    else:
        console.print("embedded server was not running", markup=False)


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate_command)
    app.add_typer(db_app, name="db")
