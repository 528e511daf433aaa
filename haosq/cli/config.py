"""`haosq config show|check`: the effective configuration and its validation.

`show` lists every setting with its value and where it came from (default, the config file,
an environment variable, the command line), secrets masked. `check` reads everything the
daemon would read (settings, [maintenance], [[schedules]], [webhooks], [metrics], [groups])
and exits 2 with the exact key at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.table import Table

from haosq.cli.common import console, out, print_json, state
from haosq.config import Settings, group_options
from haosq.errors import ConfigError
from haosq.tui.format import plain, safe_json

config_app = typer.Typer(help="Show and check the configuration.", no_args_is_help=True)

METRICS_KEYS = {"host", "port"}


@config_app.command("show")
def show(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every setting with its value and source; secrets masked. Without a database URL,
    haosq uses the embedded server (`haosq db status` tells where it is)."""
    settings = state(ctx).settings
    rows = settings.describe() + settings.describe_sections()
    database = "configured" if settings.database_url else "embedded"
    if as_json:
        print_json({
            "config_file": str(settings.config_file) if settings.config_file else None,
            "database": database,
            "data_dir": str(settings.data_dir) if database == "embedded" else None,
            "settings": [{"key": k, "value": v, "source": s} for k, v, s in rows],
        })
        return
    where = settings.config_file or "none found (defaults and environment only)"
    out(f"config file: {where}")
    if database == "embedded":
        out(f"database: embedded server (no database_url set), data in {settings.data_dir}")
    table = Table(show_header=True, box=None)
    for column in ("key", "value", "source"):
        table.add_column(column, overflow="fold")
    for key, value, source in rows:
        if key == "database_url" and value is None:
            value = "(unset: the embedded server)"
        shown = value if isinstance(value, str) else safe_json(value, indent=None)
        table.add_row(plain(key), plain(shown), plain(source))
    console.print(table)


def _groups(section: Any, where: str) -> None:
    if not isinstance(section, Mapping):
        raise ConfigError("[groups]: expected tables, one per worker group ([groups.email])")
    known = group_options()
    for name, table in section.items():
        place = f"[groups.{name}]"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{place}: expected a table")
        for key, raw in table.items():
            option = known.get(key)
            if option is None:
                raise ConfigError(f"{place}: unknown key {key!r} (known: {', '.join(sorted(known))})")
            try:
                option.parse(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where} {place} {key} = {raw!r} is invalid: {exc}") from None


def _metrics(section: Any) -> None:
    if not isinstance(section, Mapping):
        raise ConfigError("[metrics]: expected a table")
    unknown = sorted(set(section) - METRICS_KEYS)
    if unknown:
        raise ConfigError(f"[metrics]: unknown key {unknown[0]!r} (known: host, port)")
    port = section.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        raise ConfigError(f"[metrics] port = {port!r}: expected 0 to 65535")
    if "host" in section and not isinstance(section["host"], str):
        raise ConfigError(f"[metrics] host = {section['host']!r}: expected an address")


def check_settings(settings: Settings) -> list[str]:
    """Validate every section the daemon reads; raises ConfigError naming the key at fault.
    Returns what was checked, for the report."""
    from haosq import schedules
    from haosq.daemon.maintenance import load_maintenance_config
    from haosq.webhooks import load_webhook_config

    where = str(settings.config_file or "config")
    checked = ["settings"]
    sections = settings.sections
    load_maintenance_config(settings)
    checked.append("[maintenance]")
    try:
        schedules.load_config_schedules(sections, where, settings["max_payload_bytes"])
    except schedules.InvalidSchedule as exc:
        raise ConfigError(str(exc)) from None
    checked.append("[[schedules]]")
    if "webhooks" in sections:
        load_webhook_config(settings)
        checked.append("[webhooks]")
    if "groups" in sections:
        _groups(sections["groups"], where)
        checked.append("[groups]")
    if "metrics" in sections:
        _metrics(sections["metrics"])
        checked.append("[metrics]")
    handlers = sections.get("handlers", {})
    if not isinstance(handlers, Mapping) or not all(isinstance(t, Mapping) for t in handlers.values()):
        raise ConfigError("[handlers]: expected tables, one per handler family ([handlers.email])")
    return checked


@config_app.command("check")
def check(ctx: typer.Context) -> None:
    """Validate the configuration; exit 2 naming the key at fault."""
    settings = state(ctx).settings  # parsing errors name their key already
    checked = check_settings(settings)
    where = settings.config_file or "no config file"
    out(f"configuration ok ({where}): {', '.join(checked)}")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
