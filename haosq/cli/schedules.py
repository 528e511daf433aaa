"""`haosq schedules list|add|remove|enable|disable|run-now`: recurring jobs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from haosq.cli.common import console, local_time, out, print_json, state
from haosq.cli.jobs import MAX_INTEGER, read_payload, warn_if_unknown_type
from haosq.secrets import mask_job_fields
from haosq.tui.format import plain

schedules_app = typer.Typer(help="Recurring jobs: list, add, remove, enable, disable, run now.",
                            no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
def _existing_name(name: str) -> str:
    """A name no schedule can have (a NUL, a bad character) names no schedule."""
    # Imported here for start-up time: haosq.schedules loads the cron parser.
    from haosq.schedules import NAME_PATTERN, ScheduleNotFound

    if not NAME_PATTERN.fullmatch(name):
        raise ScheduleNotFound(f"no schedule named {name!r} (names are up to 200 letters, digits, "
                               "'.', '_', ':' or '-')")
    return name


NameArg = Annotated[str, typer.Argument(metavar="NAME", help="the schedule's name",
                                        callback=_existing_name)]
NewNameArg = Annotated[str, typer.Argument(metavar="NAME", help="the schedule's name")]


@schedules_app.command("list")
def list_schedules(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every schedule with its next due time and the outcome of its last run."""
    schedules = state(ctx).queue.schedules()
    if as_json:
        # Payloads may carry credentials: output never shows them (see haosq.secrets).
        print_json([mask_job_fields(asdict(s)) for s in schedules])
        return
    table = Table(title=f"{len(schedules)} schedule(s)", title_justify="left")
    for column in ("name", "type", "when", "timezone", "enabled", "next due", "last due",
                   "last outcome"):
        table.add_column(column)
    for s in schedules:
        table.add_row(*(plain(cell) for cell in (
            s.name, s.type, s.every, s.timezone, "yes" if s.enabled else "no",
            local_time(s.next_due_at) if s.enabled else "-", local_time(s.last_due_at),
            s.last_outcome or "-")))
    console.print(table)


@schedules_app.command("add")
def add_schedule(
    ctx: typer.Context,
    name: NewNameArg,
    job_type: Annotated[str, typer.Argument(metavar="TYPE", help="family:action, e.g. email:send")],
    cron: Annotated[str | None, typer.Option(help="5-field cron, e.g. '0 3 * * *'")] = None,
    every: Annotated[str | None, typer.Option("--every", help="an interval, e.g. 15m")] = None,
    timezone: Annotated[str, typer.Option(help="IANA timezone the cron is read in")] = "UTC",
    payload: Annotated[str | None, typer.Option(
        "--payload", "-p", help="JSON payload: a file, '-' for stdin, or inline JSON")] = None,
    priority: Annotated[int, typer.Option(help="higher runs first (-1000..1000)")] = 0,
    max_attempts: Annotated[int | None, typer.Option(
        min=1, max=MAX_INTEGER, help="attempts before a run fails")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="a tag (repeatable)")] = None,
    catch_up: Annotated[str, typer.Option(
        help="runs missed while no daemon ran: none, latest or all")] = "latest",
    catch_up_limit: Annotated[int, typer.Option(help="at most this many with 'all'")] = 10,
    disabled: Annotated[bool, typer.Option("--disabled", help="create it disabled")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="replace a schedule of this name")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a recurring schedule (give --cron or --every). A type no handler installed here
    provides is accepted with a warning (a worker elsewhere may have its handler)."""
    body = read_payload(payload)
    created = state(ctx).queue.schedule(
        name, job_type, body, cron=cron, interval=every, timezone=timezone, priority=priority,
        max_attempts=max_attempts, tags=tag or (), catch_up=catch_up,
        catch_up_limit=catch_up_limit, enabled=not disabled, replace=replace)
    if as_json:
        print_json(mask_job_fields(asdict(created)))
    else:
        out(f"added schedule {created.name} ({created.every}), next run "
            f"{local_time(created.next_due_at)}")
    warn_if_unknown_type(created.type)


@schedules_app.command("remove")
def remove_schedule(ctx: typer.Context, name: NameArg) -> None:
    """Delete a schedule (jobs it enqueued stay)."""
    state(ctx).queue.unschedule(name)
    out(f"removed schedule {name}")


@schedules_app.command("enable")
def enable_schedule(ctx: typer.Context, name: NameArg) -> None:
    """Enable a schedule; it runs next at its next due time from now."""
    found = state(ctx).queue.set_schedule_enabled(name, True)
    out(f"enabled schedule {name}, next run {local_time(found.next_due_at)}")


@schedules_app.command("disable")
def disable_schedule(ctx: typer.Context, name: NameArg) -> None:
    """Disable a schedule (no runs until enabled again)."""
    state(ctx).queue.set_schedule_enabled(name, False)
    out(f"disabled schedule {name}")


@schedules_app.command("run-now")
def run_now(ctx: typer.Context, name: NameArg, as_json: JsonFlag = False) -> None:
    """Enqueue one run now, outside the timetable."""
    job = state(ctx).queue.run_schedule_now(name)
    if as_json:
        print_json({"job_id": job.id, "type": job.type})
    else:
        out(f"enqueued job {job.id} ({job.type}) from schedule {name}")


def register(app: typer.Typer) -> None:
    app.add_typer(schedules_app, name="schedules")
