-- Read models, built only by projectors from the event log. Each row remembers the
-- sequence of the last event applied to it (`version`).

CREATE TABLE IF NOT EXISTS products (
    product_id UUID PRIMARY KEY,
    sku        TEXT        NOT NULL,
    name       TEXT        NOT NULL,
    price      BIGINT      NOT NULL,
    available  BIGINT      NOT NULL,
    reserved   BIGINT      NOT NULL DEFAULT 0,
    sold       BIGINT      NOT NULL DEFAULT 0,
    version    BIGINT      NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Customers with their wallet and order figures (the last three stay 0 until payments
-- and orders feed them).
CREATE TABLE IF NOT EXISTS customers (
    customer_id    UUID PRIMARY KEY,
    name           TEXT        NOT NULL,
    email          TEXT        NOT NULL,
    address        JSONB       NOT NULL,
    wallet_balance BIGINT      NOT NULL DEFAULT 0,
    orders_count   BIGINT      NOT NULL DEFAULT 0,
    lifetime_spend BIGINT      NOT NULL DEFAULT 0,
    version        BIGINT      NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

-- Wallet balances by customer, kept apart from `customers` so that a deposit projected
-- before its customer's registration (two topics, no order between them) is not lost.
CREATE TABLE IF NOT EXISTS wallets (
    customer_id UUID PRIMARY KEY,
    balance     BIGINT      NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL
);
