-- The inventory service's private lookup table: one product per SKU. Written by the
-- append hook in the same transaction as ProductAdded, so a duplicate SKU aborts the
-- append (409) and no product can exist without its SKU row or the reverse.
CREATE TABLE IF NOT EXISTS product_skus (
    sku        TEXT PRIMARY KEY,
    product_id UUID NOT NULL UNIQUE
);
