"""The root `haosq` app and the entry point that turns errors into exit codes.

Exit codes: 0 ok; 2 user error (one line on stderr); 1 internal error.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from typer._click import exceptions as click_errors  # typer vendors click from 0.29 on

from haosq.cli import config as config_commands
from haosq.cli import db as db_commands
from haosq.cli import demo as demo_commands
from haosq.cli import jobs as job_commands
from haosq.cli import roles as role_commands
from haosq.cli import schedules as schedule_commands
from haosq.cli import systemd as systemd_commands
from haosq.cli import tui as tui_commands
from haosq.cli import worker as worker_commands
from haosq.cli.arguments import normalise
from haosq.cli.common import state
from haosq.errors import HaosqError
from haosq.secrets import mask_text
from haosq.tui.format import visible

app = typer.Typer(
    name="haosq",
    # Plain help text: Rich's help formatter costs a tenth of a second at every --help.
    rich_markup_mode=None,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(given: bool) -> None:
    if given:
        # Imported here for start-up time: only --version reads the package metadata.
        from importlib.metadata import version

        sys.stdout.write(f"haosq {version('haosq')}\n")
        raise typer.Exit(0)


ROOT_HELP = ("haosq: a background job queue on PostgreSQL.\n\n"
             "--database-url and --config may also follow the command "
             "(haosq jobs list --config FILE), and --json may come before it (haosq --json stats).")


@app.callback(help=ROOT_HELP)
def root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="PostgreSQL URL (default: HAOSQ_DATABASE_URL, "
                     "DATABASE_URL, else the embedded server)", show_default=False),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML config file (default: HAOSQ_CONFIG, "
                     "~/.config/haosq/haosq.toml, /etc/haosq/haosq.toml)", show_default=False),
    ] = None,
    show_version: Annotated[
        bool, typer.Option("--version", help="Print haosq's version and exit.", is_eager=True,
                           callback=_print_version),
    ] = False,
) -> None:
    current = state(ctx)
    current.database_url = database_url
    current.config_file = config
    ctx.call_on_close(current.close)


job_commands.register(app)
db_commands.register(app)
systemd_commands.register(app)
role_commands.register(app)
config_commands.register(app)
worker_commands.register(app)
demo_commands.register(app)
tui_commands.register(app)
schedule_commands.register(app)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, secrets masked and control characters shown, then exit."""
    sys.stderr.write(visible(_one_line(mask_text(message))) + "\n")
    sys.exit(code)


def _refused_by_database(exc: Exception) -> bool:
    """A value the database refused (out of range, a constraint): the user's input, not a bug."""
    psycopg = sys.modules.get("psycopg")  # not imported yet: the error cannot be one of its own
    return psycopg is not None and isinstance(exc, psycopg.DataError | psycopg.IntegrityError)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else argv
    try:
        args = normalise(command, list(args))
        result = command.main(args=args, prog_name="haosq", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:
        sys.stdout.write(exc.ctx.get_help() + "\n" if exc.ctx else "")
        sys.exit(0)
    except click_errors.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "haosq"
        fail(f"{where}: {exc.format_message()} (see '{where} --help')")
    except (typer.Abort, KeyboardInterrupt):
        fail("haosq: aborted", 130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except click_errors.ClickException as exc:
        fail(f"haosq: {exc.format_message()}")
    except HaosqError as exc:
        fail(f"haosq: error: {exc}")
    except Exception as exc:
        if _refused_by_database(exc):
            fail(f"haosq: error: the database refused a value: {exc}")
        sys.stderr.write(visible(mask_text("".join(traceback.format_exception(exc)))))
        fail(f"haosq: internal error: {exc}", 1)
    sys.exit(result if isinstance(result, int) else 0)
