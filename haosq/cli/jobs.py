"""Producer and operator commands: add, jobs, stats, workers (the seed's admin API)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from haosq.cli.common import (
    console,
    duration_option,
    local_time,
    out,
    print_json,
    state,
    warn,
)
from haosq.durations import format_duration
from haosq.errors import ConfigError, InvalidJob
from haosq.models import Job, JobStatus
from haosq.secrets import mask_job_fields, mask_text, mask_value
from haosq.tui.format import (  # one palette and one way of showing data for the CLI and the TUI
    LEVEL_STYLE,
    STATUS_STYLE,
    age,
    plain,
    safe_json,
    shown_error,
)

jobs_app = typer.Typer(help="List, inspect, retry and cancel jobs.", no_args_is_help=True)
workers_app = typer.Typer(help="List workers and clean up dead ones.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
# The largest values PostgreSQL's integer and bigint columns hold.
MAX_INTEGER = 2**31 - 1
MAX_JOB_ID = 2**63 - 1



def read_payload(source: str | None) -> dict[str, Any]:
    """--payload takes '-' (stdin), a file path, or inline JSON."""
    if source is None:
        return {}
    if source == "-":
        text, origin = sys.stdin.read(), "standard input"
    elif source.lstrip()[:1] in ("{", "[", '"') or not Path(source).is_file():
        text, origin = source, "--payload"
    else:
        try:
            text, origin = Path(source).read_text(), source
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidJob(f"cannot read payload file {source}: {exc}") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "" if origin != "--payload" or text.lstrip()[:1] in ("{", "[") else (
            " (nor is it an existing file)")
        raise InvalidJob(f"payload from {origin} is not valid JSON{hint}: {exc}") from None
    except ValueError as exc:  # an integer of thousands of digits
        raise InvalidJob(f"payload from {origin} holds a number out of range: {exc}") from None
    except RecursionError:
        raise InvalidJob(f"payload from {origin} is nested too deeply") from None
    if not isinstance(payload, dict):
        raise InvalidJob(f"payload from {origin} must be a JSON object, got {type(payload).__name__}")
    return payload


def parse_at(text: str, now: datetime, *, allow_past: bool) -> datetime:
    """--at: an ISO date-time, local when it has no offset; the past only with --allow-past."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidJob(f"--at {text!r} is not an ISO date-time (e.g. 2026-12-01T09:00)") from None
    try:
        if moment.tzinfo is None:
            moment = moment.astimezone()  # an operator's naive time is their local time
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidJob(f"--at {text!r} is out of range (years 1 to 9999)") from None
    if moment < now and not allow_past:
        raise InvalidJob(f"--at {text!r} is in the past (it is {local_time(now)} now): give a later "
                         "time, or add --allow-past to run the job at once")
    return moment


def warn_if_unknown_type(job_type: str) -> None:
    """A warning on stderr when no handler installed here provides `job_type`. Only a warning:
    producers enqueue for workers on other hosts, with handlers of their own."""
    # Imported here for start-up time: the registry is only needed once a job was enqueued.
    from haosq.handlers.registry import BUILTIN_TYPES, REGISTRY, load_entry_points

    if job_type in BUILTIN_TYPES or REGISTRY.find(job_type) is not None:
        return
    try:
        load_entry_points()
    except ConfigError as exc:
        warn(f"{exc}")
    if REGISTRY.find(job_type) is None:
        warn(f"no handler for {job_type} is installed here (not a built-in type, and no "
             "haosq.handlers entry point provides it): the job waits for a worker that has one "
             "(haosq worker --import YOUR_MODULE)")


def before(now: datetime, window: timedelta | None, option: str) -> datetime | None:
    """`now - window`, or a clear error when that lies before the year 1."""
    if window is None:
        return None
    try:
        return now - window
    except OverflowError:
        raise InvalidJob(f"{option}: reaches back before the year 1") from None


def display_status(job: Job, now: datetime) -> str:
    return "scheduled" if job.is_scheduled(now) else job.status.value


def job_row(job: Job, now: datetime) -> dict[str, Any]:
    data = {name: getattr(job, name) for name in job.__dataclass_fields__}
    data["status"] = job.status.value
    data["display_status"] = display_status(job, now)
    # Payloads may carry credentials: output never shows them (see haosq.secrets).
    return mask_job_fields(data)


