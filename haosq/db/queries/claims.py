"""The daemon's SQL: worker registration and heartbeats, claiming, acknowledging and
releasing jobs.

Every statement that changes a job a worker holds checks, in the same statement, that the
job is still `processing`, still owned by this worker process's token and still on the same
attempt. A worker frozen past its lease (SIGSTOP, a long GC pause, a suspended VM) therefore
cannot overwrite a job that was rescued and finished elsewhere: its late acknowledgement
matches no row and is counted as refused.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import postgres, sql
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.rows import class_row, tuple_row

from haosq.models import Job

CLAIM_COLUMNS = (
    "id, type, status, priority, payload, scheduled_at, due_at, started_at, attempts, "
    "max_attempts, worker_id, worker_pid, created_by, tags, timeout_seconds, "
    "cancel_requested_at, created_at, updated_at"
)

# Runnable rows of the filter's types (`{type_filter}`), due by `now`: the database clock in
# production, an injected clock in tests.
RUNNABLE = """status = 'pending'
       AND due_at <= coalesce(%(now)s::timestamptz, now())
       AND {type_filter}"""

# Mark the rows `next` picked as ours.
TAKE = """
UPDATE haosq.jobs j
   SET status = 'processing', attempts = j.attempts + 1, started_at = now(),
       completed_at = NULL, worker_id = %(worker_id)s, worker_pid = %(pid)s,
       owner_token = %(token)s, updated_at = now()
  FROM next
 WHERE j.id = next.id
RETURNING {columns}"""


def _pick(name: str, *, within: str = "", limit: str = "%(limit)s", materialized: bool = True) -> str:
    """A CTE locking up to `limit` runnable rows (`within` a range of them) in claim order,
    as the partial index `jobs_claim` (priority DESC, due_at, id WHERE status = 'pending')
    holds them, skipping rows another worker is locking."""
    return f"""{name} AS {"MATERIALIZED " if materialized else ""}(
    SELECT id
      FROM haosq.jobs
     WHERE {RUNNABLE}{within}
     ORDER BY priority DESC, due_at, id
     LIMIT {limit}
     FOR UPDATE SKIP LOCKED
)"""


# The claim from the head.
CLAIM = sql.SQL("WITH " + _pick("next", materialized=False) + TAKE)

# The claim from where this worker's last claim ended (`ClaimPosition`). The index entries
# of claimed jobs stay in `jobs_claim` until vacuum removes them, and while a transaction
# anywhere holds back the xmin horizon nothing removes them: a claim from the head then
# visits every job claimed since that snapshot, one heap fetch each, and slows down without
# bound. This claim starts its scan at the position instead, in three ranges of the same
# index, taken in claim order until `limit` rows are locked: the levels above the position's
# priority (new urgent work), the rest of its own level, then the levels below it. Jobs that
# land behind the position in its own level (a job rescued or released with its old due
# time, an enqueue whose transaction started earlier but committed later, a row skipped
# while another claim had it locked) are the head claim's: the worker runs one regularly.
CLAIM_AFTER = sql.SQL("WITH " + ",\n".join([
    _pick("above", within="\n       AND priority > %(after_priority)s"),
    _pick("level", within="\n       AND priority = %(after_priority)s"
                          "\n       AND (due_at, id) > (%(after_due_at)s::timestamptz, %(after_id)s::bigint)",
          limit="%(limit)s - (SELECT count(*) FROM above)"),
    _pick("below", within="\n       AND priority < %(after_priority)s",
          limit="%(limit)s - (SELECT count(*) FROM above) - (SELECT count(*) FROM level)"),
    "next AS (\n    SELECT id FROM above UNION ALL SELECT id FROM level UNION ALL SELECT id FROM below\n)",
]) + TAKE)


@dataclass(frozen=True, slots=True)
class ClaimPosition:
    """Where a claim ended: the key, in claim order, of the last job it took."""

    priority: int
    due_at: datetime
    job_id: int

    @classmethod
    def after(cls, jobs: Sequence[Job]) -> ClaimPosition | None:
        """The position after these claimed jobs (None for none)."""
        if not jobs:
            return None
        priority, due_at, job_id = max(map(_claim_order, jobs))
        return cls(-priority, due_at, job_id)


def _claim_order(job: Job) -> tuple[int, datetime, int]:
    assert job.due_at is not None  # claimed rows always carry it
    return (-job.priority, job.due_at, job.id)


_ALL_TYPES = sql.SQL("TRUE")

# Claimed rows become `Job` records straight from the result (every claimed column is a field).
CLAIMED = class_row(Job)
_decode_json = json.JSONDecoder().decode


class _JsonbPayloadLoader(Loader):
    """The claimed payloads: psycopg hands json.loads bytes, which it first sniffs for an
    encoding; PostgreSQL sends UTF-8, so decode and parse directly (once per claimed job)."""

    def load(self, data: Buffer) -> Any:
        return _decode_json(bytes(data).decode())


def claimed_cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[Job]:
    cursor = conn.cursor(row_factory=CLAIMED)
    cursor.adapters.register_loader(postgres.types["jsonb"].oid, _JsonbPayloadLoader)
    return cursor


@dataclass(frozen=True, slots=True)
class TypeFilter:
    """Which jobs a worker claims: exact types and whole families; both empty means all."""

    types: tuple[str, ...] = ()
    families: tuple[str, ...] = ()

    @classmethod
    def from_selectors(cls, selectors: Sequence[str]) -> TypeFilter:
        exact = tuple(s for s in selectors if ":" in s)
        families = tuple(s for s in selectors if ":" not in s)
        return cls(exact, families)

    @property
    def everything(self) -> bool:
        return not self.types and not self.families

    def selects(self, job_type: str) -> bool:
        return self.everything or job_type in self.types or job_type.split(":", 1)[0] in self.families


# Pin the plans of the claim loop's transaction, whatever the statistics say. Right after a
# large insert (before autovacuum has analysed it) the planner believes the table is nearly
# empty and trades `jobs_claim` for a bitmap scan and a sort over every pending row (40 ms
# per claim instead of 0.1 ms at 20,000 pending), and the acknowledgement for a bitmap scan
# (see also HELD_BY_TOKEN). These settings only penalise the other plans; they last until the
# end of the transaction (`set_config(..., true)` = SET LOCAL).
PIN_PLANS = """
SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
       set_config('enable_sort', 'off', true), set_config('enable_hashjoin', 'off', true),
       set_config('enable_mergejoin', 'off', true)
