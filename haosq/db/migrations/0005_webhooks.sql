-- Completion webhooks: when a job reaches a final state (completed, failed, cancelled) and a
-- webhook URL applies to it (its own, or its type's or family's route), the same statement
-- that finished it enqueues a `haosq:webhook` job. Delivery is then an ordinary job: signed,
-- retried with the queue's backoff, visible in the TUI, never lost between "finished" and
-- "notified" because both happen in one transaction.

-- Per-type (or per-family: "email") URLs, written from the [webhooks.routes] table of the
-- configuration when a worker starts.
CREATE TABLE haosq.webhook_routes (
    type       text        PRIMARY KEY,
    url        text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Per-job URLs, attached in the transaction that adds the job (haosq.webhooks.add_with_webhook).
CREATE TABLE haosq.job_webhooks (
    job_id bigint PRIMARY KEY REFERENCES haosq.jobs (id) ON DELETE CASCADE,
    url    text   NOT NULL
);

CREATE FUNCTION haosq.enqueue_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Two index probes keep the common case (no webhooks at all) nearly free.
    IF NOT EXISTS (SELECT 1 FROM haosq.webhook_routes) AND NOT EXISTS (SELECT 1 FROM haosq.job_webhooks) THEN
        RETURN NULL;
    END IF;
    -- The finished rows first; routes are looked up once per type, not once per row.
    WITH finished AS (
        SELECT n.id, n.type, n.status
          FROM new_rows n
          JOIN old_rows o ON o.id = n.id
         WHERE n.status IN ('completed', 'failed', 'cancelled')
           AND o.status IS DISTINCT FROM n.status
           AND n.type <> 'haosq:webhook'
    ), routed AS (
        SELECT t.type,
               (SELECT r.url FROM haosq.webhook_routes r
                 WHERE r.type IN (t.type, split_part(t.type, ':', 1))
                 ORDER BY length(r.type) DESC LIMIT 1) AS url
          FROM (SELECT DISTINCT type FROM finished) t
    )
    INSERT INTO haosq.jobs (type, payload, max_attempts, created_by)
    SELECT 'haosq:webhook',
           jsonb_build_object('job_id', f.id, 'job_type', f.type, 'status', f.status,
                              'url', coalesce(w.url, routed.url)),
           10,
           'haosq'
      FROM finished f
      JOIN routed ON routed.type = f.type
      LEFT JOIN haosq.job_webhooks w ON w.job_id = f.id
     WHERE coalesce(w.url, routed.url) IS NOT NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_enqueue_webhooks AFTER UPDATE ON haosq.jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION haosq.enqueue_webhooks();
