"""Every benchmark in one run: `python -m bench`.

    python -m bench                      # enqueue, drain + pickup, peers, scale (1M)
    python -m bench --scale-max 10000000 # add the 10M-finished-jobs scenario (long)
    python -m bench --quick              # small sizes: a smoke run, not figures to quote
    python -m bench --soak 30            # also the 30-minute soak and its held-xmin variant
    python -m bench --only enqueue,peers

Each part runs as its own process (`python -m bench.enqueue`, `bench.drain`,
`bench.peers.sweep`, `bench.scale`, `bench.soak`) and prints JSON lines; this entry point
collects them into bench/results/run-<UTC time>.jsonl (every record carries the machine:
cores, PostgreSQL version, synchronous_commit, fsync) and prints a table with the
haosq / peer ratios and the targets of the performance issue.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("enqueue", "drain", "peers", "scale", "soak")


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    runs = str(args.runs)
    if args.quick:
        return {
            "enqueue": ["bench.enqueue", "--single", "500", "--bulk", "10000", "--runs", runs],
            "drain": ["bench.drain", "--jobs", "2000", "--latency-jobs", "30", "--configs", "2x32",
                      "--runs", runs],
            "peers": ["bench.peers.sweep", "--runs", runs, "--pgqueuer-jobs", "2000",
                      "--procrastinate-jobs", "300"],
            "scale": ["bench.scale", "--scale-max", str(min(args.scale_max, 100_000)),
                      "--drain-jobs", "2000", "--runs", runs],
            "soak": ["bench.soak", "--minutes", str(args.soak or 1), "--rate", "200"],
        }
    return {
        "enqueue": ["bench.enqueue", "--runs", runs],
        "drain": ["bench.drain", "--runs", runs],
        "peers": ["bench.peers.sweep", "--runs", runs],
        "scale": ["bench.scale", "--scale-max", str(args.scale_max), "--runs", runs],
        "soak": ["bench.soak", "--minutes", str(args.soak or 30), "--held-xmin"],
    }


def run_part(module_args: list[str], sink: Any) -> list[dict[str, Any]]:
    records = []
    with subprocess.Popen([sys.executable, "-m", *module_args], cwd=ROOT, stdout=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            records.append(record)
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            print(f"  {record.get('benchmark')}: done", file=sys.stderr)
    if proc.returncode != 0:
        print(f"  {' '.join(module_args)} exited with {proc.returncode}", file=sys.stderr)
    return records


def median(value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("median")
    return float(value) if isinstance(value, int | float) else None


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


def table(records: list[dict[str, Any]]) -> str:
    by = {r["benchmark"]: r for r in records}
    drain, pickup = by.get("drain", {}), by.get("pickup_latency", {})
    pgq, proc = by.get("peers.pgqueuer", {}), by.get("peers.procrastinate", {})
    single, bulk, function = (by.get("enqueue.single_add", {}), by.get("enqueue.add_many_copy", {}),
                              by.get("enqueue.sql_function", {}))
    haosq_drain = None
    if isinstance(drain.get("haosq_jobs_per_s"), dict) and drain.get("best_config"):
        haosq_drain = median(drain["haosq_jobs_per_s"][drain["best_config"]])
    raw = median(drain.get("raw_sql_jobs_per_s"))
    pgq_drain, proc_drain = median(pgq.get("drain_jobs_per_s")), median(proc.get("drain_jobs_per_s"))
    p99 = median(pickup.get("p99_ms"))
    pgq_p99, proc_p99 = median(pgq.get("pickup_p99_ms")), median(proc.get("pickup_p99_ms"))
    add_many, pgq_bulk = median(bulk.get("jobs_per_s")), median(pgq.get("enqueue_bulk_jobs_per_s"))
    proc_bulk = median(proc.get("enqueue_bulk_jobs_per_s"))
    single_rate = median(single.get("jobs_per_s"))

    rows = [
        ("drain, no-op jobs/s", fmt(haosq_drain), fmt(pgq_drain), fmt(proc_drain), fmt(raw),
         f"{ratio(haosq_drain, pgq_drain)} / {ratio(haosq_drain, proc_drain)}",
         ">= 2x PgQueuer, >= 0.6x raw",
         verdict(None if None in (haosq_drain, pgq_drain, raw) else
                 haosq_drain >= 2 * pgq_drain and haosq_drain >= 0.6 * raw)),  # type: ignore[operator]
        ("pickup p99, ms", fmt(p99, 2), fmt(pgq_p99, 2), fmt(proc_p99, 2), "-",
         f"{ratio(pgq_p99, p99)} / {ratio(proc_p99, p99)} faster", "<= 5 ms",
         verdict(None if p99 is None else p99 <= 5)),
        ("bulk enqueue, jobs/s", fmt(add_many), fmt(pgq_bulk), fmt(proc_bulk), "-",
         f"{ratio(add_many, pgq_bulk)} / {ratio(add_many, proc_bulk)}", ">= 100,000",
         verdict(None if add_many is None else add_many >= 100_000)),
        ("single add, jobs/s", fmt(single_rate), "-", "-", "-", "-", ">= 1,500",
         verdict(None if single_rate is None else single_rate >= 1500)),
        ("SQL function add_job, jobs/s", fmt(median(function.get("jobs_per_s"))), "-", "-", "-",
         "-", "-", "-"),
    ]
    # The drain's best configuration when it was measured, else the scale run's empty table.
    best = drain.get("best_config")
    cpu_source = ({key: drain[key][best] for key in ("worker_cpu_s_per_1000", "postgres_cpu_s_per_1000")}
                  if best and isinstance(drain.get("worker_cpu_s_per_1000"), dict)
                  else by.get("scale.empty", {}))
    rows.append(("CPU s per 1,000 jobs: workers / PostgreSQL",
                 f"{fmt(median(cpu_source.get('worker_cpu_s_per_1000')), 2)} / "
                 f"{fmt(median(cpu_source.get('postgres_cpu_s_per_1000')), 2)}",
                 f"{fmt(median(pgq.get('worker_cpu_s_per_1000')), 2)} / -",
                 f"{fmt(median(proc.get('worker_cpu_s_per_1000')), 2)} / -", "-", "-", "-", "-"))
    scale = {name: r for name, r in by.items() if name.startswith("scale.")}
    empty = median(scale.get("scale.empty", {}).get("drain_jobs_per_s"))
    for name, record in scale.items():
        rate = median(record.get("drain_jobs_per_s"))
        stats_ms = median(record.get("stats_ms"))
        page_ms = median(record.get("tui_jobs_page_ms"))
        label = name.removeprefix("scale.")
        rows.append((f"scale {label}: drain jobs/s", fmt(rate), "-", "-", "-",
                     f"{ratio(rate, empty)} of empty", "within 10% of empty" if "finished" in label else "-",
                     verdict(None if rate is None or empty is None or "finished" not in label
                             else rate >= 0.9 * empty)))
        rows.append((f"scale {label}: stats / TUI page ms", f"{fmt(stats_ms, 1)} / {fmt(page_ms, 1)}",
                     "-", "-", "-", "-", "stats < 50 ms",
                     verdict(None if stats_ms is None else stats_ms < 50)))
    header = ("measure", "haosq", "PgQueuer", "Procrastinate", "raw SQL", "haosq / peers", "target", "met")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    info = next((r["machine"] for r in records if "machine" in r), {})
    notes = []
    if drain.get("best_config"):
        notes.append(f"haosq drain: best daemon configuration {drain['best_config']} "
                     "(processes x threads)")
    if pgq.get("best_config"):
        notes.append(f"PgQueuer {pgq.get('version')}: best {pgq['best_config']}")
    if proc.get("best_config"):
        notes.append(f"Procrastinate {proc.get('version')}: best {proc['best_config']}")
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    return "\n".join([f"machine: {machine}", *notes, "", *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="repetitions per measurement (median, spread)")
    parser.add_argument("--scale-max", type=int, default=1_000_000)
    parser.add_argument("--soak", type=int, default=0, metavar="MINUTES", help="also run the soak")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--only", help=f"comma-separated parts: {', '.join(PARTS)}")
    parser.add_argument("--table-from", type=Path, help="print the table of an earlier results file")
    args = parser.parse_args()

    if args.table_from:
        records = [json.loads(line) for line in args.table_from.read_text().splitlines() if line.strip()]
        print(table(records))
        return
    chosen = args.only.split(",") if args.only else [p for p in PARTS if p != "soak" or args.soak]
    unknown = set(chosen) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"run-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.jsonl"
    records: list[dict[str, Any]] = []
    plan = commands(args)
    with path.open("w") as sink:
        for part in chosen:
            print(f"{part}: python -m {' '.join(plan[part])}", file=sys.stderr)
            records += run_part(plan[part], sink)
    print(table(records))
    print(f"\nresults: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