"""


def pin_plans(conn: psycopg.Connection[Any]) -> None:
    """Inside a transaction: keep its claim on `jobs_claim` and its acks on the primary key."""
    conn.execute(PIN_PLANS)


def _type_clause(type_filter: TypeFilter) -> sql.Composable:
    """Families as ranges on `type` (`email:` <= type < `email;`, ';' sorting right after
    ':'): the planner estimates a range from the column statistics, where it would guess a
    tiny selectivity for split_part() and could trade the claim index for a sort."""
    if type_filter.everything:
        return _ALL_TYPES
    parts: list[sql.Composable] = []
    if type_filter.types:
        parts.append(sql.SQL("type = ANY(%(types)s::text[])"))
    for index in range(len(type_filter.families)):
        parts.append(sql.SQL("(type >= {low} AND type < {high})").format(
            low=sql.Placeholder(f"family_low_{index}"), high=sql.Placeholder(f"family_high_{index}")))
    return sql.SQL("({})").format(sql.SQL(" OR ").join(parts))


@functools.lru_cache(maxsize=64)
def claim_query(type_filter: TypeFilter, after: bool = False) -> str:
    """The claim statement for a filter, from the head or from a position (`after`),
    composed and rendered once (the claim loop runs it every turn; a `Composed` would be
    rendered again at every execution)."""
    return (CLAIM_AFTER if after else CLAIM).format(
        type_filter=_type_clause(type_filter),
        columns=sql.SQL(", ").join(sql.SQL("j.") + sql.SQL(c.strip()) for c in CLAIM_COLUMNS.split(",")),
    ).as_string(None)


def claim_params(
    type_filter: TypeFilter, limit: int, *, worker_id: str, pid: int, token: str,
    now: datetime | None, after: ClaimPosition | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "now": now, "limit": limit, "worker_id": worker_id, "pid": pid, "token": token,
        "types": list(type_filter.types),
    }
    if after is not None:
        params.update(after_priority=after.priority, after_due_at=after.due_at,
                      after_id=after.job_id)
    for index, family in enumerate(type_filter.families):
        params[f"family_low_{index}"] = f"{family}:"
        params[f"family_high_{index}"] = f"{family};"
    return params


def claim_jobs(
    conn: psycopg.Connection[Any],
    type_filter: TypeFilter,
    limit: int,
    *,
    worker_id: str,
    pid: int,
    token: str,
    now: datetime | None = None,
    after: ClaimPosition | None = None,
) -> list[Job]:
    """Claim up to `limit` runnable jobs (attempts already counted): from the head of the
    queue, or from a position (see CLAIM_AFTER)."""
    params = claim_params(type_filter, limit, worker_id=worker_id, pid=pid, token=token, now=now,
                          after=after)
    return claimed_cursor(conn).execute(claim_query(type_filter, after is not None), params).fetchall()


def explain_claim(
    conn: psycopg.Connection[Any], type_filter: TypeFilter, limit: int, *,
    after: ClaimPosition | None = None, analyze: bool = False,
) -> str:
    """The plan of the claim statement as the worker runs it (for the tests that check it
    stays on `jobs_claim`). With `analyze`, the claim runs (and is rolled back) and the plan
    reports the buffers it touched."""
    params = claim_params(type_filter, limit, worker_id="explain", pid=0,
                          token="00000000-0000-0000-0000-000000000000", now=None, after=after)
    options = "(ANALYZE, BUFFERS) " if analyze else ""
    query = f"EXPLAIN {options}" + claim_query(type_filter, after is not None)
    with conn.transaction(force_rollback=True):
        pin_plans(conn)  # as the claim loop runs it
        rows = conn.execute(query, params).fetchall()
    return "\n".join(str(next(iter(r.values())) if isinstance(r, dict) else r[0]) for r in rows)


@dataclass(frozen=True, slots=True)
class Ack:
    """The end of one attempt, as the worker reports it.

    status: completed, failed, cancelled, or pending (a retry, due at `due_at`).
    """

    job_id: int
    attempt: int
    status: str
    result_json: str | None = None
    error: str | None = None
    due_at: datetime | None = None


# The batch of acknowledgements as rows, from the one JSON parameter `ack_params` builds.
ACK_BATCH = """json_to_recordset(%(acks)s::json)
       AS a(id bigint, attempt int, status text, result json, error text, due_at timestamptz)"""

# "Still running under this token", written so that no index but the primary key can serve
# it. Every job a worker process runs passes through `jobs_owner (owner_token) WHERE status =
# 'processing'` under the same token. Given `status = 'processing' AND owner_token = ...`,
# the planner, which believes a token holds a row or two, reads that index (for the token, or
# whole) instead of looking the batch's ids up. Normally the entries of finished jobs are
# marked dead as scans pass them; while a transaction anywhere holds back the xmin horizon
# none can be, and each acknowledgement read the entry of every job the worker had run since
# (a held-snapshot soak fell from 500 to 120 jobs/s). `IS NOT DISTINCT FROM` means the same
# here (neither column is NULL on a running job) but is not an operator the planner matches
# to an index or to a partial index's predicate.
HELD_BY_TOKEN = ("j.status IS NOT DISTINCT FROM 'processing' "
                 "AND j.owner_token IS NOT DISTINCT FROM %(token)s::uuid")

# One statement per batch. The guard (status, owner token, attempt) is in the WHERE clause:
# rows that no longer match are left alone and reported as refused. The batch travels as one
# JSON document: one parameter to send, parsed in C on the server.
ACK = f"""
UPDATE haosq.jobs j
   SET status = a.status,
       result = CASE WHEN a.status = 'completed' THEN coalesce(a.result::jsonb, 'null') ELSE j.result END,
       error = CASE WHEN a.status = 'completed' THEN NULL ELSE a.error END,
       completed_at = CASE WHEN a.status = 'pending' THEN NULL ELSE now() END,
       due_at = CASE WHEN a.status = 'pending' THEN coalesce(a.due_at, now()) ELSE j.due_at END,
       retry_at = CASE WHEN a.status = 'pending' THEN coalesce(a.due_at, now()) END,
       owner_token = CASE WHEN a.status = 'pending' THEN NULL ELSE j.owner_token END,
       updated_at = now()
  FROM {ACK_BATCH}
 WHERE j.id = ANY(%(ids)s::bigint[])
   AND j.id = a.id
   AND {HELD_BY_TOKEN}
   AND j.attempts = a.attempt
