"""The `cleanup:*` job types. Every one works in batches and reports what it removed.

- cleanup:old-files        files older than N days under a configured root (never outside it)
- cleanup:expired-invites  rows past their expiry in the host application's invites table
- cleanup:audit-logs       rows older than N days in the host application's audit log table
- cleanup:job-logs         haosq's own job logs, finished jobs and sent digest items

Configuration:

    [handlers.cleanup]
    roots = ["/var/lib/myapp/uploads"]      # cleanup:old-files works only under these (HAOSQ_CLEANUP_ROOTS)
    batch_size = 1000                       # rows per delete statement
    database_url = "postgresql://..."       # the host tables' database; default: haosq's own
    job_retention_days = 90                 # cleanup:job-logs deletes jobs finished before this

    [handlers.cleanup.invites]
    table = "public.invites"
    expires_column = "expires_at"

    [handlers.cleanup.audit_logs]
    table = "audit.events"
    timestamp_column = "created_at"
    retention_days = 90                     # used when the payload gives no olderThanDays
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from time import time
from typing import Annotated, Any

import psycopg
from psycopg.rows import dict_row
from pydantic import Field

from haosq.db.queries import cleanup as cleanup_sql
from haosq.errors import ConfigError, PermanentError, Retry
from haosq.handlers.handler_config import handler_config
from haosq.handlers.pathguard import Roots, walk
from haosq.handlers.payloads import Payload, parse_payload
from haosq.handlers.registry import JobContext, handler

CLEANUP_ENV = {"roots": "HAOSQ_CLEANUP_ROOTS", "database_url": "HAOSQ_CLEANUP_DATABASE_URL"}
DEFAULT_BATCH_SIZE = 1000
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

Days = Annotated[float, Field(ge=0, le=36_500)]
BatchSize = Annotated[int, Field(ge=1, le=100_000)]


class OldFiles(Payload):
    directory: Annotated[str, Field(min_length=1)]
    older_than_days: Days
    glob: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    dry_run: bool = False
    recursive: bool = True


class ExpiredInvites(Payload):
    batch_size: BatchSize | None = None
    dry_run: bool = False


class AuditLogs(Payload):
    older_than_days: Days | None = None
    batch_size: BatchSize | None = None
    dry_run: bool = False


class JobLogs(Payload):
    older_than_days: Days = 30
    jobs_older_than_days: Days | None = None
    batch_size: BatchSize | None = None
    dry_run: bool = False


def cleanup_config(ctx: JobContext) -> dict[str, Any]:
    return handler_config(ctx, "cleanup", CLEANUP_ENV)


def batch_size(config: Mapping[str, Any], given: int | None) -> int:
    if given is not None:
        return given
    value = config.get("batch_size", DEFAULT_BATCH_SIZE)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise ConfigError(f"[handlers.cleanup] batch_size = {value!r}: expected an integer from 1 to 100000")
    return value


def _stop_if_cancelled(ctx: JobContext) -> None:
    if ctx.cancelled.is_set():
        raise Retry("stopped between batches (cancelled or shutting down); what was removed stays removed",
                    after=0)


# -- files ------------------------------------------------------------------------------------

@dataclass
class FileSweep:
    files: int = 0
    bytes: int = 0
    symlinks_skipped: int = 0
    errors: int = 0


def configured_roots(config: Mapping[str, Any]) -> list[str]:
    roots = config.get("roots") or ()
    if isinstance(roots, str):
        roots = [r for r in roots.split(os.pathsep) if r]
    result = []
    for root in roots:
        if not os.path.isabs(str(root)):
            raise ConfigError(f"[handlers.cleanup] roots: {root!r} is not an absolute path")
        result.append(os.path.normpath(str(root)))
    return result


def cleanup_roots(config: Mapping[str, Any], directory: str) -> Roots:
    """The roots cleanup:old-files may work in; `directory` must be an absolute path."""
    roots = configured_roots(config)
    if not roots:
        raise PermanentError(
            "cleanup:old-files is disabled: list the directories it may clean in roots of "
            "[handlers.cleanup] (or HAOSQ_CLEANUP_ROOTS)"
        )
    if not os.path.isabs(directory):
        raise PermanentError(
            f"invalid payload: field 'directory' must be an absolute path, got {directory!r}"
        )
    return Roots.of(roots, field="invalid payload: field 'directory'", what="cleanup root")


def sweep(fd: int, *, cutoff: float, matches: Callable[[str, str], bool], dry_run: bool,
          recursive: bool, totals: FileSweep, ctx: JobContext) -> None:
    """Remove (or count) the old files below the directory `fd`, walking iteratively by
    descriptor (haosq.handlers.pathguard.walk): any depth, no symlink followed."""

    def skipped(relative: str, reason: str) -> None:
        totals.errors += 1
        ctx.log.warn("directory skipped", path=relative, reason=reason)

    for visit in walk(fd, skipped):
        if not recursive:
            visit.descend.clear()
        for name, info in visit.entries:
            path = f"{visit.relative}/{name}" if visit.relative else name
            if stat.S_ISLNK(info.st_mode):
                totals.symlinks_skipped += 1
            elif stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff and matches(path, name):
                if not dry_run:
                    try:
                        os.unlink(name, dir_fd=visit.fd)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        totals.errors += 1
                        ctx.log.warn("cannot remove file", path=path, error=exc.strerror)
                        continue
                totals.files += 1
                totals.bytes += info.st_size
                if totals.files % 500 == 0:
                    _stop_if_cancelled(ctx)


def glob_matcher(pattern: str | None) -> Callable[[str, str], bool]:
    if pattern is None:
        return lambda path, name: True
    if "/" in pattern:
        return lambda path, name: fnmatch.fnmatchcase(path, pattern)
    return lambda path, name: fnmatch.fnmatchcase(name, pattern)


@handler("cleanup:old-files")
def old_files(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Remove files older than N days from a directory under a configured root."""
    fields = parse_payload(OldFiles, payload)
    roots = cleanup_roots(cleanup_config(ctx), fields.directory)
    totals = FileSweep()
    cutoff = time() - fields.older_than_days * 86_400
    with roots.open_directory(fields.directory) as (_, fd):
        sweep(fd, cutoff=cutoff, matches=glob_matcher(fields.glob), dry_run=fields.dry_run,
              recursive=fields.recursive, totals=totals, ctx=ctx)
    ctx.log.info("old files " + ("found" if fields.dry_run else "removed"), files=totals.files,
                 bytes=totals.bytes)
    return {"directory": fields.directory, "dry_run": fields.dry_run, "files_removed": totals.files,
            "bytes_removed": totals.bytes, "symlinks_skipped": totals.symlinks_skipped,
            "errors": totals.errors}


