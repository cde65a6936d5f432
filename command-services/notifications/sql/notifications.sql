-- The notifications service's read model, written by the append that records each of its
-- events (in the same transaction) and so a function of its event store: an import or a
-- replay of the store rebuilds it. The dispatcher's lease (`leased_until`) is the only
-- column no event writes.

-- Registered endpoints. No secret: it is derived from `secret_nonce` and the service's key.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    endpoint_id     UUID PRIMARY KEY,
    url             TEXT        NOT NULL,
    -- JSON array of CloudEvents types.
    event_types     TEXT        NOT NULL,
    description     TEXT        NOT NULL,
    secret_nonce    TEXT        NOT NULL,
    -- After a rotation, the previous secret's nonce: deliveries carry its signature too
    -- until `previous_until`.
    previous_nonce  TEXT,
    previous_until  TIMESTAMPTZ,
    -- active, paused, disabled or deleted.
    status          TEXT        NOT NULL,
    disabled_reason TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

-- Which endpoints want which event type (what the consumer looks up per event).
CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    event_type  TEXT NOT NULL,
    endpoint_id UUID NOT NULL,
    PRIMARY KEY (event_type, endpoint_id)
);

-- One event on its way to one endpoint; `payload` is the exact body every attempt sends.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id      UUID PRIMARY KEY,
    endpoint_id      UUID        NOT NULL,
    webhook_id       TEXT        NOT NULL,
    event_id         UUID        NOT NULL,
    event_type       TEXT        NOT NULL,
    payload          TEXT        NOT NULL,
    -- pending, delivered or failed.
    status           TEXT        NOT NULL,
    attempts         BIGINT      NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    -- An instance is attempting it until then (another may take it over after).
    leased_until     TIMESTAMPTZ,
    last_status_code BIGINT,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_of_endpoint ON webhook_deliveries (endpoint_id, created_at);

-- Every attempt of a delivery: the delivery log.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id UUID        NOT NULL,
    attempt     BIGINT      NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    -- delivered, retrying or failed.
    outcome     TEXT        NOT NULL,
    status_code BIGINT,
    latency_ms  BIGINT      NOT NULL,
    error       TEXT,
    next_attempt_at TIMESTAMPTZ,
    PRIMARY KEY (delivery_id, attempt)
);