RETURNING j.id
"""

# The acknowledgement joins the batch to its rows with a hash join, whatever the statistics
# say. The planner prices a rescan of the batch's JSON at nearly nothing and believes almost no
# row is `processing` (the statistics were taken while the jobs were pending), so left to
# itself it picks a nested loop that parses the whole batch again for every row: batch² work,
# which made a 200-job acknowledgement three times dearer than the update itself. Set before
# the ACK and undone after it, inside the transaction (`set_config(..., true)` = SET LOCAL).
ACK_PLAN = """
SELECT set_config('enable_nestloop', 'off', true), set_config('enable_hashjoin', 'on', true)
"""
AFTER_ACK_PLAN = """
SELECT set_config('enable_nestloop', 'on', true), set_config('enable_hashjoin', 'off', true)
"""


def ack_jobs(conn: psycopg.Connection[Any], token: str, acks: Sequence[Ack]) -> set[int]:
    """Record the outcome of many attempts in one statement; returns the ids accepted."""
    if not acks:
        return set()
    cursor = conn.cursor(row_factory=tuple_row)
    send_acks(conn, cursor, token, acks)
    return {r[0] for r in cursor.fetchall()}


def send_acks(conn: psycopg.Connection[Any], cursor: psycopg.Cursor[Any], token: str,
              acks: Sequence[Ack]) -> None:
    """Execute the ACK on `cursor` (fetch from it afterwards) under its plan settings."""
    conn.execute(ACK_PLAN)
    cursor.execute(ACK, ack_params(token, acks))
    conn.execute(AFTER_ACK_PLAN)


# After a lost connection the worker cannot tell whether its last acknowledgement committed;
# it sends it again, and the guard then refuses it if the first one went through. These are
# the acks found already applied: a final status under this token and attempt, or a retry whose
# exact due time (computed by this worker) is on the row.
ALREADY_ACKNOWLEDGED = f"""
SELECT j.id
  FROM haosq.jobs j
  JOIN {ACK_BATCH}
    ON j.id = a.id
 WHERE j.id = ANY(%(ids)s::bigint[])
   AND ((a.status <> 'pending' AND j.status = a.status AND j.owner_token = %(token)s
         AND j.attempts = a.attempt)
        OR (a.status = 'pending' AND j.retry_at = a.due_at AND j.attempts >= a.attempt))
