"""The root `haosq` app and the entry point that turns errors into exit codes.

Exit codes: 0 ok; 2 user error (one line on stderr); 1 internal error.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click import exceptions as click_errors  # typer vendors click from 0.29 on

from haosq.cli.arguments import ROOT_VALUE_OPTIONS, normalise
from haosq.cli.common import state
from haosq.errors import HaosqError
from haosq.secrets import mask_text
from haosq.tui.format import visible

# The module (haosq.cli.NAME) that defines each top-level command, in the order of the help.
# A command line that names one of them loads that module alone: every module costs its
# imports and its share of building the command tree at every start.
COMMAND_MODULES: dict[str, str] = {
    "add": "jobs", "stats": "jobs", "jobs": "jobs", "workers": "jobs",
    "migrate": "db", "db": "db",
    "systemd": "systemd",
    "roles": "roles",
    "config": "config",
    "worker": "worker",
    "demo": "demo",
    "tui": "tui",
    "schedules": "schedules",
}


def _print_version(given: bool) -> None:
    if given:
        # Imported here for start-up time: only --version reads the package metadata.
        from importlib.metadata import version

        sys.stdout.write(f"haosq {version('haosq')}\n")
        raise typer.Exit(0)


ROOT_HELP = ("haosq: a background job queue on PostgreSQL.\n\n"
             "--database-url and --config may also follow the command "
             "(haosq jobs list --config FILE), and --json may come before it (haosq --json stats).")


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


def build_app(command: str | None = None) -> typer.Typer:
    """The `haosq` app with every command, or with the module of `command` alone."""
    built = typer.Typer(
        name="haosq",
        # Plain help text: Rich's help formatter costs a tenth of a second at every --help.
        rich_markup_mode=None,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    built.callback(help=ROOT_HELP)(root)
    chosen = COMMAND_MODULES.get(command or "")
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        if chosen is None or module == chosen:
            importlib.import_module(f"haosq.cli.{module}").register(built)
    return built


def command_named(args: list[str]) -> str | None:
    """The top-level command a command line runs (None for `haosq`, `haosq --help`, ...)."""
    index = 0
    while index < len(args) and args[index].startswith("-"):
        if args[index] in ROOT_VALUE_OPTIONS:
            index += 1
        index += 1
    return args[index] if index < len(args) else None


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole app, for tools and tests that want the typer object
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(build_app(command_named(args)))
    try:
        args = normalise(command, args)
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
