"""Database commands: migrate, and the embedded server's status, URL and stop."""

from __future__ import annotations

from typing import Annotated

import typer

from haosq.cli.common import console, print_json, state
from haosq.db.connection import connect, resolve_url
from haosq.db.embedded import data_dir_source, embedded_status, stop_embedded
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
            console.print("schema is up to date", markup=False, soft_wrap=True)
            return
        applied = apply_migrations(conn)
    for migration in applied:
        console.print(f"applied {migration.version:04d}_{migration.name}", markup=False)
    if not applied:
        console.print("schema is up to date", markup=False, soft_wrap=True)


@db_app.command("status")
def status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show whether the embedded server runs: its data dir, pid, user and start time."""
    settings = state(ctx).settings
    info = embedded_status(settings)
    data = {
        "configured_url": mask_url(settings.database_url) if settings.database_url else None,
        "embedded_data_dir": str(info.data_dir),
        "embedded_data_dir_source": data_dir_source(settings),
        "embedded_data": str(info.pgdata),
        "embedded_running": info.running,
        "embedded_pid": info.pid,
        "embedded_user": info.user,
        "embedded_started_at": info.started_at.isoformat() if info.started_at else None,
        "embedded_url": info.url,
    }
    if as_json:
        print_json(data)
        return
    if settings.database_url:
        console.print(f"using the configured database {data['configured_url']}; the embedded "
                      "server below is not used", markup=False, soft_wrap=True)
    console.print(f"data dir {info.data_dir} (from {data_dir_source(settings)})", markup=False,
                  soft_wrap=True)
    if info.running:
        console.print(f"embedded server: running ({info.describe()}); data in {info.pgdata}",
                      markup=False, soft_wrap=True)
        console.print(f"url: {info.url}", markup=False, soft_wrap=True)
    else:
        console.print(f"embedded server: stopped; data in {info.pgdata}", markup=False,
                  soft_wrap=True)


@db_app.command("url")
def url(ctx: typer.Context) -> None:
    """Print the URL of the database haosq uses (starting the embedded server if needed)."""
    settings = state(ctx).settings
    console.print(mask_url(resolve_url(settings)), markup=False, soft_wrap=True)


@db_app.command("stop")
def stop(ctx: typer.Context) -> None:
    """Stop the embedded server of this data dir (HAOSQ_DATA_DIR, or the default)."""
    settings = state(ctx).settings
    stopped = stop_embedded(settings)
    where = f"data dir {settings.data_dir.absolute()} (from {data_dir_source(settings)})"
    if stopped is not None:
        console.print(f"embedded server stopped ({stopped.describe()}; {where})", markup=False,
                      soft_wrap=True)
    else:
        console.print(f"embedded server was not running ({where})", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate_command)
    app.add_typer(db_app, name="db")