"""


def already_acknowledged(conn: psycopg.Connection[Any], token: str, acks: Sequence[Ack]) -> set[int]:
    """Which of these (refused) acks had been applied already by an earlier attempt to send them."""
    if not acks:
        return set()
    return {_first(r) for r in conn.execute(ALREADY_ACKNOWLEDGED, ack_params(token, acks)).fetchall()}


def explain_ack(conn: psycopg.Connection[Any], token: str, acks: Sequence[Ack], *,
                analyze: bool = False) -> str:
    """The plan of the acknowledgement as the claim loop runs it (for the tests that check each
    ack finds its row directly). With `analyze`, the ack runs (and is rolled back) and the
    plan reports the buffers it touched."""
    options = "(ANALYZE, BUFFERS) " if analyze else ""
    with conn.transaction(force_rollback=True):
        pin_plans(conn)
        conn.execute(ACK_PLAN)
        rows = conn.execute(f"EXPLAIN {options}" + ACK, ack_params(token, acks)).fetchall()
    return "\n".join(str(_first(r)) for r in rows)


def ack_params(token: str, acks: Sequence[Ack]) -> dict[str, Any]:
    """The ACK statement's parameters: the token, and the batch as a JSON array of objects
    (absent keys read as NULL). The result is already JSON text and goes in as it is (a JSON
    null reads as SQL NULL there, and the statement stores it back as the JSON value null)."""
    return {"token": token, "ids": [a.job_id for a in acks],
            "acks": "[" + ",".join(map(_ack_json, acks)) + "]"}


def _ack_json(ack: Ack) -> str:
    fields = [f'"id":{ack.job_id}', f'"attempt":{ack.attempt}', f'"status":"{ack.status}"']
    if ack.result_json is not None:
        fields.append('"result":' + ack.result_json)
    if ack.error is not None:
        fields.append('"error":' + _dumps(ack.error))
    if ack.due_at is not None:
        fields.append(f'"due_at":"{ack.due_at.isoformat()}"')
    return "{" + ",".join(fields) + "}"


_dumps = json.JSONEncoder(ensure_ascii=False).encode


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


# Shutdown: give back the jobs this process still holds, without counting the attempt.
RELEASE = """
UPDATE haosq.jobs j
   SET status = 'pending', attempts = j.attempts - 1, started_at = NULL, owner_token = NULL,
       worker_id = NULL, worker_pid = NULL, updated_at = now()
  FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS r(id, attempt)
 WHERE j.id = r.id AND j.status = 'processing' AND j.owner_token = %(token)s
   AND j.attempts = r.attempt
