-- The payments service's replica of registered customers, fed by its reaction to
-- CustomerRegistered on customers.events (no synchronous call to the customers service).
CREATE TABLE IF NOT EXISTS known_customers (
    customer_id   UUID PRIMARY KEY,
    registered_at TIMESTAMPTZ NOT NULL
);

-- The charge step of the order saga waits for two facts that arrive on two topics in
-- any order: the order (customer, total, from OrderPlaced) and its reservation
-- (StockReserved). A row collects them; the wallet is charged once both are in, unless
-- the order was cancelled first.
CREATE TABLE IF NOT EXISTS order_payments (
    order_id    UUID PRIMARY KEY,
    customer_id UUID,
    total       BIGINT,
    reserved    BOOLEAN NOT NULL DEFAULT false,
    charged     BOOLEAN NOT NULL DEFAULT false,
    -- OrderCancelled seen: no charge from now on; a charge made before is refunded.
    cancelled   BOOLEAN NOT NULL DEFAULT false
);
