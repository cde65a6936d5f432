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

CREATE TABLE IF NOT EXISTS snapshots (
    aggregate_type TEXT        NOT NULL,
    aggregate_id   TEXT        NOT NULL,
    last_sequence  BIGINT      NOT NULL,
    payload        JSONB       NOT NULL,
    taken_at       TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Events committed but not yet acknowledged by Kafka. A row is written in the same
-- transaction as its event and deleted by the relay after the delivery report.
CREATE TABLE IF NOT EXISTS outbox (
    position BIGINT PRIMARY KEY REFERENCES events (position)
);
