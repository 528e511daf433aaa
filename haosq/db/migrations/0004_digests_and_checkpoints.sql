-- haosq schema, version 4: digest items and per-job checkpoints for the built-in handlers.

-- Content producers collect over time (`JobQueue.add_digest_item`) and `email:digest` /
-- `notification:digest` send as one message per recipient and channel.
CREATE TABLE haosq.digest_items (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient  text        NOT NULL CONSTRAINT digest_items_recipient_set CHECK (recipient <> ''),
    channel    text        NOT NULL CONSTRAINT digest_items_channel_set CHECK (channel <> ''),
    item       jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The digest job that has taken the item for its message. A retry of that job takes the
    -- same items again; a job that is no longer pending or processing loses its claim.
    -- No foreign key: finished jobs are pruned while their sent items may be kept.
    claimed_by bigint,
    sent_at    timestamptz,
    sent_by    bigint
);
-- The items still to send, per recipient and channel, oldest first.
CREATE INDEX digest_items_pending ON haosq.digest_items (recipient, channel, id) WHERE sent_at IS NULL;
-- Retention pruning of sent items.
CREATE INDEX digest_items_sent_at ON haosq.digest_items (sent_at) WHERE sent_at IS NOT NULL;

-- Units of work a job has finished (a recipient the mail server accepted, a device notified),
-- written as each one completes, so that a retry after a crash skips them instead of sending
-- twice. Removed with the job.
CREATE TABLE haosq.job_checkpoints (
    job_id     bigint      NOT NULL REFERENCES haosq.jobs (id) ON DELETE CASCADE,
    key        text        NOT NULL,
    value      jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, key)
);
