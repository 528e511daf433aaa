"""What each index of haosq.jobs costs, and what making the listing indexes partial saved.

    python -m bench.schema_costs [--rows 100000] [--runs 3]

For each schema variant (as migrated, where migration 0006 made the listing indexes
`jobs_type_id`, `jobs_tags`, `jobs_status_id` partial on finished rows; without one index at
a time; and before 0006, those three covering every row):

- WAL records and bytes per job for its insert, its claim and its completion, read from
  `EXPLAIN (ANALYZE, WAL)` of each statement: deterministic, so that a comparison does not
  depend on how busy the machine is (every status change is a non-HOT update: `status` is in
  index predicates, so each one inserts into every index that covers the new row version);
- server-side insert throughput (`INSERT ... SELECT generate_series`, no client in the way);
- claim + completion throughput over a backlog of `--backlog` pending jobs (20,000 jobs,
  50 per claim, pinned plans as the daemon does).

Each variant is built in a scratch database from the migrated schema; nothing is changed in
the project's migrations.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from typing import Any

import psycopg
from psycopg import sql

from bench.common import emit, machine, scratch_database
from bench.scale import LOAD_PENDING, bulk_load
from haosq.db.queries import claims
from haosq.db.queries.claims import TypeFilter

BEFORE_0006 = [
    "DROP INDEX haosq.jobs_tags", "DROP INDEX haosq.jobs_type_id", "DROP INDEX haosq.jobs_status_id",
    "CREATE INDEX jobs_type_id ON haosq.jobs (type, id DESC)",
    "CREATE INDEX jobs_tags ON haosq.jobs USING gin (tags)",
    "CREATE INDEX jobs_status_id ON haosq.jobs (status, id DESC)",
]
VARIANTS: dict[str, list[str]] = {
    "as migrated": [],
    "without jobs_tags": ["DROP INDEX haosq.jobs_tags"],
    "without jobs_type_id": ["DROP INDEX haosq.jobs_type_id"],
    "without jobs_status_id": ["DROP INDEX haosq.jobs_status_id"],
    "without jobs_completed_at": ["DROP INDEX haosq.jobs_completed_at"],
    "without jobs_pending_due": ["DROP INDEX haosq.jobs_pending_due"],
    "before 0006: listing indexes on every row": BEFORE_0006,
}
INSERT = ("INSERT INTO haosq.jobs (type, payload) SELECT 'bench:noop', "
          "jsonb_build_object('i', g, 'to', 'user@example.com') FROM generate_series(1, %s) g")
COMPLETE = ("UPDATE haosq.jobs SET status = 'completed', completed_at = now(), result = 'null' "
            "WHERE id = ANY(%s) AND status = 'processing'")
TYPES = TypeFilter.from_selectors(["bench"])
TOKEN = "00000000-0000-0000-0000-000000000000"
WAL = re.compile(r"WAL: records=(\d+)(?: fpi=\d+)? bytes=(\d+)")


def wal_of(conn: psycopg.Connection[Any], statement: Any, params: Any = None) -> tuple[int, int]:
    """WAL records and bytes of one statement (its top plan node)."""
    rows = conn.execute(sql.SQL("EXPLAIN (ANALYZE, WAL, COSTS OFF, TIMING OFF) ") + (
        sql.SQL(statement) if isinstance(statement, str) else statement), params).fetchall()
    found = WAL.search("\n".join(r[0] for r in rows))
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def claim(conn: psycopg.Connection[Any], limit: int, *, explain: bool = False) -> Any:
    params = claims.claim_params(TYPES, limit, worker_id="bench", pid=0, token=TOKEN, now=None)
    with conn.transaction():
        claims.pin_plans(conn)
        if explain:
            return wal_of(conn, claims.claim_query(TYPES), params)
        return [r[0] for r in conn.execute(claims.claim_query(TYPES), params).fetchall()]


def wal_per_job(url: str, statements: list[str], rows: int) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
        insert = wal_of(conn, INSERT, (rows,))
        conn.execute("VACUUM ANALYZE haosq.jobs")
        claimed = [0, 0]
        completed = [0, 0]
        jobs = 0
        for _ in range(20):
            records, size = claim(conn, 100, explain=True)
            claimed[0] += records
            claimed[1] += size
            held = [r[0] for r in conn.execute("SELECT id FROM haosq.jobs WHERE status = 'processing'")]
            records, size = wal_of(conn, COMPLETE, (held,))
            completed[0] += records
            completed[1] += size
            jobs += len(held)
    return {
        "insert_records": round(insert[0] / rows, 2), "insert_bytes": round(insert[1] / rows),
        "claim_records": round(claimed[0] / jobs, 2), "complete_records": round(completed[0] / jobs, 2),
        "lifecycle_records": round(insert[0] / rows + (claimed[0] + completed[0]) / jobs, 2),
        "lifecycle_bytes": round(insert[1] / rows + (claimed[1] + completed[1]) / jobs),
    }


def insert_rate(url: str, statements: list[str], rows: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
        started = time.perf_counter()
        conn.execute(INSERT, (rows,))
        return rows / (time.perf_counter() - started)


def backlog_rate(url: str, statements: list[str], backlog: int, jobs: int = 20_000) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
    bulk_load(url, LOAD_PENDING, backlog)
    with psycopg.connect(url, autocommit=True) as conn:
        done = 0
        started = time.perf_counter()
        while done < jobs:
            ids = claim(conn, 50)
            conn.execute(COMPLETE, (ids,))
            done += len(ids)
        return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per insert measurement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=1_000_000,
                        help="pending jobs under the claim measurement (0 to skip it)")
    args = parser.parse_args()
    with scratch_database(migrated=False) as url:
        info = machine(url)
    for name, statements in VARIANTS.items():
        with scratch_database() as url:
            wal = wal_per_job(url, statements, min(args.rows, 10_000))
        rates = []
        for _ in range(args.runs):
            with scratch_database() as url:
                rates.append(insert_rate(url, statements, args.rows))
        backlog: list[float] = []
        if args.backlog and name in ("as migrated", next(reversed(VARIANTS))):
            for _ in range(args.runs):
                with scratch_database() as url:
                    backlog.append(backlog_rate(url, statements, args.backlog))
        emit("schema_costs", variant=name, wal_per_job=wal,
             server_insert_rows_per_s=round(statistics.median(rates)),
             backlog_claim_complete_jobs_per_s=round(statistics.median(backlog)) if backlog else None,
             backlog=args.backlog, machine=info)


if __name__ == "__main__":
    main()
