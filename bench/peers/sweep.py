"""Peers in the same run: a small sweep per peer, then its best configuration measured again.

    python -m bench.peers.sweep [--runs 3] [--pgqueuer-jobs 20000] [--procrastinate-jobs 3000]

Every measurement gets a fresh scratch database on the same server as haosq's. Prints one
JSON line per peer (median and spread of the best configuration, plus the whole sweep).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

from bench.common import emit, machine, scratch_database, summary
from bench.peers.venv import ensure_venv

HERE = Path(__file__).resolve().parent

# (processes, batch): PgQueuer's default batch is 10; 100 is what its docs suggest for speed.
PGQUEUER_SWEEP = [{"processes": p, "batch": b} for p in (1, 2, 4) for b in (10, 100)]
# (processes, concurrency): Procrastinate defaults to concurrency 1.
PROCRASTINATE_SWEEP = [{"processes": p, "concurrency": c} for p in (1, 2, 4) for c in (1, 10)]


def as_url(conninfo: str) -> str:
    """A postgresql:// URL (asyncpg takes no key=value strings)."""
    if conninfo.startswith(("postgresql://", "postgres://")):
        return conninfo
    parts = conninfo_to_dict(conninfo)
    user = quote(str(parts.get("user", "postgres")))
    password = parts.get("password")
    auth = f"{user}:{quote(str(password))}@" if password else f"{user}@"
    host = parts.get("host", "127.0.0.1")
    return f"postgresql://{auth}{host}:{parts.get('port', 5432)}/{quote(str(parts['dbname']))}"


def run_peer(python: Path, script: str, options: dict[str, Any], jobs: int, pickup: int) -> dict[str, Any]:
    with scratch_database(migrated=False) as url:
        args = [str(python), str(HERE / script), "run", "--dsn", as_url(url), "--jobs", str(jobs),
                "--pickup", str(pickup)]
        for key, value in options.items():
            args += [f"--{key}", str(value)]
        result = subprocess.run(args, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{script} {options} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def sweep(python: Path, script: str, configs: list[dict[str, Any]], sweep_jobs: int,
          jobs: int, runs: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    tried = [run_peer(python, script, config, sweep_jobs, 0) | {"config": config} for config in configs]
    best = max(tried, key=lambda r: r["jobs_per_s"])["config"]
    measured = [run_peer(python, script, best, jobs, 200) for _ in range(runs)]
    return best, tried, measured


def report(name: str, version: str, best: dict[str, Any], tried: list[dict[str, Any]],
           measured: list[dict[str, Any]], info: dict[str, Any]) -> None:
    emit(
        f"peers.{name}", version=version, best_config=best, jobs=measured[0]["jobs"],
        drain_jobs_per_s=summary([m["jobs_per_s"] for m in measured]),
        worker_cpu_s_per_1000=summary([m["worker_cpu_s_per_1000"] for m in measured]),
        enqueue_bulk_jobs_per_s=summary([m["enqueue_jobs_per_s"] for m in measured]),
        pickup_p50_ms=summary([m["pickup_ms"]["p50"] for m in measured]),
        pickup_p95_ms=summary([m["pickup_ms"]["p95"] for m in measured]),
        pickup_p99_ms=summary([m["pickup_ms"]["p99"] for m in measured]),
        sweep=[{"config": t["config"], "jobs": t["jobs"], "jobs_per_s": round(t["jobs_per_s"], 1)}
               for t in tried],
        machine=info,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pgqueuer-jobs", type=int, default=20_000)
    parser.add_argument("--procrastinate-jobs", type=int, default=3_000)
    parser.add_argument("--only", choices=["pgqueuer", "procrastinate"])
    parser.add_argument("--upgrade", action="store_true", help="install the latest peer releases")
    args = parser.parse_args()
    python, versions = ensure_venv(upgrade=args.upgrade)
    with scratch_database(migrated=False) as url:
        info = machine(url)
    if args.only in (None, "pgqueuer"):
        best, tried, measured = sweep(python, "pgqueuer_run.py", PGQUEUER_SWEEP,
                                      max(args.pgqueuer_jobs // 2, 1000), args.pgqueuer_jobs, args.runs)
        report("pgqueuer", versions["pgqueuer"], best, tried, measured, info)
    if args.only in (None, "procrastinate"):
        best, tried, measured = sweep(python, "procrastinate_run.py", PROCRASTINATE_SWEEP,
                                      max(args.procrastinate_jobs // 2, 500),
                                      args.procrastinate_jobs, args.runs)
        report("procrastinate", versions["procrastinate"], best, tried, measured, info)


if __name__ == "__main__":
    main()
