-- The orders service's replica of the catalogue (prices), fed by its reaction to
-- inventory events: orders are priced from here, with no synchronous call to inventory.
CREATE TABLE IF NOT EXISTS catalogue (
    product_id UUID PRIMARY KEY,
    price      BIGINT      NOT NULL,
    version    BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
