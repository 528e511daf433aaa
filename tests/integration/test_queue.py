"""JobQueue against a real PostgreSQL: enqueue, read, operate."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from haosq import InvalidJob, InvalidTransition, JobNotFound, JobQueue, JobSpec, JobStatus
from haosq.db.queries.dashboard import actionable_count_query, count_actionable
from haosq.db.queries.jobs import page_query


def test_add_returns_the_stored_job(queue):
    job = queue.add("email:send", {"to": "user@example.com"}, priority=10, max_attempts=5,
                    tags=["upload", "important"], created_by="api")
    stored = queue.get(job.id)
    assert stored == job
    assert stored.status is JobStatus.PENDING
    assert stored.payload == {"to": "user@example.com"}
    assert (stored.priority, stored.max_attempts, stored.tags) == (10, 5, ["upload", "important"])
    assert stored.created_by == "api"
    assert stored.attempts == 0
    assert stored.due_at == stored.scheduled_at


def test_scheduled_job_is_reported_as_scheduled(queue):
    later = datetime.now(UTC) + timedelta(hours=1)
    job = queue.add("cleanup:old-files", {"directory": "/tmp"}, scheduled_at=later)
    assert job.due_at == later
    assert job.is_scheduled(datetime.now(UTC))
    assert [j.id for j in queue.list(status="scheduled")] == [job.id]
    assert queue.list(status="pending") == []
    assert queue.stats().scheduled == 1
    assert queue.stats().by_status["pending"] == 0


def test_invalid_jobs_change_nothing(queue, conn):
    for kwargs in ({"type": "Bad"}, {"type": "a:b", "payload": [1]},
                   {"type": "a:b", "priority": 5000}, {"type": "a:b", "max_attempts": 0}):
        with pytest.raises(InvalidJob):
            queue.add(**kwargs)
    assert conn.execute("SELECT count(*) AS n FROM haosq.jobs").fetchone()["n"] == 0


def test_enqueue_joins_the_callers_transaction(queue, database_url):
    with psycopg.connect(database_url) as own:
        queue.add("email:send", {"n": 1}, conn=own)
        own.rollback()
        queue.add("email:send", {"n": 2}, conn=own)
        assert queue.list() == []  # not committed yet: invisible to others
        own.commit()
    assert [j.payload for j in queue.list()] == [{"n": 2}]


def test_add_many_with_copy_is_all_or_nothing(queue, conn):
    specs = [JobSpec("demo:echo", {"i": i}, priority=i % 3, tags=["bulk"]) for i in range(1000)]
    assert queue.add_many(specs) == 1000
    with pytest.raises(InvalidJob, match="invalid job type"):
        queue.add_many([{"type": "demo:echo"}, {"type": "nope"}])
    with pytest.raises(InvalidJob, match="unknown job option"):
        queue.add_many([{"type": "demo:echo", "colour": "red"}])
    rows = conn.execute("SELECT count(*) AS n, sum(priority) AS p FROM haosq.jobs").fetchone()
    assert rows["n"] == 1000
    assert rows["p"] == sum(i % 3 for i in range(1000))


def test_add_many_of_100k_jobs(queue, conn):
    assert queue.add_many({"type": "demo:echo", "payload": {"i": i}} for i in range(100_000)) == 100_000
    row = conn.execute("SELECT count(*) AS n, count(DISTINCT payload->>'i') AS d FROM haosq.jobs").fetchone()
    assert (row["n"], row["d"]) == (100_000, 100_000)
    assert queue.stats().by_status["pending"] == 100_000


def test_add_many_in_the_callers_transaction(queue, database_url):
    with psycopg.connect(database_url) as own:
        queue.add_many([{"type": "demo:echo"}] * 10, conn=own)
        own.rollback()
    assert queue.list() == []


def test_a_bad_job_in_the_callers_transaction_leaves_it_usable(queue, database_url):
    # Jobs stream into the COPY as they are validated: the bad third job aborts the batch,
    # but only the batch (a savepoint), not what the caller did before or does after.
    with psycopg.connect(database_url) as own:
        kept = queue.add("demo:echo", {"kept": True}, conn=own)
        with pytest.raises(InvalidJob, match=r"job 2 of the batch: invalid priority .*nothing was added"):
            queue.add_many([{"type": "demo:echo"}, {"type": "demo:echo"},
                            {"type": "demo:echo", "priority": 5000}], conn=own)
        assert queue.add_many([{"type": "demo:echo", "payload": {"after": i}} for i in range(3)],
                              conn=own) == 3
        own.commit()
    jobs = queue.list()
    assert len(jobs) == 4 and kept.id in {j.id for j in jobs}
    assert sorted(j.payload.get("after", -1) for j in jobs) == [-1, 0, 1, 2]


def test_list_filters_and_keyset_paging(queue):
    a = queue.add("email:send", {}, tags=["vip"])
    b = queue.add("email:digest", {})
    c = queue.add("file:virus-scan", {}, tags=["vip"])
    assert [j.id for j in queue.list(type="email")] == [b.id, a.id]
    assert [j.id for j in queue.list(type="email:send")] == [a.id]
    assert [j.id for j in queue.list(tag="vip")] == [c.id, a.id]
    first = queue.list(limit=2)
    assert [j.id for j in first] == [c.id, b.id]
    assert [j.id for j in queue.list(limit=2, before_id=first[-1].id)] == [a.id]
    assert [j.id for j in queue.list(search=str(b.id))] == [b.id]
    assert queue.list(created_after=datetime.now(UTC) + timedelta(minutes=1)) == []
    with pytest.raises(InvalidJob, match="unknown status"):
        queue.list(status="done")
    with pytest.raises(InvalidJob, match="type filter"):
        queue.list(type="Email'; drop table x")


def test_listing_by_type_or_tag_merges_finished_and_live_jobs_through_their_indexes(queue, conn):
    # A long history of other types, then one job of the listed type in each state: the
    # listing indexes cover finished jobs only, so live ones must come from their own indexes.
    conn.execute("""INSERT INTO haosq.jobs (type, status, completed_at)
                    SELECT 'hist:old', 'completed', now() FROM generate_series(1, 60000)""")
    done = queue.add("report:build", {}, tags=["q4"])
    running = queue.add("report:build", {}, tags=["q4"])
    waiting = queue.add("report:build", {}, tags=["q4"])
    newest_done = queue.add("report:build", {}, tags=["q4"])
    conn.execute("UPDATE haosq.jobs SET status = 'completed', completed_at = now() WHERE id = ANY(%s)",
                 ([done.id, newest_done.id],))
    conn.execute("UPDATE haosq.jobs SET status = 'processing', owner_token = gen_random_uuid() "
                 "WHERE id = %s", (running.id,))
    conn.execute("ANALYZE haosq.jobs")
    everyone = [newest_done.id, waiting.id, running.id, done.id]
    assert [j.id for j in queue.list(type="report:build")] == everyone
    assert [j.id for j in queue.list(type="report")] == everyone
    assert [j.id for j in queue.list(tag="q4", limit=2)] == everyone[:2]
    assert [j.id for j in queue.list(tag="q4", before_id=waiting.id)] == everyone[2:]
    assert queue.count(queue.filter(type="report")) == 4
    assert queue.count(queue.filter(tag="q4", status="completed")) == 2
    for job_filter in (queue.filter(type="report:build"), queue.filter(tag="q4")):
        query, params = page_query(job_filter, limit=50)
        plan = "\n".join(r["QUERY PLAN"] for r in conn.execute(
            sql.SQL("EXPLAIN ") + query, params).fetchall())
        # Live jobs come from their own partial indexes, never from a scan of the history.
        assert "Seq Scan" not in plan, plan
        assert ("jobs_pending_due" in plan or "jobs_claim" in plan) and "jobs_owner" in plan, plan
        if job_filter.type:
            # The type's statistics are exact: the finished half reads the type index. (For a
            # tag the planner may prefer walking the primary key backwards from the newest
            # job, since it only has a default estimate for an unknown tag.)
            assert "jobs_type_id" in plan and "jobs_pkey" not in plan, plan
    # The bulk-action confirmations count live jobs through their own indexes too.
    report = queue.filter(type="report")
    assert count_actionable(conn, report, "cancel") == 2
    assert count_actionable(conn, report, "retry") == 0
    for action in ("cancel", "retry"):
        query, params = actionable_count_query(report, action)
        plan = "\n".join(r["QUERY PLAN"] for r in conn.execute(
            sql.SQL("EXPLAIN ") + query, params).fetchall())
        assert "Seq Scan" not in plan and "jobs_pkey" not in plan, plan


def test_search_finds_error_text_with_like_metacharacters(queue, conn):
    job = queue.add("email:send", {})
    other = queue.add("email:send", {})
    conn.execute("UPDATE haosq.jobs SET status='failed', error=%s WHERE id=%s", ("quota 100% used", job.id))
    conn.execute("UPDATE haosq.jobs SET status='failed', error=%s WHERE id=%s", ("quota 1000 used", other.id))
    assert [j.id for j in queue.list(search="100%")] == [job.id]
    assert {j.id for j in queue.list(search="QUOTA")} == {job.id, other.id}


def test_retry_only_failed_jobs(queue, conn):
    job = queue.add("email:send", {})
    with pytest.raises(InvalidTransition, match="only failed jobs can be retried"):
        queue.retry(job.id)
    conn.execute(
        "UPDATE haosq.jobs SET status='failed', attempts=3, error='boom', completed_at=now() "
        "WHERE id=%s", (job.id,))
    retried = queue.retry(job.id)
    assert (retried.status, retried.attempts, retried.error) == (JobStatus.PENDING, 0, None)
    assert [line.message for line in queue.logs(job.id)] == ["retried by an operator"]
    with pytest.raises(JobNotFound):
        queue.retry(999_999)


def test_cancel_pending_now_and_running_by_request(queue, conn):
    pending = queue.add("email:send", {})
    running = queue.add("email:send", {})
    conn.execute("UPDATE haosq.jobs SET status='processing' WHERE id=%s", (running.id,))
    conn.execute("LISTEN haosq_events")
    assert queue.cancel(pending.id).status is JobStatus.CANCELLED
    still_running = queue.cancel(running.id)
    assert still_running.status is JobStatus.PROCESSING
    assert still_running.cancel_requested_at is not None
    notices = [n.payload for n in conn.notifies(timeout=1, stop_after=1)]
    assert notices == [f"cancel:{running.id}"]
    with pytest.raises(InvalidTransition, match="only pending or processing"):
        queue.cancel(pending.id)


def test_bulk_actions_on_a_filter(queue, conn):
    ids = [queue.add("email:send", {}, tags=["batch"]).id for _ in range(5)]
    queue.add("email:send", {})
    conn.execute("UPDATE haosq.jobs SET status='failed' WHERE id = ANY(%s)", (ids[:3],))
    job_filter = queue.filter(tag="batch")
    assert queue.count(queue.filter(tag="batch", status="failed")) == 3
    assert queue.retry_matching(job_filter) == 3
    assert queue.cancel_matching(job_filter) == 5
    assert queue.count(queue.filter(status="cancelled")) == 5
    assert queue.count(queue.filter(status="pending")) == 1


def test_stats_counters_match_the_table(queue, conn):
    queue.add_many([{"type": "email:send"}] * 7 + [{"type": "file:virus-scan"}] * 3)
    conn.execute("UPDATE haosq.jobs SET status='completed', completed_at=now() "
                 "WHERE id IN (SELECT id FROM haosq.jobs WHERE type='email:send' LIMIT 4)")
    conn.execute("UPDATE haosq.jobs SET status='failed' "
                 "WHERE id IN (SELECT id FROM haosq.jobs WHERE type='file:virus-scan' LIMIT 1)")
    conn.execute("DELETE FROM haosq.jobs WHERE id IN "
                 "(SELECT id FROM haosq.jobs WHERE status='completed' LIMIT 1)")
    conn.execute("SELECT haosq.compact_job_counts()")
    stats = queue.stats()
    truth = {r["status"]: r["n"] for r in conn.execute(
        "SELECT status, count(*) AS n FROM haosq.jobs GROUP BY status")}
    assert {k: v for k, v in stats.by_status.items() if v} == truth
    assert stats.by_type["email:send"] == {"pending": 3, "completed": 3}
    assert stats.by_type["file:virus-scan"] == {"pending": 2, "failed": 1}
    assert stats.success_rate == pytest.approx(3 / 4)
    assert conn.execute("SELECT count(*) AS n FROM haosq.job_counts").fetchone()["n"] == 4


def test_notify_once_per_insert_statement_never_on_update(queue, conn):
    conn.execute("LISTEN haosq_jobs")
    queue.add_many([{"type": "email:send"}] * 50 + [{"type": "demo:echo"}] * 50)
    queue.add("file:virus-scan", {}, scheduled_at=datetime.now(UTC) + timedelta(hours=1))
    conn.execute("UPDATE haosq.jobs SET priority = 1")
    notices = [n.payload for n in conn.notifies(timeout=0.5)]
    assert notices == ["demo:echo,email:send"]


def test_cleanup_dead_workers_rescues_their_jobs(queue, conn):
    alive_job, dead_job, last_try = (queue.add("email:send", {}, max_attempts=m).id for m in (3, 3, 1))
    conn.execute(
        "INSERT INTO haosq.workers (token, worker_id, pid, hostname, concurrency, last_heartbeat) VALUES "
        "('00000000-0000-0000-0000-000000000001', 'alive', 1, 'h', 1, now()),"
        "('00000000-0000-0000-0000-000000000002', 'dead', 2, 'h', 1, now() - interval '10 minutes')")
    conn.execute(
        "UPDATE haosq.jobs SET status='processing', attempts=1, owner_token = CASE id "
        "WHEN %s THEN '00000000-0000-0000-0000-000000000001'::uuid "
        "ELSE '00000000-0000-0000-0000-000000000002'::uuid END, worker_id='w' WHERE true",
        (alive_job,))
    original_due = queue.get(dead_job).due_at
    dead, rescued = queue.cleanup_dead_workers(timedelta(minutes=5))
    assert (dead, rescued) == (["dead"], 2)
    assert queue.get(alive_job).status is JobStatus.PROCESSING
    back = queue.get(dead_job)
    assert (back.status, back.attempts, back.due_at) == (JobStatus.PENDING, 1, original_due)
    assert "stopped responding" in (back.error or "")
    assert queue.get(last_try).status is JobStatus.FAILED
    assert [w.worker_id for w in queue.workers()] == ["alive"]
    assert {w.worker_id for w in queue.workers(include_gone=True)} == {"alive", "dead"}
    assert queue.cleanup_dead_workers(timedelta(minutes=5)) == ([], 0)


def test_unreachable_database_is_a_clear_error(make_settings):
    from haosq import DatabaseUnavailable

    queue = JobQueue(settings=make_settings(HAOSQ_DATABASE_URL="postgresql://u:pw@127.0.0.1:1/x"))
    with pytest.raises(DatabaseUnavailable, match=r"127\.0\.0\.1:1.*Connection refused") as caught:
        queue.add("email:send", {})
    assert "pw" not in str(caught.value)
