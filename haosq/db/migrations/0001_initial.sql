-- haosq schema, version 1: jobs, job logs, workers, status counters, the enqueue function.

CREATE TABLE haosq.jobs (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type                text        NOT NULL
                        CONSTRAINT jobs_type_format CHECK (type ~ '^[a-z0-9][a-z0-9_.-]*:[a-z0-9][a-z0-9_.-]*$'),
    status              text        NOT NULL DEFAULT 'pending'
                        CONSTRAINT jobs_status_known
                        CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    priority            integer     NOT NULL DEFAULT 0
                        CONSTRAINT jobs_priority_range CHECK (priority BETWEEN -1000 AND 1000),
    payload             jsonb       NOT NULL DEFAULT '{}'
                        CONSTRAINT jobs_payload_object CHECK (jsonb_typeof(payload) = 'object'),
    result              jsonb,
    error               text,
    scheduled_at        timestamptz NOT NULL DEFAULT now(),
    -- When the job next becomes runnable: scheduled_at at first, retry_at after a retryable
    -- failure. A rescued job keeps it, so that it is not pushed behind the backlog.
    due_at              timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    completed_at        timestamptz,
    attempts            integer     NOT NULL DEFAULT 0,
    -- NULL means "the running worker's default" (HAOSQ_MAX_ATTEMPTS / JOB_QUEUE_MAX_ATTEMPTS).
    max_attempts        integer     CONSTRAINT jobs_max_attempts_positive CHECK (max_attempts >= 1),
    retry_at            timestamptz,
    worker_id           text,
    worker_pid          integer,
    -- The token of the worker process that holds a processing job. Every state change made by
    -- a worker checks it (with status and attempt), so that a worker frozen past its lease
    -- cannot overwrite a job that was rescued and finished elsewhere.
    owner_token         uuid,
    -- Per-job time limit for one attempt; NULL means the handler's default.
    timeout_seconds     double precision CONSTRAINT jobs_timeout_positive CHECK (timeout_seconds > 0),
    -- Set when an operator cancels a running job; the worker ends it as cancelled.
    cancel_requested_at timestamptz,
    created_by          text,
    tags                text[]      NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Jobs churn: vacuum early and often so that the claim index stays small (dead tuples in a
-- SKIP LOCKED queue cost every claim). Leave room on pages for HOT updates.
ALTER TABLE haosq.jobs SET (
    fillfactor = 85,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);

-- The claim path: only runnable rows, in claim order.
CREATE INDEX jobs_claim ON haosq.jobs (priority DESC, due_at, id) WHERE status = 'pending';
-- Scheduled counts and oldest-pending age without touching history.
CREATE INDEX jobs_pending_due ON haosq.jobs (due_at) WHERE status = 'pending';
-- Stale-job rescue and shutdown release: the jobs a worker holds.
CREATE INDEX jobs_owner ON haosq.jobs (owner_token) WHERE status = 'processing';
-- Listings by status and by type, newest first (keyset paging on id).
CREATE INDEX jobs_status_id ON haosq.jobs (status, id DESC);
CREATE INDEX jobs_type_id ON haosq.jobs (type, id DESC);
CREATE INDEX jobs_tags ON haosq.jobs USING gin (tags);
-- Throughput over recent time and retention pruning of finished jobs.
CREATE INDEX jobs_completed_at ON haosq.jobs (completed_at) WHERE completed_at IS NOT NULL;

CREATE TABLE haosq.job_logs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     bigint      NOT NULL REFERENCES haosq.jobs (id) ON DELETE CASCADE,
    attempt    integer,
    level      text        NOT NULL
               CONSTRAINT job_logs_level_known CHECK (level IN ('debug', 'info', 'warn', 'error')),
    message    text        NOT NULL,
    metadata   jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_logs_job ON haosq.job_logs (job_id, id);
CREATE INDEX job_logs_created_at ON haosq.job_logs (created_at);

CREATE TABLE haosq.workers (
    -- A fresh token per process start; worker_id is the name operators see.
    token          uuid        PRIMARY KEY,
    worker_id      text        NOT NULL,
    pid            integer     NOT NULL,
    hostname       text        NOT NULL,
    status         text        NOT NULL DEFAULT 'active'
                   CONSTRAINT workers_status_known CHECK (status IN ('active', 'stopping', 'stopped', 'dead')),
    concurrency    integer     NOT NULL CHECK (concurrency >= 1),
    job_types      text[]      NOT NULL DEFAULT '{}',
    jobs_processed bigint      NOT NULL DEFAULT 0,
    jobs_succeeded bigint      NOT NULL DEFAULT 0,
    jobs_failed    bigint      NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    stopped_at     timestamptz
);
-- A worker id is unique among live workers only: a restarted daemon reuses its name.
CREATE UNIQUE INDEX workers_live_id ON haosq.workers (worker_id) WHERE status IN ('active', 'stopping');

-- Job counts by type and status, kept as deltas appended by statement-level triggers
-- (one insert per statement, not per row, and no hot counter row to contend on).
-- `haosq.compact_job_counts()` folds the deltas; stats read the sums, never count(*) history.
CREATE TABLE haosq.job_counts (
    type   text   NOT NULL,
    status text   NOT NULL,
    delta  bigint NOT NULL
);

CREATE FUNCTION haosq.count_inserted_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO haosq.job_counts (type, status, delta)
    SELECT type, status, count(*) FROM new_rows GROUP BY type, status;
    RETURN NULL;
END $$;

CREATE FUNCTION haosq.count_updated_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO haosq.job_counts (type, status, delta)
    SELECT type, status, sum(delta) FROM (
        SELECT type, status, -1 AS delta FROM old_rows
        UNION ALL
        SELECT type, status, 1 AS delta FROM new_rows
    ) AS changes
    GROUP BY type, status
    HAVING sum(delta) <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION haosq.count_deleted_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO haosq.job_counts (type, status, delta)
    SELECT type, status, -count(*) FROM old_rows GROUP BY type, status;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON haosq.jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION haosq.count_inserted_jobs();
CREATE TRIGGER jobs_count_update AFTER UPDATE ON haosq.jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION haosq.count_updated_jobs();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON haosq.jobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION haosq.count_deleted_jobs();

CREATE FUNCTION haosq.compact_job_counts() RETURNS void
LANGUAGE sql AS $$
    WITH folded AS (DELETE FROM haosq.job_counts RETURNING type, status, delta)
    INSERT INTO haosq.job_counts (type, status, delta)
    SELECT type, status, sum(delta) FROM folded GROUP BY type, status HAVING sum(delta) <> 0;
$$;

-- Wake-up hint for workers: once per INSERT statement that adds runnable jobs, never on
-- updates. The payload lists the new jobs' types ('*' when too many to list) so that a
-- worker for other types can ignore it. A notification is only a hint: workers also poll.
CREATE FUNCTION haosq.notify_inserted_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    types text;
BEGIN
    SELECT string_agg(DISTINCT type, ',') INTO types
    FROM new_rows WHERE status = 'pending' AND due_at <= now();
    IF types IS NOT NULL THEN
        PERFORM pg_notify('haosq_jobs', CASE WHEN length(types) > 4000 THEN '*' ELSE types END);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON haosq.jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION haosq.notify_inserted_jobs();

-- Enqueue from any language: SELECT haosq.add_job('email:send', '{"to": "a@example.com"}');
CREATE FUNCTION haosq.add_job(
    type         text,
    payload      jsonb       DEFAULT '{}',
    priority     integer     DEFAULT 0,
    max_attempts integer     DEFAULT NULL,
    scheduled_at timestamptz DEFAULT NULL,
    tags         text[]      DEFAULT '{}',
    created_by   text        DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
BEGIN
    IF type IS NULL OR type !~ '^[a-z0-9][a-z0-9_.-]*:[a-z0-9][a-z0-9_.-]*$' THEN
        RAISE EXCEPTION 'invalid job type %: expected family:action in lowercase letters, digits, "-", "_" or "."', quote_nullable(type)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF payload IS NOT NULL AND jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'invalid payload: expected a JSON object, got %', jsonb_typeof(payload)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF priority IS NOT NULL AND priority NOT BETWEEN -1000 AND 1000 THEN
        RAISE EXCEPTION 'invalid priority %: expected an integer from -1000 to 1000', priority
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_attempts IS NOT NULL AND max_attempts < 1 THEN
        RAISE EXCEPTION 'invalid max_attempts %: expected at least 1', max_attempts
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO haosq.jobs (type, payload, priority, max_attempts, scheduled_at, due_at, tags, created_by)
    VALUES (
        add_job.type,
        coalesce(add_job.payload, '{}'),
        coalesce(add_job.priority, 0),
        add_job.max_attempts,
        coalesce(add_job.scheduled_at, now()),
        coalesce(add_job.scheduled_at, now()),
        coalesce(add_job.tags, '{}'),
        add_job.created_by
    )
    RETURNING id INTO new_id;
    RETURN new_id;
END $$;
