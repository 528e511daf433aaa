"""What the completion-webhook trigger (migration 0005) costs the statements that finish jobs.

    python -m bench.webhooks --jobs 20000 --batch 100

Finishes the same number of processing jobs in statements of `--batch` rows (as the worker's
batched acknowledgements do), four ways: the trigger disabled; enabled with no routes and no
per-job URLs (the common case: two index probes); enabled with a route for another type (the
join runs, nothing matches); enabled with a route that matches every job (a webhook job is
enqueued per finished job). One JSON line per way.
"""

from __future__ import annotations

import argparse
import json
import time

import psycopg

from bench.common import machine, scratch_database

MODES = ("trigger_disabled", "no_routes", "route_for_other_type", "route_matches_all")


def run(url: str, mode: str, jobs: int, batch: int) -> dict[str, object]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE haosq.jobs CASCADE")
        conn.execute("DELETE FROM haosq.webhook_routes")
        conn.execute("ALTER TABLE haosq.jobs ENABLE TRIGGER jobs_enqueue_webhooks")
        if mode == "trigger_disabled":
            conn.execute("ALTER TABLE haosq.jobs DISABLE TRIGGER jobs_enqueue_webhooks")
        elif mode == "route_for_other_type":
            conn.execute("INSERT INTO haosq.webhook_routes VALUES ('other:type', 'https://h.example/x')")
        elif mode == "route_matches_all":
            conn.execute("INSERT INTO haosq.webhook_routes VALUES ('bench', 'https://h.example/x')")
        conn.execute(
            "INSERT INTO haosq.jobs (type, status, started_at, attempts) "
            "SELECT 'bench:noop', 'processing', now(), 1 FROM generate_series(1, %s)", (jobs,))
        ids = [row[0] for row in conn.execute("SELECT id FROM haosq.jobs ORDER BY id")]
        conn.execute("VACUUM ANALYZE haosq.jobs")
        started = time.perf_counter()
        for offset in range(0, len(ids), batch):
            conn.execute(
                "UPDATE haosq.jobs SET status = 'completed', completed_at = now() WHERE id = ANY(%s)",
                (ids[offset:offset + batch],))
        elapsed = time.perf_counter() - started
        webhooks = conn.execute(
            "SELECT count(*) FROM haosq.jobs WHERE type = 'haosq:webhook'").fetchone()[0]
    return {"bench": "webhooks_trigger", "mode": mode, "jobs": jobs, "batch": batch,
            "seconds": round(elapsed, 3), "jobs_per_s": round(jobs / elapsed),
            "ms_per_statement": round(elapsed / (jobs / batch) * 1000, 3),
            "webhook_jobs": webhooks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with scratch_database() as url:
        info = machine(url)
        for mode in MODES:
            print(json.dumps({**run(url, mode, args.jobs, args.batch), "machine": info}), flush=True)


if __name__ == "__main__":
    main()
