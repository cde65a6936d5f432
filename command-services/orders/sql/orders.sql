-- The orders service's replica of the catalogue (prices), fed by its reaction to
-- inventory events: orders are priced from here, with no synchronous call to inventory.
CREATE TABLE IF NOT EXISTS catalogue (
    product_id UUID PRIMARY KEY,
    price      BIGINT      NOT NULL,
    version    BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- The confirmation step of the order saga waits for two facts from two topics, in any
-- order: stock reserved (inventory) and payment completed (payments). A row collects
-- them; the order is confirmed once both are in.
CREATE TABLE IF NOT EXISTS order_saga (
    order_id          UUID PRIMARY KEY,
    stock_reserved    BOOLEAN NOT NULL DEFAULT false,
    payment_completed BOOLEAN NOT NULL DEFAULT false
);

-- The saga deadline of every pending order, written in the transaction that places it
-- and removed by the one that confirms or cancels it. The deadline worker cancels what
-- is overdue (reason `timeout`); it survives restarts because it is only this table.
CREATE TABLE IF NOT EXISTS order_deadlines (
    order_id UUID PRIMARY KEY,
    due_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS order_deadlines_due ON order_deadlines (due_at);
