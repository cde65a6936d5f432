-- The inventory service's private lookup table: one product per SKU. Written by the
-- append hook in the same transaction as ProductAdded, so a duplicate SKU aborts the
-- append (409) and no product can exist without its SKU row or the reverse.
CREATE TABLE IF NOT EXISTS product_skus (
    sku        TEXT PRIMARY KEY,
    product_id UUID NOT NULL UNIQUE
);

-- Stock per product, the consistency boundary of reservations: maintained by the append
-- hook in the same transaction as every stock event, locked (FOR UPDATE) by the
-- reservation reaction while it decides, and never below zero.
CREATE TABLE IF NOT EXISTS stock (
    product_id UUID PRIMARY KEY,
    available  BIGINT NOT NULL CHECK (available >= 0),
    reserved   BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold       BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0)
);
