"""`haosq demo`: see the queue work in under a minute, on a fresh machine.

Enqueues a mix of `demo:*` jobs under a tag of its own (echo, sleep, some that fail and then
succeed on a retry, one permanent failure, one scheduled a few seconds ahead), runs a worker
in this process until all of them are finished, with a progress bar, then prints the stats.
Without DATABASE_URL it uses the embedded PostgreSQL server, says where its data is, and
that the server keeps running afterwards (`haosq db stop` stops it).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from datetime import timedelta
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from haosq.cli.common import console, state
from haosq.cli.jobs import stats
from haosq.db.embedded import embedded_pgdata
from haosq.db.queries.jobs import JobFilter
from haosq.errors import HaosqError
from haosq.queue import JobSpec

FINISHED = ("completed", "failed", "cancelled")


def demo_jobs(tag: str, count: int) -> list[JobSpec]:
    """The demo's jobs: mostly quick ones, a few retries, one failure, one scheduled."""
    specs: list[JobSpec] = []
    for i in range(count):
        specs.append(JobSpec("demo:echo", {"value": {"n": i, "greeting": "hello"}}, tags=(tag,),
                             priority=i % 3))
    for i in range(max(count // 5, 2)):
        specs.append(JobSpec("demo:sleep", {"seconds": 0.2 + 0.1 * (i % 4)}, tags=(tag,)))
    for i in range(3):
        specs.append(JobSpec("demo:fail", {"succeed_on_attempt": 2 + i % 2}, tags=(tag,),
                             max_attempts=3))
    specs.append(JobSpec("demo:fail", {"permanent": True, "message": "this one fails on purpose"},
                         tags=(tag,)))
    return specs


def demo(
    ctx: typer.Context,
    count: Annotated[int, typer.Option("--count", help="how many echo jobs", min=1, max=10000)] = 40,
    delay: Annotated[float, typer.Option("--schedule-delay",
                                         help="seconds ahead for the scheduled job", min=0)] = 3.0,
) -> None:
    """Enqueue demo jobs, run them in a worker here, then show the stats."""
    import haosq.handlers.demo  # noqa: F401  (the demo:* handlers)
    from haosq.daemon.service import WorkerService

    cli = state(ctx)
    logging.getLogger("haosq").setLevel(logging.WARNING)
    tag = f"demo-{uuid.uuid4().hex[:8]}"
    queue = cli.queue
    embedded = not cli.settings.database_url
    pgdata = embedded_pgdata(cli.settings).absolute()
    where = f"the embedded PostgreSQL server, data in {pgdata}" if embedded else "the configured database"
    console.print(f"haosq demo: {where}, tag {tag}", markup=False, soft_wrap=True)
    specs = demo_jobs(tag, count)
    queue.add_many(specs)
    scheduled = queue.add("demo:echo", {"value": "I was scheduled"}, tags=[tag],
                          scheduled_at=queue.clock.now() + timedelta(seconds=delay))
    total = len(specs) + 1

    settings = cli.settings.with_overrides(**{
        "worker.concurrency": 4,
        "worker.types": "demo",
        "worker.id": f"demo-{os.getpid()}",
        "worker.poll_interval_ms": 200,
        "worker.heartbeat_interval_ms": 2000,
        "worker.backoff_base_seconds": 0.3,
        "worker.backoff_cap_seconds": 1.0,
        "worker.shutdown_timeout_seconds": 2.0,
    })
    service = WorkerService(settings, database=queue.db)
    service.start()
    by_status: dict[str, int] = {}
    try:
        with Progress(TextColumn("[bold]running demo jobs"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            task = progress.add_task("demo", total=total, detail="")
            deadline = time.monotonic() + 55
            while True:
                by_status = {status: queue.count(JobFilter(tag=tag, status=status))
                             for status in (*FINISHED, "processing")}
                done = sum(by_status[s] for s in FINISHED)
                progress.update(task, completed=done, detail=(
                    f"ok {by_status['completed']}  failed {by_status['failed']}  "
                    f"running {by_status['processing']}"))
                if done >= total:
                    break
                if time.monotonic() > deadline:
                    raise HaosqError(f"the demo did not finish in time ({done} of {total} jobs done)")
                time.sleep(0.1)
    finally:
        service.stop(timeout=2.0)
    late = queue.get(scheduled.id)
    console.print(
        f"{by_status['completed']} completed, {by_status['failed']} failed (one on purpose: "
        f"a permanent error); the scheduled job ran at "
        f"{late.started_at.astimezone().strftime('%H:%M:%S') if late.started_at else '-'}; "
        f"retried jobs succeeded after backoff. Inspect them with: haosq jobs list --tag {tag}",
        markup=False,
    )
    stats(ctx)
    if embedded:
        console.print(f"The embedded server keeps running for the next haosq command (data in "
                      f"{pgdata}); stop it with: haosq db stop", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
