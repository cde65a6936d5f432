-- The payments service's replica of registered customers, fed by its reaction to
-- CustomerRegistered on customers.events (no synchronous call to the customers service).
CREATE TABLE IF NOT EXISTS known_customers (
    customer_id   UUID PRIMARY KEY,
    registered_at TIMESTAMPTZ NOT NULL
);
