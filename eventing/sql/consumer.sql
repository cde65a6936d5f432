-- What a consumer (projector or saga reaction) keeps in its own database so that its
-- effect, its dedup record and its checkpoint commit in one transaction.

CREATE TABLE IF NOT EXISTS consumer_checkpoints (
    consumer    TEXT        NOT NULL,
    topic       TEXT        NOT NULL,
    partition   INTEGER     NOT NULL,
    -- Kafka semantics: the offset of the next record to process.
    next_offset BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (consumer, topic, partition)
);

-- Event ids already applied: a duplicate produced by a relay retry (same event, new
-- offset) changes nothing a second time.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer     TEXT        NOT NULL,
    event_id     UUID        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE IF NOT EXISTS consumer_status (
    consumer       TEXT PRIMARY KEY,
    events_applied BIGINT      NOT NULL DEFAULT 0,
    last_event_at  TIMESTAMPTZ,
    last_error     TEXT,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- Records a consumer gave up on after its retries; the same record went to the
-- dead-letter topic. `retried_at` is set when an operator re-drives it.
CREATE TABLE IF NOT EXISTS dead_letters (
    id          BIGSERIAL PRIMARY KEY,
    consumer    TEXT        NOT NULL,
    topic       TEXT        NOT NULL,
    partition   INTEGER     NOT NULL,
    "offset"    BIGINT      NOT NULL,
    event_id    TEXT,
    event_type  TEXT,
    error       TEXT        NOT NULL,
    attempts    INTEGER     NOT NULL,
    headers     JSONB       NOT NULL,
    payload     TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    retried_at  TIMESTAMPTZ,
    UNIQUE (consumer, topic, partition, "offset")
);

-- Replay mode (imports): events a saga reaction applies to its own tables without
-- issuing commands, because their outcomes are already in the imported history. Each row
-- is removed when its event is applied.
CREATE TABLE IF NOT EXISTS replay_only (
    consumer TEXT NOT NULL,
    event_id UUID NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- Read-your-writes (SPEC §3.6): the last sequence of each aggregate a consumer applied,
-- kept by projectors so that a read can wait for a command's events.
CREATE TABLE IF NOT EXISTS applied_versions (
    consumer TEXT   NOT NULL,
    source   TEXT   NOT NULL,
    subject  TEXT   NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (consumer, source, subject)
);

-- Each time a consumer found its checkpoint behind the records it read (commits the
-- database acknowledged and then lost in a crash, or a log position ahead of the
-- checkpoint): it read again from the checkpoint. Kept so that the mismatch is seen.
CREATE TABLE IF NOT EXISTS consumer_rewinds (
    consumer    TEXT        NOT NULL,
    topic       TEXT        NOT NULL,
    partition   INTEGER     NOT NULL,
    -- Where the database said to resume, and the first record read instead.
    checkpoint  BIGINT      NOT NULL,
    read_offset BIGINT      NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
