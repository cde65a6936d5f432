-- The `orders` projection's tables, written only by its projector. Each row remembers
-- the sequence of the last event applied to it (`version`). A rebuild creates a copy of
-- these tables with versioned names (`projections::versions`), so keep every name here
-- in the projection's `tables` list.

-- The order view (SPEC §3.4). Product names/SKUs and the customer's name are joined from
-- `products` and `customers` when read, so an order projected before its product or
-- customer shows them as soon as they arrive.
CREATE TABLE IF NOT EXISTS orders (
    order_id      UUID PRIMARY KEY,
    customer_id   UUID        NOT NULL,
    status        TEXT        NOT NULL,
    cancel_reason TEXT,
    total         BIGINT      NOT NULL,
    -- Revision 2 (OrderPlaced v2); added to older tables by `added_columns`.
    currency      TEXT        NOT NULL DEFAULT 'JPY',
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

-- Every saga step of an order, with the service it came from. One index, in the order
-- the view lists the steps; it also makes each event's row unique (an event belongs to
-- one order and has one time).
CREATE TABLE IF NOT EXISTS order_history (
    order_id   UUID        NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    event_id   UUID        NOT NULL,
    event_type TEXT        NOT NULL,
    source     TEXT        NOT NULL,
    PRIMARY KEY (order_id, at, event_id)
);