RETURNING j.id
"""


def release_jobs(conn: psycopg.Connection[Any], token: str, held: Sequence[tuple[int, int]]) -> list[int]:
    """Return (job id, attempt) pairs to pending; other workers are told at once."""
    if not held:
        return []
    rows = conn.execute(RELEASE, {
        "token": token, "ids": [h[0] for h in held], "attempts": [h[1] for h in held],
    }).fetchall()
    if rows:
        conn.execute("SELECT pg_notify('haosq_jobs', '*')")
    return [_first(r) for r in rows]


# After a lost connection the worker may not know whether a claim committed: any job held
# under its token that it is not running goes back, uncounted.
RELEASE_UNKNOWN = """
UPDATE haosq.jobs j
   SET status = 'pending', attempts = j.attempts - 1, started_at = NULL, owner_token = NULL,
       worker_id = NULL, worker_pid = NULL, updated_at = now()
 WHERE j.status = 'processing' AND j.owner_token = %(token)s AND j.id <> ALL(%(known)s::bigint[])
RETURNING j.id
"""


def release_unknown_jobs(conn: psycopg.Connection[Any], token: str, known: Sequence[int]) -> list[int]:
    rows = conn.execute(RELEASE_UNKNOWN, {"token": token, "known": list(known)}).fetchall()
    if rows:
        conn.execute("SELECT pg_notify('haosq_jobs', '*')")
    return [_first(r) for r in rows]


CANCEL_REQUESTED = f"""
SELECT j.id FROM haosq.jobs j
 WHERE j.id = ANY(%(ids)s::bigint[]) AND {HELD_BY_TOKEN}
   AND j.cancel_requested_at IS NOT NULL
"""


def cancel_requested(conn: psycopg.Connection[Any], token: str, ids: Sequence[int]) -> list[int]:
    """Which of these running jobs an operator asked to cancel (the NOTIFY may be lost)."""
    if not ids:
        return []
    return [_first(r) for r in conn.execute(CANCEL_REQUESTED, {"token": token, "ids": list(ids)})]


# -- the workers table ---------------------------------------------------------------------

REGISTER = """
INSERT INTO haosq.workers (token, worker_id, pid, hostname, concurrency, job_types)
VALUES (%(token)s, %(worker_id)s, %(pid)s, %(hostname)s, %(concurrency)s, %(job_types)s)
"""

# A holder of the same id whose heartbeat is older than the timeout is dead: mark it so,
# which frees the id (the unique index covers live workers only).
RETIRE_STALE_HOLDER = """
UPDATE haosq.workers SET status = 'dead', stopped_at = now()
 WHERE worker_id = %(worker_id)s AND status IN ('active', 'stopping')
   AND last_heartbeat < now() - %(timeout)s
"""

LIVE_HOLDER = """
SELECT hostname, pid, last_heartbeat FROM haosq.workers
 WHERE worker_id = %(worker_id)s AND status IN ('active', 'stopping')
