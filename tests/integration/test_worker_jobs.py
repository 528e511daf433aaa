"""The worker in this process against a real database: ordering, filtering, retries and
backoff (with a frozen clock), errors, timeouts, cancel, the process executor, hooks."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import tests.integration.worker_handlers  # noqa: F401  (registers the test:* handlers)
from haosq.clock import FrozenClock
from haosq.config import Settings
from haosq.daemon.execution import RetryPolicy, backoff_delay
from haosq.daemon.service import WorkerService
from haosq.daemon.worker import JobWorker
from haosq.db.queries import claims
from haosq.db.queries.claims import Ack, ClaimPosition, TypeFilter, explain_ack, explain_claim
from haosq.db.queries.jobs import database_now
from haosq.errors import WorkerIdInUse
from haosq.queue import JobQueue
from tests.integration.worker_support import (
    create_executions,
    executions,
    job_row,
    wait_status,
    wait_until,
)

FAST = {
    "worker.heartbeat_interval_ms": 200,
    "worker.poll_interval_ms": 50,
    "worker.shutdown_timeout_seconds": 1.0,
}


@pytest.fixture
def start_worker(settings: Settings, conn: psycopg.Connection) -> Iterator[Callable[..., WorkerService]]:
    create_executions(conn)
    services: list[WorkerService] = []

    def start(**kwargs: Any) -> WorkerService:
        overrides = {**FAST, **kwargs.pop("overrides", {})}
        service = WorkerService(settings.with_overrides(**overrides), **kwargs)
        services.append(service)
        service.start()
        return service

    yield start
    for service in services:
        service.stop(timeout=0.5)


def test_claim_plan_uses_the_partial_claim_index(queue: JobQueue, conn: psycopg.Connection) -> None:
    # Fresh from a bulk insert, before any ANALYZE: the statistics still say "empty table",
    # the case where an unpinned plan falls off `jobs_claim`. Then with statistics.
    queue.add_many([{"type": "test:record", "payload": {"n": i}} for i in range(3000)])
    for analyse in (False, True):
        if analyse:
            conn.execute("ANALYZE haosq.jobs")
        for type_filter in (TypeFilter(), TypeFilter.from_selectors(["test", "tfam:one"])):
            plan = explain_claim(conn, type_filter, 10)
            assert "Index Scan using jobs_claim" in plan, plan
            assert "Seq Scan" not in plan and "Bitmap" not in plan and "Sort" not in plan, plan


ALL_TYPES = TypeFilter()


def _claim(conn: psycopg.Connection, limit: int, after: ClaimPosition | None = None,
           type_filter: TypeFilter = ALL_TYPES) -> list[Any]:
    return claims.claim_jobs(conn, type_filter, limit, worker_id="w", pid=1,
                             token="00000000-0000-0000-0000-0000000000dd", after=after)


def test_a_claim_from_a_position_takes_higher_levels_then_the_rest_of_its_own_then_lower(
    queue: JobQueue, conn: psycopg.Connection
) -> None:
    first = [queue.add("test:record", {"n": i}) for i in range(4)]
    taken = _claim(conn, 2)
    assert [j.id for j in taken] == [first[0].id, first[1].id]
    position = ClaimPosition.after(taken)
    assert position == ClaimPosition(0, taken[1].due_at, first[1].id)
    urgent = queue.add("test:record", {"n": "urgent"}, priority=5)
    lower = queue.add("test:record", {"n": "lower"}, priority=-5)
    behind = queue.add("test:record", {"n": "behind"})
    conn.execute("UPDATE haosq.jobs SET due_at = due_at - interval '1 minute' WHERE id = %s",
                 (behind.id,))
    other_type = queue.add("tfam:one", {"n": "other"}, priority=9)

    # The limit holds across the ranges, taken in claim order: the level above first.
    two = _claim(conn, 2, position, TypeFilter.from_selectors(["test"]))
    assert sorted(j.id for j in two) == [first[2].id, urgent.id]
    rest = _claim(conn, 10, ClaimPosition.after(two), TypeFilter.from_selectors(["test"]))
    assert sorted(j.id for j in rest) == [first[3].id, lower.id]
    # The job behind the position in its level was left to the claim from the head.
    assert sorted(j.id for j in _claim(conn, 10)) == [behind.id, other_type.id]
    assert ClaimPosition.after([]) is None


def _scan_buffers(plan: str, index: str | None = None) -> int:
    """Shared buffers touched by the plan's index scans of `haosq.jobs` (those of `index`,
    or all of them): the index pages and the rows they point to."""
    total, in_scan = 0, False
    for line in plan.splitlines():
        if "->" in line:
            in_scan = "Index Scan using " + (index or "") in line and " on jobs" in line
        elif in_scan and "Buffers: shared " in line:
            counts = dict(part.split("=") for part in line.split("shared ")[1].split() if "=" in part)
            total += int(counts.get("hit", 0)) + int(counts.get("read", 0))
            in_scan = False  # the scan's own line; later ones belong to others or to planning
    return total


def test_claims_and_acks_skip_what_a_held_snapshot_keeps_in_the_indexes(
    queue: JobQueue, conn: psycopg.Connection, database_url: str
) -> None:
    # A transaction holding an old snapshot keeps the index entries of every job claimed and
    # finished since then. A claim from the head visits each of them; a claim from the
    # position, and an acknowledgement, must go straight to the rows they want.
    queue.add_many([{"type": "test:record", "payload": {"n": i}} for i in range(10_400)])
    token = "00000000-0000-0000-0000-0000000000dd"
    with psycopg.connect(database_url) as holder:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT 1")
        position = None
        for _ in range(50):
            batch = _claim(conn, 200, position)
            position = ClaimPosition.after(batch)
            done = [Ack(job.id, job.attempts, "completed", result_json="null") for job in batch]
            assert claims.ack_jobs(conn, token, done) == {job.id for job in batch}
        assert position is not None and position.job_id == 10_000
        plans = {name: explain_claim(conn, TypeFilter(), 200, after=after, analyze=True)
                 for name, after in (("head", None), ("position", position))}
        for plan in plans.values():
            assert "Index Scan using jobs_claim" in plan and "Seq Scan" not in plan, plan
        assert "ROW(due_at, id) >" in plans["position"], plans["position"]
        head = _scan_buffers(plans["head"], "jobs_claim")
        from_position = _scan_buffers(plans["position"], "jobs_claim")
        assert from_position * 10 < head, (head, from_position)

        running = _claim(conn, 16, position)
        acks = [Ack(job.id, job.attempts, "completed", result_json="null") for job in running]
        plans_by_statistics = [explain_ack(conn, token, acks, analyze=True)]
        # Statistics taken while a few jobs run: the planner then believes the token's rows
        # in `jobs_owner` are a handful, and would scan that index rather than look ids up.
        conn.execute("ANALYZE haosq.jobs")
        plans_by_statistics.append(explain_ack(conn, token, acks, analyze=True))
        for ack_plan in plans_by_statistics:
            assert "jobs_owner" not in ack_plan, ack_plan
            # A few pages per row (an index descent, the row's versions), not the 10,000
            # entries the token's earlier jobs left in `jobs_owner`.
            assert 0 < _scan_buffers(ack_plan) < 10 * len(acks), ack_plan


def test_ack_plan_joins_the_batch_in_one_pass(queue: JobQueue, conn: psycopg.Connection) -> None:
    # Statistics taken while every job was pending say "nothing is processing": the plan
    # must still find the rows by id and join them to the batch in one pass, not rescan the
    # batch for every row it finds (batch² work).
    queue.add_many([{"type": "test:record", "payload": {"n": i}} for i in range(3000)])
    conn.execute("ANALYZE haosq.jobs")
    token = "00000000-0000-0000-0000-0000000000aa"
    rows = claims.claim_jobs(conn, TypeFilter(), 200, worker_id="plan", pid=1, token=token)
    acks = [Ack(job.id, job.attempts, "completed", result_json="null") for job in rows]
    plan = explain_ack(conn, token, acks)
    assert "Hash Join" in plan and "Nested Loop" not in plan, plan
    assert "Seq Scan" not in plan and "Function Scan on json_to_recordset" in plan, plan
    # Results go in as the JSON the handler returned: None is the JSON value null (not SQL
    # NULL), anything else exactly as it was encoded.
    acks[1] = Ack(rows[1].id, rows[1].attempts, "completed",
                  result_json='{"n": [1, 2.5, "é\\"q"], "none": null}')
    assert claims.ack_jobs(conn, token, acks) == {job.id for job in rows}
    stored = conn.execute("SELECT id, result, result IS NULL AS sql_null FROM haosq.jobs "
                          "WHERE id = ANY(%s) ORDER BY id", ([rows[0].id, rows[1].id],)).fetchall()
    assert [(r["result"], r["sql_null"]) for r in stored] == [
        (None, False), ({"n": [1, 2.5, 'é"q'], "none": None}, False)]


def test_an_ack_sent_again_after_a_lost_answer_is_recognised_as_applied(
    queue: JobQueue, conn: psycopg.Connection
) -> None:
    # The first sending committed but its answer was lost: sent again, the guard refuses it.
    # The worker must see that the row holds exactly what it asked for (its own ack), and
    # must not take a rescued-and-rerun job, or another attempt, for its own.
    queue.add_many([{"type": "test:record", "payload": {"n": i}} for i in range(4)])
    token = "00000000-0000-0000-0000-0000000000bb"
    done, retried, rescued, other = claims.claim_jobs(conn, TypeFilter(), 4, worker_id="w", pid=1,
                                                      token=token)
    due = database_now(conn) + timedelta(minutes=5)
    acks = [Ack(done.id, done.attempts, "completed", result_json='{"ok": true}'),
            Ack(retried.id, retried.attempts, "pending", error="boom", due_at=due),
            Ack(rescued.id, rescued.attempts, "completed", result_json="null")]
    # The rescued job went back to pending and was claimed by another worker meanwhile.
    conn.execute("UPDATE haosq.jobs SET status = 'pending', owner_token = NULL WHERE id = %s",
                 (rescued.id,))
    other_rows = claims.claim_jobs(conn, TypeFilter(), 1, worker_id="x", pid=2,
                                   token="00000000-0000-0000-0000-0000000000cc")
    assert [j.id for j in other_rows] == [rescued.id]
    assert claims.ack_jobs(conn, token, acks) == {done.id, retried.id}
    again = claims.ack_jobs(conn, token, acks)
    assert again == set()  # refused by the guard: the rows moved on
    assert claims.already_acknowledged(conn, token, acks) == {done.id, retried.id}
    assert claims.already_acknowledged(
        conn, token, [Ack(other.id, other.attempts + 1, "completed", result_json="null")]) == set()


def test_jobs_behind_the_claim_position_wait_for_the_claim_from_the_head(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    service = start_worker(overrides={"worker.concurrency": 1, "worker.types": "test:record"})
    # Claims from the head are spaced so far apart that only claims from the position run.
    service.worker.head_claim_spacing = 1e9
    first = queue.add("test:record", {"n": 1})
    wait_status(conn, first.id, "completed")
    earlier = database_now(conn) - timedelta(minutes=1)
    queue.add_many([
        {"type": "test:record", "payload": {"n": 2}, "scheduled_at": earlier},
        {"type": "test:record", "payload": {"n": 3}}])
    behind, ahead = (conn.execute("SELECT id FROM haosq.jobs WHERE payload->>'n' = %s",
                                  (n,)).fetchone()["id"] for n in ("2", "3"))
    wait_status(conn, ahead, "completed")
    assert job_row(conn, behind)["status"] == "pending"
    # Once a claim from the head is allowed again, the short claim before asks for one.
    service.worker.head_claim_spacing = 0
    wait_status(conn, behind, "completed")
    assert [r["n"] for r in executions(conn)] == [1, 3, 2]


def test_a_claim_from_the_head_waiting_for_a_free_slot_does_not_spin_the_loop(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    service = start_worker(overrides={"worker.concurrency": 2, "worker.types": "test"})
    worker = service.worker
    worker.head_claim_spacing = 1e9
    queue.add("test:record", {"n": 1})
    wait_until(lambda: len(executions(conn)) == 1, message="the first job")
    # A claim from the position asks for two jobs and gets one: a claim from the head is
    # wanted. The next job fills the other slot before it is allowed.
    first_slow = queue.add("test:slow", {"n": 2, "seconds": 1.5})
    wait_status(conn, first_slow.id, "processing")
    second_slow = queue.add("test:slow", {"n": 3, "seconds": 1.5})
    wait_status(conn, second_slow.id, "processing")
    worker.head_claim_spacing = 0  # now due, with no slot free
    turns = worker.loop_turns
    time.sleep(0.5)
    # Polls every 50 ms: about ten turns, not one per millisecond.
    assert worker.loop_turns - turns < 40
    wait_status(conn, second_slow.id, "completed")


def test_priority_then_due_time_then_id_and_scheduled_jobs_wait(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    now = database_now(conn)
    low = queue.add("test:record", {"n": 1})
    high = queue.add("test:record", {"n": 2}, priority=10)
    older = queue.add("test:record", {"n": 3})
    later = queue.add("test:record", {"n": 4}, priority=100, scheduled_at=now + timedelta(seconds=1))
    conn.execute("UPDATE haosq.jobs SET due_at = due_at - interval '1 minute' WHERE id = %s",
                  (older.id,))
    start_worker(overrides={"worker.concurrency": 1, "worker.types": "test:record"})
    wait_status(conn, later.id, "completed")
    ran = executions(conn)
    assert [r["n"] for r in ran] == [2, 3, 1, 4]
    assert {low.id, high.id, older.id, later.id} == {r["job_id"] for r in ran}
    assert ran[-1]["at"] >= now + timedelta(seconds=1)


def test_type_filter_takes_families_and_exact_types(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    one = queue.add("tfam:one")
    two = queue.add("tfam:two")
    exact = queue.add("test:record")
    other = queue.add("other:thing")
    start_worker(overrides={"worker.types": "tfam,test:record"})
    for job in (one, two, exact):
        wait_status(conn, job.id, "completed")
    time.sleep(0.2)
    assert job_row(conn, other.id)["status"] == "pending"


def test_worker_without_types_leaves_types_it_has_no_handler_for(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    foreign = queue.add("elsewhere:job")
    mine = queue.add("test:record")
    start_worker()
    wait_status(conn, mine.id, "completed")
    time.sleep(0.2)
    assert job_row(conn, foreign.id)["status"] == "pending"


def test_unknown_type_in_a_selected_family_fails_at_once(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    job = queue.add("test:no-such-handler", max_attempts=5)
    start_worker(overrides={"worker.types": "test"})
    row = wait_status(conn, job.id, "failed")
    assert row["attempts"] == 1
    assert "UnknownJobType" in row["error"] and "'test:no-such-handler'" in row["error"]


def test_backoff_formula_bounds() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(100.0, 2.0 * 2 ** (attempt - 1))
        for _ in range(50):
            delay = backoff_delay(attempt, 2.0, 100.0, rng)
            assert ceiling / 2 <= delay <= ceiling


def test_retries_back_off_on_the_workers_clock_then_fail_with_traceback(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    job = queue.add("test:raise", max_attempts=3)
    clock = FrozenClock(database_now(conn))
    policy = RetryPolicy(base_seconds=10.0, cap_seconds=15.0, default_max_attempts=3,
                         rng=random.Random(1))
    start_worker(clock=clock, policy=policy, overrides={"worker.types": "test:raise"})

    def failed_attempt(n: int) -> dict:
        return wait_until(lambda: (r := job_row(conn, job.id))["attempts"] == n
                          and r["status"] in ("pending", "failed") and r, message=f"attempt {n}")

    first = failed_attempt(1)
    assert first["status"] == "pending"
    delay = (first["due_at"] - clock.now()).total_seconds()
    assert 5.0 <= delay <= 10.0
    assert first["retry_at"] == first["due_at"]
    assert "ValueError: boom" in first["error"]

    clock.advance(delay - 0.5)  # not yet due: the worker must leave it alone
    time.sleep(0.3)
    assert job_row(conn, job.id)["attempts"] == 1

    clock.advance(0.5)
    second = failed_attempt(2)
    delay = (second["due_at"] - clock.now()).total_seconds()
    assert 7.5 <= delay <= 15.0  # min(cap 15, 10 * 2) = 15, halved at worst

    clock.advance(delay)
    last = failed_attempt(3)
    assert last["status"] == "failed"
    assert last["completed_at"] is not None
    assert "Traceback" in last["error"] and "ValueError: boom" in last["error"]
    logs = wait_until(lambda: len(queue.logs(job.id)) == 3 and queue.logs(job.id))
    assert [(entry.attempt, entry.level) for entry in logs] == [(1, "warn"), (2, "warn"), (3, "error")]
    assert logs[-1].message == "attempt 3 failed: ValueError: boom"


def test_retry_after_and_permanent_error(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    later = queue.add("test:raise", {"retry_after": 42})
    permanent = queue.add("test:raise", {"permanent": True}, max_attempts=5)
    clock = FrozenClock(database_now(conn))
    start_worker(clock=clock, overrides={"worker.types": "test:raise"})
    row = wait_until(lambda: (r := job_row(conn, later.id))["attempts"] == 1
                     and r["status"] == "pending" and r)
    assert row["due_at"] == clock.now() + timedelta(seconds=42)
    failed = wait_status(conn, permanent.id, "failed")
    assert failed["attempts"] == 1
    assert "PermanentError: bad input" in failed["error"]


def test_timeout_fails_the_attempt_discards_the_late_result_and_keeps_capacity(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    hung = queue.add("test:hang", {"seconds": 3.0}, timeout=0.3, max_attempts=1)
    start_worker(overrides={"worker.concurrency": 1, "worker.types": "test"})
    row = wait_status(conn, hung.id, "failed", timeout=5)
    failed_at = time.monotonic()
    assert "JobTimedOut" in row["error"] and "0.3s" in row["error"]
    # The single thread is still stuck in the handler; a fresh one took its place.
    after = queue.add("test:record")
    wait_status(conn, after.id, "completed", timeout=2.5)
    assert time.monotonic() - failed_at < 2.6  # before the hung handler could have returned
    time.sleep(max(0.0, 3.2 - (time.monotonic() - failed_at)))  # now it has returned
    row = job_row(conn, hung.id)
    assert row["status"] == "failed" and row["result"] is None


def test_non_json_result_fails_clearly_without_retry(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    job = queue.add("test:not-json", max_attempts=3)
    start_worker(overrides={"worker.types": "test"})
    row = wait_status(conn, job.id, "failed")
    assert row["attempts"] == 1
    assert "not JSON" in row["error"]


def test_cancel_of_a_running_job(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    job = queue.add("test:slow", {"seconds": 30})
    start_worker(overrides={"worker.types": "test"})
    wait_until(lambda: executions(conn, job.id), message="the job to start")
    started = time.monotonic()
    queue.cancel(job.id)
    row = wait_status(conn, job.id, "cancelled", timeout=3)
    assert time.monotonic() - started < 2
    assert row["completed_at"] is not None
    assert "cancelled" in row["error"]


def test_process_executor_runs_in_a_child_and_sends_logs_back(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    job = queue.add("test:proc-echo", {"value": 7})
    start_worker(overrides={"worker.types": "test"})
    row = wait_status(conn, job.id, "completed", timeout=20)
    assert row["result"]["value"] == 7
    assert row["result"]["pid"] != os.getpid()
    logs = queue.logs(job.id)
    assert [(entry.level, entry.message) for entry in logs] == [("info", "in the child")]


def test_process_executor_kills_the_child_on_timeout_and_survives_a_dying_child(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    spin = queue.add("test:proc-spin", max_attempts=1, timeout=4.0)  # spawn takes a while
    die = queue.add("test:proc-die", {"code": 3}, max_attempts=1)
    start_worker(overrides={"worker.types": "test", "worker.concurrency": 2})
    row = wait_status(conn, spin.id, "failed", timeout=20)
    assert "JobTimedOut" in row["error"]
    child = executions(conn, spin.id)[0]["pid"]
    assert child != os.getpid()
    wait_until(lambda: not _alive(child), timeout=3, message="the child to be gone")
    dead = wait_status(conn, die.id, "failed", timeout=20)
    assert "died (exit code 3)" in dead["error"]
    after = queue.add("test:record")
    wait_status(conn, after.id, "completed")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): read its state.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_job_logs_are_written_in_batches(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    import haosq.handlers.demo  # noqa: F401

    ids = [queue.add("demo:echo", {"value": i}).id for i in range(20)]
    start_worker(overrides={"worker.types": "demo", "worker.concurrency": 4})
    for job_id in ids:
        wait_status(conn, job_id, "completed")
    rows = conn.execute("SELECT job_id, attempt, message FROM haosq.job_logs WHERE job_id = ANY(%s)",
                        (ids,)).fetchall()
    assert sorted(r["job_id"] for r in rows) == sorted(ids)
    assert {r["attempt"] for r in rows} == {1}


class RecordingWorker(JobWorker):
    events: list[tuple[str, int, Any]] = []

    def on_job_start(self, job: Any) -> None:
        self.events.append(("start", job.id, None))

    def on_job_complete(self, job: Any, result: Any) -> None:
        self.events.append(("complete", job.id, result))

    def on_job_failed(self, job: Any, error: BaseException) -> None:
        self.events.append(("failed", job.id, type(error).__name__))


def test_job_worker_hooks(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    ok = queue.add("test:record", {"n": 5})
    bad = queue.add("test:raise", {"permanent": True})
    start_worker(worker_class=RecordingWorker, overrides={"worker.types": "test"})
    wait_status(conn, ok.id, "completed")
    wait_status(conn, bad.id, "failed")
    events = RecordingWorker.events
    assert ("start", ok.id, None) in events and ("complete", ok.id, {"n": 5}) in events
    assert ("start", bad.id, None) in events and ("failed", bad.id, "PermanentError") in events


def test_worker_id_is_unique_among_live_workers(
    conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    first = start_worker(overrides={"worker.id": "mail-1"})
    with pytest.raises(WorkerIdInUse, match="mail-1"):
        start_worker(overrides={"worker.id": "mail-1"})
    # A holder whose heartbeat is stale is marked dead and the name reused.
    first.stop(timeout=0.1)
    conn.execute("UPDATE haosq.workers SET status = 'active', last_heartbeat = now() - interval '1 hour'"
                 " WHERE token = %s", (first.token,))
    second = start_worker(overrides={"worker.id": "mail-1"})
    statuses = dict(conn.execute("SELECT token::text, status FROM haosq.workers").fetchall()
                    and [(r["token"], r["status"]) for r in
                         conn.execute("SELECT token::text AS token, status FROM haosq.workers")])
    assert statuses[first.token] == "dead"
    assert statuses[second.token] == "active"


def test_observers_and_snapshot(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    seen: list[str] = []

    class Observer:
        def on_ready(self, snapshot: Any) -> None:
            seen.append("ready")

        def on_heartbeat(self, snapshot: Any) -> None:
            seen.append("heartbeat")

        def on_job_claimed(self, job: Any) -> None:
            seen.append(f"claimed:{job.id}")

        def on_job_finished(self, job: Any, outcome: str, duration: float) -> None:
            seen.append(f"{outcome}:{job.id}")

        def on_database_error(self, error: BaseException) -> None:
            seen.append("db-error")

        def on_stopping(self, snapshot: Any) -> None:
            seen.append("stopping")

    started: list[str] = []

    class Duty:
        name = "probe"

        def __init__(self, context: Any) -> None:
            self.context = context

        def start(self) -> None:
            started.append(f"start:{self.context.worker_id}")

        def stop(self, timeout: float) -> None:
            started.append("stop")

    service = start_worker(observers=[Observer()], duties=[Duty],
                           overrides={"worker.types": "test"})
    job = queue.add("test:record")
    wait_status(conn, job.id, "completed")
    wait_until(lambda: "heartbeat" in seen, message="a heartbeat")
    snapshot = service.snapshot()
    assert snapshot.ready and snapshot.processed == 1 and snapshot.succeeded == 1
    assert snapshot.last_heartbeat_ok is not None
    service.stop(timeout=0.5)
    assert seen[0] == "ready"
    assert f"claimed:{job.id}" in seen and f"completed:{job.id}" in seen and "stopping" in seen
    assert started == [f"start:{service.worker_id}", "stop"]
    assert service.snapshot().stopping


def test_no_listen_mode_polls(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    service = start_worker(overrides={"worker.types": "test", "worker.listen": False})
    assert service.listener is None
    job = queue.add("test:record")
    wait_status(conn, job.id, "completed", timeout=3)
    listening = conn.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
                             " AND application_name = 'haosq-listen'").fetchone()
    assert listening["n"] == 0


def test_rescue_of_a_job_an_operator_cancelled_ends_it_cancelled(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    job = queue.add("test:record")
    conn.execute(
        "INSERT INTO haosq.workers (token, worker_id, pid, hostname, concurrency, last_heartbeat)"
        " VALUES ('00000000-0000-0000-0000-0000000000aa', 'gone', 1, 'h', 1, now() - interval '1 hour')")
    conn.execute("UPDATE haosq.jobs SET status = 'processing', attempts = 1, cancel_requested_at = now(),"
                 " owner_token = '00000000-0000-0000-0000-0000000000aa' WHERE id = %s", (job.id,))
    start_worker(overrides={"worker.types": "test"})
    row = wait_status(conn, job.id, "cancelled", timeout=5)
    assert row["owner_token"] is None and row["completed_at"] is not None
    assert executions(conn, job.id) == []


def test_nul_characters_fail_the_job_without_wedging_the_worker(
    queue: JobQueue, conn: psycopg.Connection, start_worker: Callable[..., WorkerService]
) -> None:
    raising = queue.add("test:nul", max_attempts=1)
    returning = queue.add("test:nul", {"result": True}, max_attempts=1)
    start_worker(overrides={"worker.types": "test"})
    assert "g\\x00h" in wait_status(conn, raising.id, "failed")["error"]
    assert "NUL" in wait_status(conn, returning.id, "failed")["error"]
    after = queue.add("test:record")
    wait_status(conn, after.id, "completed")
    logs = wait_until(lambda: queue.logs(raising.id))
    assert logs[0].message == "a\\x00b" and logs[0].metadata == {"detail": "c\\x00d"}
