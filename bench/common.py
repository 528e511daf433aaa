"""What every benchmark shares: a scratch database, the machine's description, JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from haosq.db.migrate import migrate

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get("HAOSQ_BENCH_DATABASE_URL", DEFAULT_SERVER)


@contextlib.contextmanager
def scratch_database(migrated: bool = True) -> Iterator[str]:
    """A new database for one benchmark, dropped afterwards."""
    server = server_url()
    name = f"haosq_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # Every measurement starts from a checkpointed server, so that the writes of the
        # previous one (flushed by a checkpoint that would otherwise land in the middle of
        # this one) do not show up in its figures. Needs a superuser; skipped otherwise.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")
    url = make_conninfo(server, dbname=name)
    try:
        if migrated:
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def machine(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        settings = {
            name: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]
            for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
        }
    return {"cores": os.cpu_count(), "python": sys.version.split()[0], **settings}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(samples: list[float]) -> dict[str, float]:
    """Median and spread of repeated measurements."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "runs": len(samples),
    }


def emit(benchmark: str, **fields: Any) -> dict[str, Any]:
    record = {"benchmark": benchmark, "at": datetime.now(UTC).isoformat(timespec="seconds"), **fields}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
    return record