def add(
    ctx: typer.Context,
    job_type: Annotated[str, typer.Argument(metavar="TYPE", help="family:action, e.g. email:send")],
    payload: Annotated[str | None, typer.Option(
        "--payload", "-p", help="JSON payload: a file, '-' for stdin, or inline JSON")] = None,
    priority: Annotated[int, typer.Option(help="higher runs first (-1000..1000)")] = 0,
    max_attempts: Annotated[int | None, typer.Option(
        min=1, max=MAX_INTEGER, help="attempts before the job fails")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="a tag (repeatable)")] = None,
    at: Annotated[str | None, typer.Option(
        "--at", help="run at this ISO time (local time when no offset is given); a time in the "
        "past is refused unless --allow-past")] = None,
    allow_past: Annotated[bool, typer.Option(
        "--allow-past", help="accept an --at in the past: the job is due at once")] = False,
    delay: Annotated[str | None, typer.Option("--in", help="run after a delay, e.g. 10m")] = None,
    timeout: Annotated[float | None, typer.Option(help="time limit per attempt, seconds")] = None,
    created_by: Annotated[str | None, typer.Option(help="who enqueued it")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Enqueue a job. A type no handler installed here provides is enqueued with a warning
    (a worker elsewhere may have its handler)."""
    if at and delay:
        raise InvalidJob("give --at or --in, not both")
    body = read_payload(payload)
    queue = state(ctx).queue
    scheduled_at = None
    if at:
        scheduled_at = parse_at(at, queue.clock.now(), allow_past=allow_past)
    elif delay:
        offset = duration_option(delay, "--in")
        assert offset is not None
        try:
            scheduled_at = queue.clock.now() + offset
        except OverflowError:
            raise InvalidJob(f"--in {delay}: too far in the future") from None
    job = queue.add(job_type, body, priority=priority, max_attempts=max_attempts,
                    scheduled_at=scheduled_at, tags=tag or (), created_by=created_by,
                    timeout=timeout)
    if as_json:
        print_json(job_row(job, queue.clock.now()))
    else:
        when = "" if scheduled_at is None else f", scheduled for {local_time(job.scheduled_at)}"
        out(f"added job {job.id} ({job.type}{when})")
    warn_if_unknown_type(job.type)


@jobs_app.command("list")
def list_jobs(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(
        help="pending, scheduled, processing, completed, failed or cancelled")] = None,
    job_type: Annotated[str | None, typer.Option("--type", help="a type or a family")] = None,
    tag: Annotated[str | None, typer.Option(help="jobs with this tag")] = None,
    search: Annotated[str | None, typer.Option(help="an id, or text in the error")] = None,
    since: Annotated[str | None, typer.Option(help="created within, e.g. 1h")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    before_id: Annotated[int | None, typer.Option(
        min=1, max=MAX_JOB_ID, help="page: ids below this")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List jobs, newest first."""
    queue = state(ctx).queue
    now = queue.clock.now()
    created_after = before(now, duration_option(since, "--since"), f"--since {since}")
    jobs = queue.list(status=status, type=job_type, tag=tag, search=search, limit=limit,
                      before_id=before_id, created_after=created_after)
    if as_json:
        print_json([job_row(j, now) for j in jobs])
        return
    table = Table(title=f"{len(jobs)} job(s)", title_justify="left")
    for column in ("id", "type", "status", "pri", "att", "created", "error"):
        table.add_column(column, overflow="fold" if column == "error" else "ellipsis")
    for job in jobs:
        shown = display_status(job, now)
        attempts = f"{job.attempts}/{job.max_attempts}" if job.max_attempts else str(job.attempts)
        table.add_row(plain(job.id), plain(job.type), plain(shown, STATUS_STYLE.get(shown, "")),
                      plain(job.priority), plain(attempts), plain(local_time(job.created_at)),
                      plain(shown_error(job.error, first_line=True, limit=80)))
    console.print(table)


@jobs_app.command("show")
def show_job(ctx: typer.Context, job_id: int, as_json: JsonFlag = False) -> None:
    """Show every field of a job."""
    queue = state(ctx).queue
    job = queue.get(job_id)
    now = queue.clock.now()
    if as_json:
        print_json(job_row(job, now))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in job_row(job, now).items():
        if name in ("payload", "result"):
            value = value if isinstance(value, str) else safe_json(value)
        elif isinstance(value, datetime):
            value = local_time(value)
        table.add_row(name, plain(value, one_line=False))
    console.print(table)


JobIds = Annotated[list[int], typer.Argument(metavar="JOB_ID...")]


@jobs_app.command("retry")
def retry_jobs(ctx: typer.Context, job_ids: JobIds) -> None:
    """Send failed jobs back to the queue. All or nothing: when one of the jobs does not exist
    or is not failed, no job is retried."""
    for job in state(ctx).queue.retry_all(job_ids):
        out(f"job {job.id} is {job.status.value} again")


@jobs_app.command("cancel")
def cancel_jobs(ctx: typer.Context, job_ids: JobIds) -> None:
    """Cancel pending jobs; ask workers to stop running ones. All or nothing: when one of the
    jobs does not exist or has finished, nothing changes."""
    for job in state(ctx).queue.cancel_all(job_ids):
        if job.status is JobStatus.CANCELLED:
            out(f"job {job.id} cancelled")
        else:
            out(f"job {job.id} is running: its worker was asked to stop it")


@jobs_app.command("logs")
def job_logs(ctx: typer.Context, job_id: int, as_json: JsonFlag = False) -> None:
    """Show a job's log lines."""
    logs = [replace(line, message=mask_text(line.message), metadata=mask_value(line.metadata))
            for line in state(ctx).queue.logs(job_id)]
    if as_json:
        print_json(logs)
        return
    for line in logs:
        attempt = f"#{line.attempt} " if line.attempt else ""
        meta = f" {safe_json(line.metadata, indent=None)}" if line.metadata else ""
        level = plain(f"{line.level:5}", LEVEL_STYLE.get(line.level, ""))
        out(f"{local_time(line.created_at)} {attempt}", level, " ",
            plain(f"{line.message}{meta}", one_line=False))


def stats(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Queue statistics: counts by status and type, success and failure rates."""
    result = state(ctx).queue.stats()
    if as_json:
        print_json({
            "by_status": result.by_status | {"scheduled": result.scheduled},
            "by_type": result.by_type,
            "success_rate": result.success_rate,
            "failure_rate": result.failure_rate,
            "oldest_pending_age_seconds": result.oldest_pending_age_seconds,
        })
        return
    counts = Table(title="jobs by status", title_justify="left")
    order = ["pending", "scheduled", "processing", "completed", "failed", "cancelled"]
    for name in order:
        counts.add_column(name, justify="right", style=STATUS_STYLE[name])
    merged = result.by_status | {"scheduled": result.scheduled}
    counts.add_row(*(f"{merged.get(name, 0):,}" for name in order))
    console.print(counts)
    rate = result.success_rate
    out(f"success rate: {'-' if rate is None else f'{rate:.1%}'}   "
        f"oldest pending: {format_duration(result.oldest_pending_age_seconds)}")
    if result.by_type:
        types = Table(title="jobs by type", title_justify="left")
        types.add_column("type")
        for name in order:
            if name != "scheduled":
                types.add_column(name, justify="right")
        for job_type, by_status in sorted(result.by_type.items()):
            types.add_row(plain(job_type), *(f"{by_status.get(n, 0):,}" for n in order if n != "scheduled"))
        console.print(types)


@workers_app.command("list")
def list_workers(
    ctx: typer.Context,
    include_gone: Annotated[bool, typer.Option("--all", help="include stopped and dead")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List workers with their health and counts."""
    queue = state(ctx).queue
    workers = queue.workers(include_gone=include_gone)
    if as_json:
        print_json(workers)
        return
    now = queue.clock.now()
    table = Table(title=f"{len(workers)} worker(s)", title_justify="left")
    for column in ("worker", "host", "pid", "status", "busy", "types", "done", "ok", "failed",
                   "heartbeat"):
        table.add_column(column)
    for w in workers:
        table.add_row(*(plain(cell) for cell in (
            w.worker_id, w.hostname, w.pid, w.status, f"{w.busy}/{w.concurrency}",
            ",".join(w.job_types) or "all", w.jobs_processed, w.jobs_succeeded, w.jobs_failed,
            age(now, w.last_heartbeat, ago=" ago"))))
    console.print(table)


@workers_app.command("cleanup")
def cleanup_workers(
    ctx: typer.Context,
    timeout: Annotated[str, typer.Option(help="silent for longer than this = dead")] = "5m",
) -> None:
    """Mark silent workers dead and send their jobs back to the queue."""
    window = duration_option(timeout, "--timeout")
    assert window is not None
    queue = state(ctx).queue
    before(queue.clock.now(), window, f"--timeout {timeout}")
    dead, rescued = queue.cleanup_dead_workers(window)
    names = f": {', '.join(dead)}" if dead else ""
    out(f"{len(dead)} worker(s) marked dead{names}; {rescued} job(s) rescued")


def register(app: typer.Typer) -> None:
    app.command("add")(add)
    app.command("stats")(stats)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(workers_app, name="workers")
