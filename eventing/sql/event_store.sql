-- The event store of one command service, with its outbox.
-- Applied idempotently at start-up under an advisory lock.

CREATE TABLE IF NOT EXISTS events (
    -- Global order of appends within this service; commit order may differ, so nothing
    -- reads "everything after position N" — the outbox below is the publishing queue.
    position       BIGSERIAL PRIMARY KEY,
    aggregate_type TEXT        NOT NULL,
    aggregate_id   TEXT        NOT NULL,
    sequence       BIGINT      NOT NULL CHECK (sequence >= 1),
    event_id       UUID        NOT NULL UNIQUE,
    event_type     TEXT        NOT NULL,
    event_version  TEXT        NOT NULL,
    -- The event data (CloudEvents `data`), without the enum tag.
    data           JSONB       NOT NULL,
    metadata       JSONB       NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    -- The optimistic concurrency check: two commands deciding on the same version of an
    -- aggregate cannot both append.
    CONSTRAINT events_aggregate_sequence UNIQUE (aggregate_type, aggregate_id, sequence)
);

-- Aggregate states as of `last_sequence` (the last event they include), written with
-- the append that reached the snapshot interval; loads replay only the events after it.
-- (`snapshots`, the earlier table, recorded a snapshot counter instead of the sequence.)
DROP TABLE IF EXISTS snapshots;
CREATE TABLE IF NOT EXISTS aggregate_snapshots (
    aggregate_type TEXT        NOT NULL,
    aggregate_id   TEXT        NOT NULL,
    last_sequence  BIGINT      NOT NULL,
    payload        JSONB       NOT NULL,
    taken_at       TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Events committed but not yet acknowledged by Kafka. A row is written in the same
-- statement as its event (from the position that insert returns) and deleted by the
-- relay after the delivery report. No foreign key: its check was a fifth of the append
-- statement's execution and could not fail (stores before it had one).
CREATE TABLE IF NOT EXISTS outbox (
    position BIGINT PRIMARY KEY
);
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_position_fkey; -- PostgreSQL only

-- The first answer to each request sent with an `Idempotency-Key` (docs/idempotency.md),
-- per caller. Written in the transaction of the command's events: the key is stored
-- exactly when the effect is, and a second request with it answers this row again.
-- Kept at least 24 hours (rows older than that are deleted now and then on write).
CREATE TABLE IF NOT EXISTS idempotency_keys (
    -- The caller: a customer id, `admin`, or `anonymous`.
    scope             TEXT        NOT NULL,
    idempotency_key   TEXT        NOT NULL,
    -- SHA-256 of a secret, the request's method, path and JSON body (keys sorted).
    fingerprint       TEXT        NOT NULL,
    -- The answer: status, JSON body and headers. Written by the same transaction that
    -- inserts the row, after the command (never seen without them).
    status            INTEGER,
    body              TEXT,
    consistency_token TEXT,
    location          TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys (created_at);
