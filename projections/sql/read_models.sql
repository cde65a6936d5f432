-- Read models, built only by projectors from the event log. Each row remembers the
-- sequence of the last event applied to it (`version`).

CREATE TABLE IF NOT EXISTS products (
    product_id UUID PRIMARY KEY,
    sku        TEXT        NOT NULL,
    name       TEXT        NOT NULL,
    price      BIGINT      NOT NULL,
    -- Units received: initial stock plus restocks (the product's own partition).
    received   BIGINT      NOT NULL,
    version    BIGINT      NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Units reserved and sold per product, moved by reservation events. Those are keyed by
-- order, so they reach the projector on other partitions than the product's own events
-- and may come first: they add to this row, created on first use, never to `products`.
-- available = received - reserved - sold, computed when read.
CREATE TABLE IF NOT EXISTS product_stock (
    product_id UUID PRIMARY KEY,
    reserved   BIGINT NOT NULL DEFAULT 0,
    sold       BIGINT NOT NULL DEFAULT 0
);

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

-- The order view (SPEC §3.4). Product names/SKUs and the customer's name are joined from
-- `products` and `customers` when read, so an order projected before its product or
-- customer shows them as soon as they arrive.
CREATE TABLE IF NOT EXISTS orders (
    order_id      UUID PRIMARY KEY,
    customer_id   UUID        NOT NULL,
    status        TEXT        NOT NULL,
    cancel_reason TEXT,
    total         BIGINT      NOT NULL,
    version       BIGINT      NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, order_id DESC);

CREATE TABLE IF NOT EXISTS order_lines (
    order_id   UUID   NOT NULL,
    position   INTEGER NOT NULL,
    product_id UUID   NOT NULL,
    quantity   BIGINT NOT NULL,
    unit_price BIGINT NOT NULL,
    line_total BIGINT NOT NULL,
    PRIMARY KEY (order_id, position)
);

-- Every saga step of an order, with the service it came from.
CREATE TABLE IF NOT EXISTS order_history (
    event_id   UUID PRIMARY KEY,
    order_id   UUID        NOT NULL,
    event_type TEXT        NOT NULL,
    source     TEXT        NOT NULL,
    at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS order_history_by_order ON order_history (order_id, at);