"""


def register_worker(
    conn: psycopg.Connection[Any], *, token: str, worker_id: str, pid: int, hostname: str,
    concurrency: int, job_types: Sequence[str], stale_after: timedelta,
) -> dict[str, Any] | None:
    """Register this process. Returns None, or the live worker already using the id."""
    params = {"token": token, "worker_id": worker_id, "pid": pid, "hostname": hostname,
              "concurrency": concurrency, "job_types": list(job_types), "timeout": stale_after}
    conn.execute(RETIRE_STALE_HOLDER, params)
    try:
        with conn.transaction():
            conn.execute(REGISTER, params)
    except psycopg.errors.UniqueViolation:
        row = conn.execute(LIVE_HOLDER, params).fetchone()
        return dict(row) if row else {"hostname": "?", "pid": 0, "last_heartbeat": None}
    return None


HEARTBEAT = """
UPDATE haosq.workers
   SET last_heartbeat = now(), jobs_processed = %(processed)s, jobs_succeeded = %(succeeded)s,
       jobs_failed = %(failed)s,
       status = CASE WHEN status = 'dead' THEN 'active' ELSE status END,
       stopped_at = CASE WHEN status = 'dead' THEN NULL ELSE stopped_at END
 WHERE token = %(token)s AND status IN ('active', 'stopping', 'dead')
RETURNING status
"""


def heartbeat(
    conn: psycopg.Connection[Any], token: str, *, processed: int, succeeded: int, failed: int
) -> str | None:
    """Prove this worker is alive and record its counters. A worker that was marked dead
    while frozen comes back to life (its jobs were rescued already). Returns the status, or
    None when the row is gone (deleted by an operator)."""
    row = conn.execute(HEARTBEAT, {"token": token, "processed": processed,
                                   "succeeded": succeeded, "failed": failed}).fetchone()
    return None if row is None else _first(row)


SET_STATUS = """
UPDATE haosq.workers
   SET status = %(status)s,
       stopped_at = CASE WHEN %(status)s IN ('stopped', 'dead') THEN now() END,
       jobs_processed = coalesce(%(processed)s, jobs_processed),
       jobs_succeeded = coalesce(%(succeeded)s, jobs_succeeded),
       jobs_failed = coalesce(%(failed)s, jobs_failed)
 WHERE token = %(token)s
"""


def set_worker_status(
    conn: psycopg.Connection[Any], token: str, status: str, *, processed: int | None = None,
    succeeded: int | None = None, failed: int | None = None,
) -> None:
    """`stopping` when shutdown begins, `stopped` when this worker deregisters."""
    conn.execute(SET_STATUS, {"token": token, "status": status, "processed": processed,
                              "succeeded": succeeded, "failed": failed})


# Several workers compact at once only waste work; the advisory lock lets one through.
COMPACT_COUNTS = """
SELECT haosq.compact_job_counts() WHERE pg_try_advisory_xact_lock(hashtext('haosq.compact_job_counts'))
"""


def compact_job_counts(conn: psycopg.Connection[Any]) -> None:
    conn.execute(COMPACT_COUNTS)


def ack_and_claim(
    conn: psycopg.Connection[Any],
    token: str,
    acks: Sequence[Ack],
    type_filter: TypeFilter,
    limit: int,
    *,
    worker_id: str,
    pid: int,
    now: datetime | None = None,
    after: ClaimPosition | None = None,
    before: Callable[[psycopg.Connection[Any]], None] | None = None,
) -> tuple[set[int], list[Job]]:
    """The claim loop's one round trip: `before(conn)` (e.g. writing job logs), the batch
    acknowledgement and the next claim, in one transaction sent as one pipeline, so that the
    loop waits for the server (and for the GIL) once per turn instead of once per statement.

    A turn that only claims commits without waiting for the WAL flush (the pickup path of an
    idle worker: an fsync saved per job). Should the server crash before that commit reaches
    disk, the claim is undone and the job is pending again: run again, never lost. Turns
    that acknowledge are fully durable, and flush any such claim with them.

    Returns (ids whose acknowledgement was accepted, claimed rows)."""
    ack_cursor = conn.cursor(row_factory=tuple_row)
    claim_cursor = claimed_cursor(conn)
    with conn.pipeline(), conn.transaction():
        if not acks and before is None:
            conn.execute("SET LOCAL synchronous_commit = off")
        pin_plans(conn)
        if before is not None:
            before(conn)
        if acks:
            send_acks(conn, ack_cursor, token, acks)
        if limit:
            claim_cursor.execute(claim_query(type_filter, after is not None), claim_params(
                type_filter, limit, worker_id=worker_id, pid=pid, token=token, now=now,
                after=after))
    accepted = {r[0] for r in ack_cursor.fetchall()} if acks else set()
    rows = claim_cursor.fetchall() if limit else []
    return accepted, rows