# -- host tables ------------------------------------------------------------------------------

def qualified_name(value: Any, where: str) -> tuple[str, ...]:
    parts = str(value).split(".") if isinstance(value, str) else []
    if not 1 <= len(parts) <= 2 or not all(_IDENTIFIER.fullmatch(p) for p in parts):
        raise ConfigError(f"[{where}] {value!r} is not a valid name: use name or schema.name (letters, "
                          "digits, underscores)")
    return tuple(parts)


@contextmanager
def host_connection(ctx: JobContext, config: Mapping[str, Any]) -> Iterator[psycopg.Connection[Any]]:
    url = config.get("database_url")
    if url:
        with psycopg.connect(str(url), autocommit=True, row_factory=dict_row) as conn:
            yield conn
    else:
        with ctx.connection() as conn:
            yield conn


def purge_table(ctx: JobContext, config: Mapping[str, Any], section: str, column_key: str,
                age: timedelta, size: int, dry_run: bool) -> dict[str, Any]:
    where = f"handlers.cleanup.{section}"
    table_config = config.get(section)
    if not isinstance(table_config, Mapping) or "table" not in table_config or column_key not in table_config:
        raise ConfigError(f"[{where}] needs table and {column_key} (the host application's table and column)")
    table = qualified_name(table_config["table"], where)
    column = qualified_name(table_config[column_key], where)
    if len(column) != 1:
        raise ConfigError(f"[{where}] {column_key} must be a plain column name")
    deleted = batches = 0
    with host_connection(ctx, config) as conn:
        if not cleanup_sql.column_exists(conn, table, column[0]):
            raise ConfigError(f"[{where}] table {'.'.join(table)} with column {column[0]} does not exist")
        if dry_run:
            count = cleanup_sql.count_older(conn, table, column[0], age)
            return {"table": ".".join(table), "dry_run": True, "rows_deleted": count, "batches": 0}
        while True:
            removed = cleanup_sql.delete_older_batch(conn, table, column[0], age, size)
            deleted += removed
            batches += 1
            if removed < size:
                break
            _stop_if_cancelled(ctx)
    ctx.log.info("rows deleted", table=".".join(table), rows=deleted, batches=batches)
    return {"table": ".".join(table), "dry_run": False, "rows_deleted": deleted, "batches": batches}


@handler("cleanup:expired-invites")
def expired_invites(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Delete invites past their expiry from the host application's table."""
    fields = parse_payload(ExpiredInvites, payload)
    config = cleanup_config(ctx)
    return purge_table(ctx, config, "invites", "expires_column", timedelta(0),
                       batch_size(config, fields.batch_size), fields.dry_run)


@handler("cleanup:audit-logs")
def audit_logs(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Delete audit log rows older than N days from the host application's table."""
    fields = parse_payload(AuditLogs, payload)
    config = cleanup_config(ctx)
    days = fields.older_than_days
    if days is None:
        days = (config.get("audit_logs") or {}).get("retention_days")
        if days is None:
            raise PermanentError("invalid payload: field 'olderThanDays' is required "
                                 "(no retention_days in [handlers.cleanup.audit_logs])")
    return purge_table(ctx, config, "audit_logs", "timestamp_column", timedelta(days=float(days)),
                       batch_size(config, fields.batch_size), fields.dry_run)


# -- haosq's own history ------------------------------------------------------------------------

@handler("cleanup:job-logs")
def job_logs(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Delete old job logs, and finished jobs and sent digest items past retention."""
    fields = parse_payload(JobLogs, payload)
    config = cleanup_config(ctx)
    size = batch_size(config, fields.batch_size)
    # Finished jobs go after the configured retention, else with their logs (the seed's
    # "clean up old completed jobs" with one olderThanDays).
    jobs_days = fields.jobs_older_than_days
    if jobs_days is None:
        retention = config.get("job_retention_days")
        jobs_days = float(retention) if retention is not None else fields.older_than_days
    plan = [("jobs", jobs_days), ("job_logs", fields.older_than_days),
            ("digest_items", fields.older_than_days)]
    counts = {"job_logs": 0, "jobs": 0, "digest_items": 0}
    with ctx.connection() as conn:
        for what, days in plan:
            age = timedelta(days=days)
            if fields.dry_run:
                counts[what] = cleanup_sql.count_history(conn, what, age)
                continue
            while True:
                removed = cleanup_sql.delete_history_batch(conn, what, age, size)
                counts[what] += removed
                if removed < size:
                    break
                _stop_if_cancelled(ctx)
    ctx.log.info("history pruned", **counts)
    return {"dry_run": fields.dry_run, "job_logs_deleted": counts["job_logs"],
            "jobs_deleted": counts["jobs"], "digest_items_deleted": counts["digest_items"]}
