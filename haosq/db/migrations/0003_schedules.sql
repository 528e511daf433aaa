-- Recurring schedules, the record of each run they enqueued, and the maintenance claims.

CREATE TABLE haosq.schedules (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text        NOT NULL UNIQUE
                     CONSTRAINT schedules_name_format CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$'),
    type             text        NOT NULL
                     CONSTRAINT schedules_type_format CHECK (type ~ '^[a-z0-9][a-z0-9_.-]*:[a-z0-9][a-z0-9_.-]*$'),
    payload          jsonb       NOT NULL DEFAULT '{}'
                     CONSTRAINT schedules_payload_object CHECK (jsonb_typeof(payload) = 'object'),
    -- Exactly one of a 5-field cron expression (read in `timezone`) or a fixed interval.
    cron             text,
    interval_seconds double precision CONSTRAINT schedules_interval_positive CHECK (interval_seconds > 0),
    CONSTRAINT schedules_one_trigger CHECK ((cron IS NULL) <> (interval_seconds IS NULL)),
    timezone         text        NOT NULL DEFAULT 'UTC',
    priority         integer     NOT NULL DEFAULT 0
                     CONSTRAINT schedules_priority_range CHECK (priority BETWEEN -1000 AND 1000),
    max_attempts     integer     CONSTRAINT schedules_max_attempts_positive CHECK (max_attempts >= 1),
    tags             text[]      NOT NULL DEFAULT '{}',
    timeout_seconds  double precision CONSTRAINT schedules_timeout_positive CHECK (timeout_seconds > 0),
    -- What a daemon does with runs that fell due while no daemon was running.
    catch_up         text        NOT NULL DEFAULT 'latest'
                     CONSTRAINT schedules_catch_up_known CHECK (catch_up IN ('none', 'latest', 'all')),
    catch_up_limit   integer     NOT NULL DEFAULT 10 CONSTRAINT schedules_catch_up_limit CHECK (catch_up_limit >= 1),
    enabled          boolean     NOT NULL DEFAULT true,
    -- 'config' rows are rewritten from the daemons' [[schedules]] at start; 'api' rows only
    -- change through the Python API or the CLI.
    source           text        NOT NULL DEFAULT 'api'
                     CONSTRAINT schedules_source_known CHECK (source IN ('api', 'config')),
    -- Interval schedules fire at anchor_at + k * interval, the same instants on every daemon.
    anchor_at        timestamptz NOT NULL DEFAULT now(),
    next_due_at      timestamptz NOT NULL,
    last_due_at      timestamptz,
    -- No foreign key: finished jobs are pruned, the schedule keeps its history pointer.
    last_job_id      bigint,
    last_enqueued_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- The scheduler's only hot query: enabled schedules whose next run is due.
CREATE INDEX schedules_due ON haosq.schedules (next_due_at) WHERE enabled;

-- One row per (schedule, due time), inserted in the same transaction as the job it enqueues:
-- the primary key is what makes a run enqueue exactly once however many daemons race for it.
CREATE TABLE haosq.schedule_runs (
    schedule_id bigint      NOT NULL REFERENCES haosq.schedules (id) ON DELETE CASCADE,
    due_at      timestamptz NOT NULL,
    job_id      bigint,
    manual      boolean     NOT NULL DEFAULT false,
    enqueued_by text,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, due_at)
);
CREATE INDEX schedule_runs_enqueued_at ON haosq.schedule_runs (enqueued_at);

-- Maintenance duties run on every daemon; a guarded update of this row lets one of them
-- (whichever asks first) do each period's work.
CREATE TABLE haosq.maintenance_runs (
    task             text        PRIMARY KEY,
    last_started_at  timestamptz NOT NULL,
    last_finished_at timestamptz,
    last_result      jsonb,
    last_error       text,
    run_by           text
);
