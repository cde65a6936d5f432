-- The `customers` projection's tables, written only by its projector. Each row remembers
-- the sequence of the last event applied to it (`version`). A rebuild creates a copy of
-- these tables with versioned names (`projections::versions`), so keep every name here
-- in the projection's `tables` list.

-- Customers' account details. Their figures are in `customer_figures`.
CREATE TABLE IF NOT EXISTS customers (
    customer_id    UUID PRIMARY KEY,
    name           TEXT        NOT NULL,
    email          TEXT        NOT NULL,
    address        JSONB       NOT NULL,
    version        BIGINT      NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

-- Each customer's figures, moved by deltas from payments and orders events: the wallet
-- balance (deposits − completed payments + refunds), orders placed, and lifetime spend
-- (completed payments − refunds). Kept apart from `customers` so that a figure projected
-- before the customer's registration (other topics, no order between them) is not lost.
CREATE TABLE IF NOT EXISTS customer_figures (
    customer_id    UUID PRIMARY KEY,
    wallet_balance BIGINT      NOT NULL DEFAULT 0,
    orders_count   BIGINT      NOT NULL DEFAULT 0,
    lifetime_spend BIGINT      NOT NULL DEFAULT 0,
    updated_at     TIMESTAMPTZ NOT NULL
);
