"""`haosq tui` and the `haosq-tui` console script: the terminal UI, same settings as the CLI."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from haosq.cli.common import state
from haosq.config import Settings, load_settings
from haosq.errors import ConfigError, HaosqError
from haosq.secrets import mask_text
from haosq.tui.format import visible

ReadOnly = Annotated[bool, typer.Option(
    "--read-only", help="Hide every action; only SELECT and LISTEN reach the database.")]
RefreshInterval = Annotated[float, typer.Option(
    "--refresh-interval", help="Seconds between refreshes when no notification arrives.",
    min=0.2)]
MinRefresh = Annotated[float, typer.Option(
    "--min-refresh", help="Fewest seconds between two refreshes (a slow link wants more).", min=0.1)]


def run_tui(settings: Settings, *, read_only: bool, refresh_interval: float, min_refresh: float) -> None:
    from haosq.tui.app import HaosqApp
    from haosq.tui.data import PostgresSource

    if not sys.stdout.isatty():
        raise ConfigError("haosq tui needs a terminal (stdout is not a TTY)")
    source = PostgresSource(settings, read_only=read_only)
    HaosqApp(source, refresh_interval=refresh_interval, min_refresh=min_refresh,
             read_only=read_only).run()


def register(app: typer.Typer) -> None:
    @app.command("tui")
    def tui(ctx: typer.Context, read_only: ReadOnly = False, refresh_interval: RefreshInterval = 5.0,
            min_refresh: MinRefresh = 1.0) -> None:
        """Open the terminal UI: dashboard, jobs, job detail, workers."""
        run_tui(state(ctx).settings, read_only=read_only, refresh_interval=refresh_interval,
                min_refresh=min_refresh)


standalone = typer.Typer(name="haosq-tui", add_completion=False, pretty_exceptions_enable=False,
                         rich_markup_mode=None)


@standalone.command()
def haosq_tui(
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="PostgreSQL URL (default: HAOSQ_DATABASE_URL, DATABASE_URL, "
        "else the embedded server)", show_default=False)] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="TOML config file", show_default=False)] = None,
    read_only: ReadOnly = False,
    refresh_interval: RefreshInterval = 5.0,
    min_refresh: MinRefresh = 1.0,
) -> None:
    """haosq-tui: watch the queue and act on it."""
    settings = load_settings(config_file=config).with_overrides(database_url=database_url)
    run_tui(settings, read_only=read_only, refresh_interval=refresh_interval, min_refresh=min_refresh)


def main(argv: list[str] | None = None) -> None:
    """The `haosq-tui` console script: user errors print one line and exit 2, like `haosq`."""
    from typer._click import exceptions as click_errors

    command = typer.main.get_command(standalone)
    try:
        command.main(args=sys.argv[1:] if argv is None else argv, prog_name="haosq-tui",
                     standalone_mode=False)
    except click_errors.UsageError as exc:
        sys.stderr.write(visible(f"haosq-tui: {exc.format_message()} (see 'haosq-tui --help')",
                                 one_line=True) + "\n")
        sys.exit(2)
    except HaosqError as exc:
        sys.stderr.write(visible("haosq-tui: error: " + " ".join(mask_text(str(exc)).split())) + "\n")
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
