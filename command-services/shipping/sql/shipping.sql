-- The shipping service's replica of customers' countries, fed by CustomerRegistered.
CREATE TABLE IF NOT EXISTS customer_countries (
    customer_id UUID PRIMARY KEY,
    country     TEXT NOT NULL
);

-- What scheduling an order's shipment waits for, from two topics in any relative order:
-- the order's customer (OrderPlaced) and confirmation (OrderConfirmed) from orders, and
-- the customer's country from customers. A row per order collects them; the shipment is
-- scheduled once all are in, unless the order was cancelled first.
CREATE TABLE IF NOT EXISTS shipment_requests (
    order_id    UUID PRIMARY KEY,
    customer_id UUID,
    confirmed   BOOLEAN NOT NULL DEFAULT false,
    cancelled   BOOLEAN NOT NULL DEFAULT false,
    scheduled   BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS shipment_requests_waiting ON shipment_requests (customer_id)
    WHERE confirmed AND NOT cancelled AND NOT scheduled;
